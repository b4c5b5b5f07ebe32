"""The `tf` pose source: the robot pose at the image stamp from TF (tf2_ros).

tf2_ros is not on PyPI, so this module is imported only when `pose_source` is `tf` (node.py
imports it lazily); everything else about poses is in vpr_ros.ros.pose_sources.
`lookup_transform` at the image stamp interpolates between the transforms around it, and waits
up to `tf_timeout` for the one after it (TF usually lags the camera by a few milliseconds).
"""
from typing import Optional

from rclpy.duration import Duration
from rclpy.time import Time
from tf2_ros import TransformException
from tf2_ros.buffer import Buffer
from tf2_ros.transform_listener import TransformListener

from vpr_ros.mapping.records import Pose
from vpr_ros.ros.conversions import transform_to_pose
from vpr_ros.ros.parameters import NodeSettings
from vpr_ros.ros.pose_sources import tf_frames

LOG_THROTTLE_S = 5.0


class TfPoses:
    """Subscribes to /tf and /tf_static (once a mode needs a pose) and looks poses up there."""

    def __init__(self, node, settings: NodeSettings):
        self._node = node
        self._settings = settings
        self._buffer = Buffer()
        self._listener = None

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def prepare(self, mode: str) -> None:
        """Start listening to TF the first time a mode needs a pose (tf_frames is not None)."""
        if self._listener is None and tf_frames(self._settings, mode) is not None:
            self._listener = TransformListener(self._buffer, self._node)

    def pose_at(self, stamp, mode: str) -> Optional[Pose]:
        """base_frame in the mode's frame at `stamp` (builtin_interfaces/Time), or None."""
        frames = tf_frames(self._settings, mode)
        if frames is None or self._listener is None:
            return None
        try:
            transform = self._buffer.lookup_transform(
                frames.parent, frames.child, Time.from_msg(stamp),
                timeout=Duration(seconds=frames.timeout_s))
        except TransformException as err:
            without = "keyframe stored" if mode == "mapping" else "frame matched"
            self._node.get_logger().warning(
                f"no {frames.parent}->{frames.child} transform at the image stamp, {without} "
                f"without pose: {err}", throttle_duration_sec=LOG_THROTTLE_S)
            return None
        return transform_to_pose(transform)
