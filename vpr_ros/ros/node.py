"""`vpr_node`: relocalization and loop-closure candidates for a camera stream (rclpy).

Threading: the subscription callback only stores the newest message in a one-slot
LatestOnlyBuffer; a dedicated worker thread takes it, decodes it, looks up the robot pose in TF
(only for a usable frame, only in the modes that need one), runs the engine and publishes. The
node spins in a MultiThreadedExecutor; `~/save_map` has its own mutually exclusive callback
group, so a long save occupies one executor thread while subscriptions, TF, timers and the other
services go on. `~/reset` and mode changes never wait for the engine: FrameProcessor applies
them before the next frame.

`mode` is the one place the mode lives: a writable parameter, validated in the set-parameters
callback, which `~/set_mapping_mode` also sets.

Everything that is not a ROS call lives in ROS-free modules of this package (parameters,
processor, covariance, diagnostics, conversions) and is unit tested without rclpy.
"""
import sys
import threading
import time

import rclpy
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool, Trigger
from tf2_ros import TransformException
from tf2_ros.buffer import Buffer
from tf2_ros.transform_listener import TransformListener

from vpr_ros.io.messages import rgb_to_image_msg, stamp_to_seconds
from vpr_ros.ros.conversions import (fill_diagnostic_status, fill_pose_with_covariance,
                                     transform_to_pose)
from vpr_ros.ros.diagnostics import NodeStatistics
from vpr_ros.ros.engine_setup import build_engine
from vpr_ros.ros.latest_buffer import LatestOnlyBuffer
from vpr_ros.ros.parameters import (RUNTIME_PARAMETERS, ParameterSpec, check_runtime_update,
                                    parameter_specs, settings_from_parameters)
from vpr_ros.ros.processor import FrameProcessor, pose_source

NODE_NAME = "vpr_node"
EVENT_QUEUE_DEPTH = 100
WORKER_JOIN_TIMEOUT_S = 10.0
LOG_THROTTLE_S = 5.0
EXECUTOR_THREADS = 3
"""A map save, the default callback group (images, timer, services) and TF, side by side."""


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


class VprNode(Node):
    """Subscribes to camera images, publishes relocalizations, loop-closure events, diagnostics."""

    def __init__(self, **node_options):
        """`node_options` go to rclpy's Node (e.g. parameter_overrides, context)."""
        super().__init__(NODE_NAME, **node_options)
        specs = parameter_specs()
        for spec in specs:
            self.declare_parameter(spec.name, spec.default, parameter_descriptor(spec))
        self.settings, engine_config = settings_from_parameters(
            {spec.name: self.get_parameter(spec.name).value for spec in specs})
        engine = build_engine(self.settings, engine_config)
        self._stats = NodeStatistics(started_at=time.monotonic())
        topic, msg_type = (("image/compressed", CompressedImage) if self.settings.use_compressed
                           else ("image", Image))
        self._processor = FrameProcessor(engine, self.settings, self._stats, source_name=topic)
        self._buffer = LatestOnlyBuffer()

        self._tf_buffer = Buffer()
        self._tf_listener = None
        self._ensure_tf_listener(self._processor.mode)
        self._relocalization_pub = self.create_publisher(
            PoseWithCovarianceStamped, "~/relocalization", 10)
        self._events_pub = self.create_publisher(String, "~/loop_closures", EVENT_QUEUE_DEPTH)
        self._match_image_pub = self.create_publisher(Image, "~/match_image", 1)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/save_map", self._on_save_map,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SetBool, "~/set_mapping_mode", self._on_set_mapping_mode)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(self.settings.diagnostics_period, self._publish_diagnostics)
        self._subscription = self.create_subscription(
            msg_type, topic, self._on_image, qos_profile_sensor_data)

        self._worker = threading.Thread(target=self._work, name="vpr_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"{self._processor.mode} mode, {self._processor.map_size} keyframes, listening on "
            f"{topic} ({msg_type.__name__}, sensor-data QoS)")

    def _ensure_tf_listener(self, mode: str) -> None:
        """Subscribe to /tf and /tf_static the first time a mode needs a robot pose."""
        if self._tf_listener is None and pose_source(self.settings, mode) is not None:
            self._tf_listener = TransformListener(self._tf_buffer, self)

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
                    msg, index, received_at,
                    lookup_pose=lambda mode: self._robot_pose(msg.header.stamp, mode))
                if outcome.error:
                    self.get_logger().warning(f"frame {index} rejected: {outcome.error}",
                                              throttle_duration_sec=LOG_THROTTLE_S)
                self._publish(msg, outcome)
            except Exception as err:  # the worker must outlive any one frame (or a publish at shutdown)
                self._stats.record_failed(f"{type(err).__name__}: {err}")
                self.get_logger().error(f"frame {index} not handled: {type(err).__name__}: {err}",
                                        throttle_duration_sec=LOG_THROTTLE_S)

    def _robot_pose(self, stamp, mode: str):
        """base_frame in the mode's fixed frame at the image stamp (see pose_source), or None."""
        source = pose_source(self.settings, mode)
        if source is None:
            return None
        try:
            transform = self._tf_buffer.lookup_transform(
                source.parent_frame, self.settings.base_frame, Time.from_msg(stamp),
                timeout=Duration(seconds=source.timeout_s))
        except TransformException as err:
            without = "keyframe stored" if mode == "mapping" else "frame matched"
            self.get_logger().warning(
                f"no {source.parent_frame}->{self.settings.base_frame} transform at the image "
                f"stamp, {without} without pose: {err}", throttle_duration_sec=LOG_THROTTLE_S)
            return None
        return transform_to_pose(transform)

    def _publish(self, msg, outcome) -> None:
        self._events_pub.publish(String(data=outcome.event_json))
        if outcome.relocalization is not None:
            pose_msg = PoseWithCovarianceStamped()
            fill_pose_with_covariance(pose_msg, msg.header.stamp, self.settings.map_frame,
                                      outcome.relocalization.pose, outcome.relocalization.covariance)
            self._relocalization_pub.publish(pose_msg)
        if self.settings.publish_match_image and self._match_image_pub.get_subscription_count() > 0:
            picture = self._processor.match_image(outcome)
            if picture is not None:
                self._match_image_pub.publish(rgb_to_image_msg(
                    picture, Image, "rgb8", stamp_to_seconds(msg.header.stamp),
                    str(msg.header.frame_id)))

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

    def _on_save_map(self, request, response):
        try:
            count = self._processor.save_map(self.settings.map_path)
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"map not saved: {err}"
        else:
            response.success = True
            response.message = f"saved {count} keyframes to {self.settings.map_path}"
        return response

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
            if parameter.name == "mode" and parameter.value != self._processor.mode:
                self._ensure_tf_listener(parameter.value)
                self._processor.set_mode(parameter.value)
                self.get_logger().info(f"{parameter.value} mode from the next frame")
        return SetParametersResult(successful=True)

    def shutdown(self) -> None:
        """Stop the worker after its current frame, then save the map if configured and grown."""
        self._buffer.close()
        self._worker.join(timeout=WORKER_JOIN_TIMEOUT_S)
        if self.settings.save_map_on_shutdown and self._stats.keyframes_added:
            try:
                count = self._processor.save_map(self.settings.map_path)
                self.get_logger().info(f"saved {count} keyframes to {self.settings.map_path}")
            except (OSError, ValueError) as err:
                self.get_logger().error(f"map not saved on shutdown: {err}")


def main(args=None) -> int:
    """Run the node (console script `vpr_node`, via vpr_ros.ros.entry); exit code 2 when the
    configuration cannot be used."""
    rclpy.init(args=args)
    node = None
    executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
    try:
        node = VprNode()
        executor.add_node(node)
        executor.spin()
    except (FileNotFoundError, ValueError, ParameterException) as err:
        # bad parameters (rclpy refuses e.g. an integer for a double), missing model or map
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


if __name__ == "__main__":
    sys.exit(main())
