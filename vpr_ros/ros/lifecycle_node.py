"""`vpr_lifecycle_node`: vpr_node as a managed (lifecycle) node, for launch systems that bring
nodes up in order (nav2_lifecycle_manager, launch_ros LifecycleNode).

- configure: read the parameters, load the model and the map, create publishers, services and
  timers (a bad configuration fails the transition with the reason in the log);
- activate: subscribe to images and start the worker;
- deactivate: unsubscribe and stop the worker (the map stays loaded);
- cleanup / shutdown: save what mapping added (save_map_on_shutdown), free the map and its
  writer lock.
rclpy.lifecycle exists in Humble and Jazzy.
"""
import sys

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from vpr_ros.ros.node import CONFIGURATION_ERRORS, NODE_NAME, VprNodeBehaviour, run


class VprLifecycleNode(VprNodeBehaviour, LifecycleNode):
    """vpr_node whose configure/activate steps run on lifecycle transitions."""

    def __init__(self, embedder=None, pose_source=None, **node_options):
        LifecycleNode.__init__(self, NODE_NAME, **node_options)
        self._declare_parameters(embedder, pose_source)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except CONFIGURATION_ERRORS as err:
            self.get_logger().error(f"configure failed: {err}")
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Process exit without a shutdown transition (Ctrl-C): clean up all the same."""
        self._cleanup()


def main(args=None) -> int:
    """Run the lifecycle node (console script `vpr_lifecycle_node`)."""
    return run(VprLifecycleNode, args)


if __name__ == "__main__":
    sys.exit(main())
