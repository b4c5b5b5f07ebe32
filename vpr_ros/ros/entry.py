"""Console script `vpr_node`: start the node, or say in one line that ROS 2 is not sourced.

node.py imports rclpy and the message packages at module level; outside a ROS 2 environment
that import fails, and a traceback would hide the one thing to do.
"""
import sys


def is_ros_module(name: str) -> bool:
    """Whether module `name` comes from a ROS 2 installation (rclpy, tf2_ros, message packages)."""
    top = name.split(".")[0]
    return top in ("rclpy", "tf2_ros", "rcl_interfaces", "builtin_interfaces") or \
        top.endswith(("_msgs", "_srvs", "_interfaces"))


def main(args=None) -> int:
    """Run vpr_node; exit code 1 with one line on stderr when ROS 2 cannot be imported."""
    try:
        from vpr_ros.ros.node import main as node_main
    except ModuleNotFoundError as err:
        if not err.name or not is_ros_module(err.name):
            raise
        print(f"vpr_node: ROS 2 Python module '{err.name}' not found; source a ROS 2 setup first "
              f"(e.g. source /opt/ros/humble/setup.bash, then your workspace's "
              f"install/setup.bash)", file=sys.stderr)
        return 1
    return node_main(args)


if __name__ == "__main__":
    sys.exit(main())
