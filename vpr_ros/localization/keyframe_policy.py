"""Mapping mode: when a frame becomes a new keyframe."""
import math
from typing import Optional, Tuple

from vpr_ros.mapping.records import Pose


class KeyframePolicy:
    """Add a keyframe when the frame is novel (best score against the map below the novelty
    threshold), or when `interval_s` seconds or `distance_m` metres (needs poses) passed since the
    last keyframe this policy added. A zero interval or distance disables that trigger."""

    def __init__(self, novelty_threshold: float, interval_s: float, distance_m: float):
        self.novelty_threshold = novelty_threshold
        self.interval_s = interval_s
        self.distance_m = distance_m
        self._last_stamp: Optional[float] = None
        self._last_position: Optional[Tuple[float, float, float]] = None

    def reset(self) -> None:
        self._last_stamp = None
        self._last_position = None

    def reason_to_add(self, stamp: float, pose: Optional[Pose], best_score: Optional[float]) -> Optional[str]:
        """Why this frame should be added ("novel", "interval", "distance"), or None."""
        if best_score is None or best_score < self.novelty_threshold:
            return "novel"
        if self.interval_s and (self._last_stamp is None or stamp - self._last_stamp >= self.interval_s):
            return "interval"
        if self.distance_m and pose is not None and (
                self._last_position is None or math.dist(pose[:3], self._last_position) >= self.distance_m):
            return "distance"
        return None

    def added(self, stamp: float, pose: Optional[Pose]) -> None:
        self._last_stamp = stamp
        if pose is not None:
            self._last_position = tuple(pose[:3])
