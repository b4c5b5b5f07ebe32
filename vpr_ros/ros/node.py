"""`vpr_node`: relocalization and loop-closure candidates for a camera stream (rclpy).

Threading: the subscription callback only stores the newest message in a one-slot
LatestOnlyBuffer; a dedicated worker thread takes it, decodes it, asks the pose source for the
robot pose (only for a usable frame, only in the modes that need one), runs the engine and
publishes. The node spins in a MultiThreadedExecutor; map saves (`~/save_map`, the autosave
timer) share one mutually exclusive callback group, so a long save occupies one executor
thread while subscriptions, TF, timers and the other services go on. `~/reset` and mode changes
never wait for the engine: FrameProcessor applies them before the next frame.

`VprNodeBehaviour` holds everything the node does in three steps, configure (parameters, model,
map, publishers, services), activate (image subscription, worker) and deactivate; `VprNode`
runs them all at construction, the lifecycle node (vpr_ros.ros.lifecycle_node) on its
transitions.

`mode` is the one place the mode lives: a writable parameter, validated in the set-parameters
callback, which `~/set_mapping_mode` also sets. In mapping mode the node holds the map's writer
lock (vpr_ros.mapping.lock), so a second writer is refused instead of overwriting keyframes.

Everything that is not a ROS call lives in ROS-free modules of this package (parameters,
processor, pose sources, relocalization gate, covariance, diagnostics, conversions) and is unit
tested without rclpy.
"""
import sys
import threading
import time
from typing import Optional

import rclpy
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool, Trigger
from vpr_ros_interfaces.msg import LoopClosure
from vpr_ros_interfaces.srv import SaveMap

from vpr_ros.io.messages import rgb_to_image_msg, stamp_to_seconds
from vpr_ros.mapping.lock import MapLockedError, MapWriterLock
from vpr_ros.ros.conversions import fill_diagnostic_status, fill_loop_closure
from vpr_ros.ros.diagnostics import NodeStatistics
from vpr_ros.ros.engine_setup import build_engine
from vpr_ros.ros.latest_buffer import LatestOnlyBuffer
from vpr_ros.ros.parameters import (RUNTIME_PARAMETERS, ParameterSpec, check_runtime_update,
                                    parameter_specs, settings_from_parameters)
from vpr_ros.ros.pose_sources import OdometryPoses, odometry_pose
from vpr_ros.ros.processor import FrameProcessor
from vpr_ros.ros.relocalization_gate import RelocalizationGate

NODE_NAME = "vpr_node"
EVENT_QUEUE_DEPTH = 100
WORKER_JOIN_TIMEOUT_S = 10.0
LOG_THROTTLE_S = 5.0
EXECUTOR_THREADS = 3
"""A map save, the default callback group (images, timer, services) and TF, side by side."""
CONFIGURATION_ERRORS = (FileNotFoundError, ValueError, ParameterException, MapLockedError)
"""What a bad configuration raises (parameters, missing model or map, a map another process
writes): one log line, not a traceback."""


def parameter_descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """Description, range or choices of one parameter; read-only unless it is a runtime one."""
    descriptor = ParameterDescriptor(description=spec.description,
                                     read_only=spec.name not in RUNTIME_PARAMETERS)
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.minimum is not None and spec.type_name == "integer":
        descriptor.integer_range = [IntegerRange(
            from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
    elif spec.minimum is not None:
        descriptor.floating_point_range = [FloatingPointRange(
            from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
    return descriptor


class VprNodeBehaviour:
    """What vpr_node does, on top of an rclpy Node (plain or lifecycle): mixed in first."""

    def _declare_parameters(self, embedder=None, pose_source=None) -> None:
        """Declare every parameter; `embedder` and `pose_source` replace the model and the
        pose source the parameters name (tests inject them)."""
        for spec in parameter_specs():
            self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
        self._injected_embedder = embedder
        self._injected_pose_source = pose_source
        self._processor: Optional[FrameProcessor] = None
        self._subscription = None
        self._worker: Optional[threading.Thread] = None
        self._map_lock: Optional[MapWriterLock] = None
        self._entities = []
        self.add_on_set_parameters_callback(self._on_set_parameters)

    # --- configure / activate / deactivate / clean up ------------------------------------

    def _configure(self) -> None:
        """Read the parameters, load model and map, create publishers, services and timers."""
        specs = parameter_specs()
        self.settings, engine_config = settings_from_parameters(
            {spec.name: self.get_parameter(spec.name).value for spec in specs})
        self._map_lock = MapWriterLock(self.settings.map_path) if self.settings.map_path else None
        if engine_config.mode == "mapping" and self._map_lock is not None:
            self._map_lock.acquire()
        engine = build_engine(self.settings, engine_config, self._injected_embedder)
        self._stats = NodeStatistics(started_at=time.monotonic())
        self._topic, self._msg_type = (("image/compressed", CompressedImage)
                                       if self.settings.use_compressed else ("image", Image))
        self._processor = FrameProcessor(engine, self.settings, self._stats, self._topic)
        self._buffer = LatestOnlyBuffer()
        self._gate = RelocalizationGate(self.settings)
        self._entities = []
        self._pose_source = self._make_pose_source()
        self._prepare_pose_source(self._processor.mode)

        saves = MutuallyExclusiveCallbackGroup()
        self._relocalization_pub = self.create_publisher(
            PoseWithCovarianceStamped, "~/relocalization", 10)
        self._loop_closures_pub = self.create_publisher(
            LoopClosure, "~/loop_closures", EVENT_QUEUE_DEPTH)
        self._match_image_pub = self.create_publisher(Image, "~/match_image", 1)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._entities += [
            self._relocalization_pub, self._loop_closures_pub, self._match_image_pub,
            self._diagnostics_pub,
            self.create_service(SaveMap, "~/save_map", self._on_save_map, callback_group=saves),
            self.create_service(Trigger, "~/reset", self._on_reset),
            self.create_service(SetBool, "~/set_mapping_mode", self._on_set_mapping_mode),
            self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics),
        ]
        if self.settings.autosave_interval > 0:
            self._entities.append(self.create_timer(self.settings.autosave_interval,
                                                    self._autosave, callback_group=saves))
        if self.settings.relocalization_gate == "lost_or_disagreeing":
            current_type = (Odometry if self.settings.current_pose_type == "Odometry"
                            else PoseWithCovarianceStamped)
            self._entities.append(self.create_subscription(
                current_type, "current_pose", self._on_current_pose, 10))
        self.get_logger().info(
            f"{self._processor.mode} mode, {self._processor.map_size} keyframes, "
            f"{self.settings.pose_source} poses")

    def _make_pose_source(self):
        """The injected pose source, or the one the `pose_source` parameter names."""
        if self._injected_pose_source is not None:
            return self._injected_pose_source
        if self.settings.pose_source == "odometry":
            odometry = OdometryPoses(self.settings.tf_timeout)
            self._entities.append(self.create_subscription(Odometry, "odom", odometry.add, 50))
            return odometry
        if self.settings.pose_source == "tf":
            from vpr_ros.ros.tf_poses import TfPoses  # tf2_ros: only where ROS 2 has it
            return TfPoses(self, self.settings)
        return None

    def _prepare_pose_source(self, mode: str) -> None:
        """Let the pose source subscribe to what `mode` needs (TF starts listening lazily)."""
        prepare = getattr(self._pose_source, "prepare", None)
        if prepare is not None:
            prepare(mode)

    def _activate(self) -> None:
        """Subscribe to images and start the worker."""
        self._buffer = LatestOnlyBuffer()
        self._subscription = self.create_subscription(
            self._msg_type, self._topic, self._on_image, qos_profile_sensor_data)
        self._worker = threading.Thread(target=self._work, name="vpr_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"listening on {self._subscription.topic_name} "
                               f"({self._msg_type.__name__}, sensor-data QoS)")

    def _deactivate(self) -> None:
        """Unsubscribe from images and stop the worker after its current frame."""
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        if self._worker is not None:
            self._buffer.close()
            self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
            self._worker = None

    def _cleanup(self) -> None:
        """Save what mapping added (save_map_on_shutdown), free the map and its writer lock."""
        self._deactivate()
        if self._processor is not None and self.settings.save_map_on_shutdown \
                and self._processor.has_unsaved_keyframes:
            try:
                count = self._processor.save_map(self.settings.map_path)
                self._log_at_exit(f"saved {count} keyframes to {self.settings.map_path}")
            except (OSError, ValueError) as err:
                self._log_at_exit(f"map not saved on shutdown: {err}", error=True)
        for entity in self._entities:
            self._destroy(entity)
        self._entities = []
        self._processor = None
        if self._map_lock is not None:
            self._map_lock.release()

    def _log_at_exit(self, message: str, error: bool = False) -> None:
        """Log through the node while its context lives; after Ctrl-C (rclpy has shut the
        context down) to stderr, as the node logger's /rosout publisher would fail."""
        if self.context.ok():
            logger = self.get_logger()
            (logger.error if error else logger.info)(message)
        else:
            print(f"[{'ERROR' if error else 'INFO'}] [{self.get_name()}]: {message}",
                  file=sys.stderr)

    def _destroy(self, entity) -> None:
        for kind in ("publisher", "service", "timer", "subscription"):
            if type(entity).__name__.lower().endswith(kind):
                getattr(self, f"destroy_{kind}")(entity)
                return

    # --- frames ----------------------------------------------------------------------------

    def _on_image(self, msg) -> None:
        """Subscription callback: hand the newest message to the worker, nothing else."""
        now = time.monotonic()
        self._stats.record_received(now)
        self._buffer.put((msg, self._buffer.received, now))

    def _work(self) -> None:
        while True:
            item = self._buffer.take()
            if item is None:
                return
            msg, index, received_at = item
            try:
                outcome = self._processor.process(
                    msg, index, received_at, lookup_pose=lambda mode: self._robot_pose(msg, mode))
                if outcome.error:
                    self.get_logger().warning(f"frame {index} rejected: {outcome.error}",
                                              throttle_duration_sec=LOG_THROTTLE_S)
                if self.context.ok():   # after Ctrl-C the context is gone; nothing to publish to
                    self._publish(msg, outcome)
            except Exception as err:  # the worker must outlive any one frame
                if not self.context.ok():
                    return
                self._stats.record_failed(f"{type(err).__name__}: {err}")
                self.get_logger().error(f"frame {index} not handled: {type(err).__name__}: {err}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def _robot_pose(self, msg, mode: str):
        """The pose source's pose at the image stamp, or None (no pose source)."""
        if self._pose_source is None:
            return None
        return self._pose_source.pose_at(msg.header.stamp, mode)

    def _publish(self, msg, outcome) -> None:
        loop_closure = LoopClosure()
        relocalization = outcome.relocalization
        fill_loop_closure(loop_closure, outcome.decision, stamp=msg.header.stamp,
                          decision_mode=self._processor.decision_mode,
                          map_frame=self.settings.map_frame, keyframe_pose=outcome.keyframe_pose,
                          covariance=relocalization.covariance if relocalization else None)
        self._loop_closures_pub.publish(loop_closure)
        if relocalization is not None:
            publish, why = self._gate.decide(relocalization.pose, time.monotonic())
            if publish:
                self._relocalization_pub.publish(loop_closure.pose)
            self.get_logger().debug(f"relocalization {'published' if publish else 'held'}: {why}")
        if self.settings.publish_match_image and self._match_image_pub.get_subscription_count() > 0:
            picture = self._processor.match_image(outcome)
            if picture is not None:
                self._match_image_pub.publish(rgb_to_image_msg(
                    picture, Image, "rgb8", stamp_to_seconds(msg.header.stamp),
                    str(msg.header.frame_id)))

    def _on_current_pose(self, msg) -> None:
        """The localizer's estimate, for the lost_or_disagreeing gate (map_frame only)."""
        if msg.header.frame_id.lstrip("/") != self.settings.map_frame:
            self.get_logger().warning(
                f"current_pose is in frame '{msg.header.frame_id}', not map_frame "
                f"'{self.settings.map_frame}'; ignored", throttle_duration_sec=LOG_THROTTLE_S)
            return
        self._gate.update_current(odometry_pose(msg), msg.pose.covariance, time.monotonic())

    def _publish_diagnostics(self) -> None:
        report = self._stats.report(
            time.monotonic(), dropped=self._buffer.dropped, map_size=self._processor.map_size,
            mode=self._processor.mode, no_image_warn_after=self.settings.no_image_warn_after)
        status = DiagnosticStatus()
        node_path = f"{self.get_namespace().rstrip('/')}/{self.get_name()}"
        fill_diagnostic_status(status, KeyValue, report, f"{node_path}: place recognition",
                               hardware_id=node_path)
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [status]
        self._diagnostics_pub.publish(array)

    # --- services and parameters -----------------------------------------------------------

    def _on_save_map(self, request, response):
        response.path = self.settings.map_path
        try:
            response.keyframes = self._processor.save_map(self.settings.map_path)
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"map not saved: {err}"
        else:
            response.success = True
            response.message = f"saved {response.keyframes} keyframes to {response.path}"
        return response

    def _autosave(self) -> None:
        """Timer: save the map when it grew since the last save (bounds what a crash loses)."""
        if not self._processor.has_unsaved_keyframes:
            return
        try:
            count = self._processor.save_map(self.settings.map_path)
        except (OSError, ValueError) as err:
            self.get_logger().error(f"autosave failed: {err}", throttle_duration_sec=60.0)
        else:
            self.get_logger().info(f"autosaved {count} keyframes to {self.settings.map_path}")

    def _on_reset(self, request, response):
        self._processor.reset()
        response.success = True
        response.message = "tracking state cleared before the next frame; the map is unchanged"
        return response

    def _on_set_mapping_mode(self, request, response):
        mode = "mapping" if request.data else "localization"
        result = self.set_parameters([Parameter("mode", value=mode)])[0]
        response.success = result.successful
        response.message = f"{mode} mode" if result.successful else result.reason
        return response

    def _on_set_parameters(self, parameters):
        """Validate runtime parameter changes (only `mode`) and apply them."""
        for parameter in parameters:
            problem = check_runtime_update(parameter.name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        for parameter in parameters:
            if parameter.name != "mode" or self._processor is None \
                    or parameter.value == self._processor.mode:
                continue
            if parameter.value == "mapping" and self._map_lock is not None:
                try:
                    self._map_lock.acquire()
                except MapLockedError as err:
                    return SetParametersResult(successful=False, reason=str(err))
            self._prepare_pose_source(parameter.value)
            self._processor.set_mode(parameter.value)
            self.get_logger().info(f"{parameter.value} mode from the next frame")
        return SetParametersResult(successful=True)


class VprNode(VprNodeBehaviour, Node):
    """Subscribes to camera images, publishes loop closures, relocalizations and diagnostics."""

    def __init__(self, embedder=None, pose_source=None, **node_options):
        """`node_options` go to rclpy's Node (e.g. parameter_overrides, context); `embedder`
        and `pose_source` replace what the parameters name (tests)."""
        Node.__init__(self, NODE_NAME, **node_options)
        self._declare_parameters(embedder, pose_source)
        self._configure()
        self._activate()

    def shutdown(self) -> None:
        """Stop the worker after its current frame, then save the map if configured and grown."""
        self._cleanup()


def run(node_factory, args=None) -> int:
    """Init rclpy, spin the node `node_factory()` makes until Ctrl-C, shut it down; exit code 2
    when the configuration cannot be used."""
    rclpy.init(args=args)
    node = None
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    try:
        node = node_factory()
        executor.add_node(node)
        executor.spin()
    except CONFIGURATION_ERRORS as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(err))
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(args=None) -> int:
    """Run the plain node (console script `vpr_node`, via vpr_ros.ros.entry)."""
    return run(VprNode, args)


if __name__ == "__main__":
    sys.exit(main())
