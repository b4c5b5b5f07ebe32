"""Where the robot pose that goes with a camera frame comes from (ROS-free parts).

The node hands each usable frame to the engine with the robot pose at the image stamp:
- mapping mode: the pose stored with a new keyframe, in the map's frame;
- localization mode: odometry, of which sequence matching only uses displacements.

A pose source answers `pose_at(stamp, mode)` (stamp: builtin_interfaces/Time) with a pose
(x, y, z, qx, qy, qz, qw) or None. Three exist, chosen by the `pose_source` parameter:
- `tf`: vpr_ros.ros.tf_poses (imports tf2_ros, so only where ROS 2 has it), frames from
  `tf_frames`;
- `odometry`: `OdometryPoses` below, fed by the node's nav_msgs/Odometry subscription;
- `none`: no pose.
Tests inject their own (anything with `pose_at`).
"""
import threading
from collections import deque
from typing import Deque, NamedTuple, Optional, Tuple

from vpr_ros.io.messages import stamp_to_seconds
from vpr_ros.io.trajectory import Trajectory
from vpr_ros.mapping.records import Pose
from vpr_ros.ros.parameters import NodeSettings

ODOMETRY_HORIZON_S = 10.0
"""Odometry older than this (relative to the newest message) is forgotten."""
ODOMETRY_MAX_GAP_S = 1.0
"""An image between two odometry messages further apart than this gets no pose."""


class TfFrames(NamedTuple):
    """A TF look-up: the pose of `child` in `parent`, waiting up to `timeout_s` for it."""

    parent: str
    child: str
    timeout_s: float


def tf_frames(settings: NodeSettings, mode: str) -> Optional[TfFrames]:
    """Mapping: map_frame -> base_frame; localization: odom_frame -> base_frame, or None when
    odom_frame is empty (no odometry on TF)."""
    if mode == "mapping":
        return TfFrames(settings.map_frame, settings.base_frame, settings.tf_timeout)
    if settings.odom_frame:
        return TfFrames(settings.odom_frame, settings.base_frame, settings.tf_timeout)
    return None


def odometry_pose(msg) -> Pose:
    """The pose of a nav_msgs/Odometry (or anything with `.pose.pose`) as a 7-tuple."""
    position, orientation = msg.pose.pose.position, msg.pose.pose.orientation
    return (float(position.x), float(position.y), float(position.z), float(orientation.x),
            float(orientation.y), float(orientation.z), float(orientation.w))


class OdometryPoses:
    """Recent odometry messages; the pose at an image stamp, interpolated between the messages
    just before and after it (linear position, slerp rotation: vpr_ros.io.trajectory).

    Odometry usually lags the camera by a few milliseconds, so `pose_at` waits up to
    `timeout_s` for a message after the stamp. Thread-safe: the subscription adds, the worker
    asks.
    """

    def __init__(self, timeout_s: float, horizon_s: float = ODOMETRY_HORIZON_S,
                 max_gap_s: float = ODOMETRY_MAX_GAP_S):
        self._timeout_s = timeout_s
        self._horizon_s = horizon_s
        self._max_gap_s = max_gap_s
        self._samples: Deque[Tuple[float, Pose]] = deque()
        self._condition = threading.Condition()
        self.frame_id = ""

    def add(self, msg) -> None:
        """Store one nav_msgs/Odometry; messages older than the newest one are dropped."""
        stamp = stamp_to_seconds(msg.header.stamp)
        with self._condition:
            if self._samples and stamp <= self._samples[-1][0]:
                return
            self._samples.append((stamp, odometry_pose(msg)))
            self.frame_id = str(msg.header.frame_id)
            while stamp - self._samples[0][0] > self._horizon_s:
                self._samples.popleft()
            self._condition.notify_all()

    def pose_at(self, stamp, mode: str) -> Optional[Pose]:
        """The odometry pose at `stamp` (builtin_interfaces/Time), or None when the messages do
        not bracket it (none yet, too old, a gap over max_gap_s, or none after it in time)."""
        seconds = stamp_to_seconds(stamp)
        with self._condition:
            self._condition.wait_for(lambda: bool(self._samples) and self._samples[-1][0] >= seconds,
                                     timeout=self._timeout_s)
            samples = list(self._samples)
        if not samples:
            return None
        stamps, poses = zip(*samples)
        trajectory = Trajectory.from_samples(stamps, poses, source="odometry")
        return trajectory.pose_at(seconds, self._max_gap_s)
