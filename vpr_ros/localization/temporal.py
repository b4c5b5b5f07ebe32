"""Temporal consistency: accept a match only after consecutive frames agree on one stretch of map.

Like ORB-SLAM's consistency groups: every frame's above-threshold candidates extend the chains of
the previous frame's candidates they are coherent with (same session, keyframe stamps within the
distance a robot can travel along the map in the elapsed time, either direction). A candidate's
count is the length of the longest chain it ends; a match is accepted when it reaches the required
count. A frame without candidates, or a gap in time, breaks every chain.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence

from vpr_ros.localization.decision import Candidate


@dataclass(frozen=True)
class _Chain:
    session: str
    map_stamp: float
    count: int


class TemporalConsistency:
    """Tracks chains of coherent matches across consecutive frames."""

    def __init__(self, max_jump_s: float = 3.0, speed_ratio: float = 3.0, max_gap_s: float = 5.0):
        self.max_jump_s = max_jump_s
        self.speed_ratio = speed_ratio
        self.max_gap_s = max_gap_s
        self._chains: List[_Chain] = []
        self._last_stamp: Optional[float] = None

    def reset(self) -> None:
        self._chains = []
        self._last_stamp = None

    def update(self, stamp: float, candidates: Sequence[Candidate]) -> List[int]:
        """Chain length ending at each candidate of the frame at `stamp` (1 = no support yet)."""
        step = None if self._last_stamp is None else stamp - self._last_stamp
        if step is None or step < 0 or step > self.max_gap_s:
            self._chains = []
        tolerance = self.max_jump_s + self.speed_ratio * (step or 0.0)
        counts = []
        for cand in candidates:
            support = [chain.count for chain in self._chains if chain.session == cand.session
                       and abs(chain.map_stamp - cand.stamp) <= tolerance]
            counts.append(1 + max(support, default=0))
        self._chains = [_Chain(c.session, c.stamp, n) for c, n in zip(candidates, counts)]
        self._last_stamp = stamp
        return counts
