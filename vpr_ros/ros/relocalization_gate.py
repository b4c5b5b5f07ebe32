"""Which accepted relocalizations go out on ~/relocalization (ROS-free).

A localizer that takes the pose as `initialpose` (Nav2 AMCL, RTAB-Map) or `set_pose`
(robot_localization) re-initializes on every message, so at camera rate it would do nothing
else. Two rules thin the stream:
- `relocalization_min_interval`: at most one message per that many seconds;
- `relocalization_gate: lost_or_disagreeing`: publish only when the localizer's own estimate
  (the `current_pose` topic: amcl_pose, RTAB-Map's localization_pose, robot_localization's
  odometry/filtered) is missing, stale or uncertain (lost), or lies farther than
  `disagreement_distance` / turned more than `disagreement_yaw` from the relocalization.
"""
import math
from typing import Optional, Sequence, Tuple

import numpy as np

from vpr_ros.mapping.records import Pose
from vpr_ros.ros.parameters import NodeSettings


def yaw_of(pose: Sequence[float]) -> float:
    """Heading (rotation about z, radians) of a pose (x, y, z, qx, qy, qz, qw)."""
    x, y, z, w = (float(v) for v in pose[3:7])
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


class RelocalizationGate:
    """Decides per accepted relocalization whether to publish it; times are monotonic seconds."""

    def __init__(self, settings: NodeSettings):
        self._settings = settings
        self._last_published: Optional[float] = None
        self._current: Optional[Tuple[float, Pose, float]] = None

    def update_current(self, pose: Pose, covariance: Sequence[float], now: float) -> None:
        """Record the localizer's estimate (in map_frame) and its 36-float covariance."""
        variance = max(float(covariance[0]), float(covariance[7]), 0.0)
        self._current = (now, tuple(float(v) for v in pose), math.sqrt(variance))

    def decide(self, pose: Pose, now: float) -> Tuple[bool, str]:
        """(publish?, why): the reason names the rule that decided."""
        settings = self._settings
        if self._last_published is not None and \
                now - self._last_published < settings.relocalization_min_interval:
            return False, "within relocalization_min_interval of the last one"
        if settings.relocalization_gate == "lost_or_disagreeing":
            why = self._lost_or_disagreeing(pose, now)
            if why is None:
                return False, "the localizer's current pose agrees"
        else:
            why = "relocalization_gate always"
        self._last_published = now
        return True, why

    def _lost_or_disagreeing(self, pose: Pose, now: float) -> Optional[str]:
        settings = self._settings
        if self._current is None:
            return "no current pose received (lost)"
        received, current, position_std = self._current
        if now - received > settings.lost_after:
            return f"current pose silent for {now - received:.1f} s (lost)"
        if position_std > settings.lost_position_std:
            return f"current pose uncertain: position std {position_std:.2f} m (lost)"
        distance = float(np.linalg.norm(np.subtract(pose[:3], current[:3])))
        if distance > settings.disagreement_distance:
            return f"{distance:.2f} m from the current pose (disagreeing)"
        yaw = abs(math.remainder(yaw_of(pose) - yaw_of(current), math.tau))
        if yaw > settings.disagreement_yaw:
            return f"{yaw:.2f} rad from the current heading (disagreeing)"
        return None
