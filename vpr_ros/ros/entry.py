"""Console scripts `vpr_node` and `vpr_lifecycle_node`: start the node, or say in one line that
ROS 2 is not sourced.

node.py imports rclpy and the message packages (vpr_ros_interfaces among them) at module level;
outside a ROS 2 environment that import fails, and a traceback would hide the one thing to do.
"""
import importlib
import sys


def is_ros_module(name: str) -> bool:
    """Whether module `name` comes from a ROS 2 installation (rclpy, tf2_ros, message packages)."""
    top = name.split(".")[0]
    return top in ("rclpy", "tf2_ros", "rcl_interfaces", "builtin_interfaces") or \
        top.endswith(("_msgs", "_srvs", "_interfaces"))


def _run(module: str, program: str, args) -> int:
    """Run `module`.main; exit code 1 with one line on stderr when ROS 2 cannot be imported."""
    try:
        node_main = importlib.import_module(module).main
    except ModuleNotFoundError as err:
        if not err.name or not is_ros_module(err.name):
            raise
        print(f"{program}: ROS 2 Python module '{err.name}' not found; source a ROS 2 setup first "
              f"(e.g. source /opt/ros/humble/setup.bash, then your workspace's "
              f"install/setup.bash, which has vpr_ros_interfaces)", file=sys.stderr)
        return 1
    return node_main(args)


def main(args=None) -> int:
    """Console script `vpr_node`: the plain node."""
    return _run("vpr_ros.ros.node", "vpr_node", args)


def lifecycle_main(args=None) -> int:
    """Console script `vpr_lifecycle_node`: the lifecycle node."""
    return _run("vpr_ros.ros.lifecycle_node", "vpr_lifecycle_node", args)


if __name__ == "__main__":
    sys.exit(main())
