"""Robot trajectories: timed poses, interpolated at frame stamps (linear position, slerp rotation).

Sources: TUM files (`timestamp tx ty tz qx qy qz qw`, the usual SLAM exchange format; this
module), rosbag2 pose topics and TF chains (`vpr_ros.io.rosbag_poses`). Image folders get
their stamps from a times file (`read_times`) or from their file order at a rate.
A frame whose stamp falls outside the trajectory, or between two poses further apart than
`max_gap_s`, gets no pose: it is kept (it can still match) and counted.
"""
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from vpr_ros.io import quaternion
from vpr_ros.io.frames import Frame

LOG = logging.getLogger(__name__)

QUATERNION_TOLERANCE = 0.01
"""Quaternions whose norm is within this of 1 are renormalized; others are refused."""

TUM_FIELDS = "timestamp tx ty tz qx qy qz qw"


@dataclass(frozen=True, eq=False)
class Trajectory:
    """Poses (N, 7: x y z qx qy qz qw) at strictly increasing `stamps` (N,) in seconds.

    `source` names where they came from (for messages); `frame_id` is the frame the poses are
    in (e.g. `map`), when known. Build one with `Trajectory.from_samples` to sort and check
    raw input; the constructor only accepts clean arrays.
    """

    stamps: np.ndarray
    poses: np.ndarray
    source: str = "trajectory"
    frame_id: str = ""

    def __post_init__(self):
        stamps, poses = self.stamps, self.poses
        if stamps.ndim != 1 or poses.shape != (len(stamps), 7) or not len(stamps):
            raise ValueError(f"{self.source}: a trajectory needs N >= 1 stamps and (N, 7) poses, "
                             f"got {stamps.shape} and {poses.shape}")
        if not (np.all(np.isfinite(stamps)) and np.all(np.isfinite(poses))):
            raise ValueError(f"{self.source}: stamps and poses must be finite")
        if np.any(np.diff(stamps) <= 0.0):
            raise ValueError(f"{self.source}: stamps must be strictly increasing")
        if np.any(np.abs(np.linalg.norm(poses[:, 3:], axis=1) - 1.0) > 1e-6):
            raise ValueError(f"{self.source}: quaternions must have unit norm")

    @classmethod
    def from_samples(cls, stamps: Sequence[float], poses: Sequence[Sequence[float]], source: str,
                     labels: Optional[Sequence[str]] = None, frame_id: str = "") -> "Trajectory":
        """Check, sort and clean raw samples; errors name the sample by its label (e.g. `line 7`).

        Quaternions are renormalized when their norm is within 1 % of 1 (files round them) and
        refused otherwise. Input out of time order is sorted, with a warning. Repeated stamps
        with the same pose are merged; with different poses they are an error.
        """
        stamps = np.asarray(stamps, dtype=np.float64).reshape(-1)
        poses = np.asarray(poses, dtype=np.float64).reshape(-1, 7)
        labels = list(labels) if labels is not None else [f"sample {i}" for i in range(len(stamps))]
        if not len(stamps):
            raise ValueError(f"{source}: no poses")
        bad = np.flatnonzero(~(np.isfinite(stamps) & np.all(np.isfinite(poses), axis=1)))
        if len(bad):
            raise ValueError(f"{source}, {labels[bad[0]]}: stamp and pose must be finite numbers")
        norms = np.linalg.norm(poses[:, 3:], axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > QUATERNION_TOLERANCE)
        if len(bad):
            raise ValueError(f"{source}, {labels[bad[0]]}: quaternion norm {norms[bad[0]]:.4f} is not 1; "
                             f"expected a unit quaternion in the order qx qy qz qw")
        poses = np.concatenate([poses[:, :3], poses[:, 3:] / norms[:, None]], axis=1)
        backwards = np.flatnonzero(np.diff(stamps) < 0.0)
        if len(backwards):
            LOG.warning("%s is not in time order (%s goes back in time, %d times in all); sorted it",
                        source, labels[backwards[0] + 1], len(backwards))
        order = np.argsort(stamps, kind="stable")
        stamps, poses, labels = stamps[order], poses[order], [labels[i] for i in order]
        repeated = np.flatnonzero(np.diff(stamps) == 0.0)
        keep = np.ones(len(stamps), dtype=bool)
        for i in repeated:
            if not np.allclose(poses[i], poses[i + 1], atol=1e-9):
                raise ValueError(f"{source}: {labels[i]} and {labels[i + 1]} give different poses "
                                 f"for the same stamp {stamps[i]:.9f}")
            keep[i + 1] = False
        return cls(stamps[keep], poses[keep], source, frame_id)

    def __len__(self) -> int:
        return len(self.stamps)

    def poses_at(self, stamps: Sequence[float], max_gap_s: float) -> np.ndarray:
        """Poses (M, 7) at `stamps`; rows of NaN where a stamp has no pose.

        A stamp gets a pose when it lies between two samples at most `max_gap_s` apart
        (position interpolated linearly, rotation by slerp) or equals a sample's stamp. No
        extrapolation: stamps before the first or after the last sample get none.
        """
        if not max_gap_s > 0.0:
            raise ValueError(f"max_gap_s must be positive, got {max_gap_s}")
        query = np.asarray(stamps, dtype=np.float64).reshape(-1)
        out = np.full((len(query), 7), np.nan)
        exact = np.searchsorted(self.stamps, query)
        hit = (exact < len(self.stamps)) & (self.stamps[np.minimum(exact, len(self.stamps) - 1)] == query)
        out[hit] = self.poses[exact[hit]]
        if len(self.stamps) < 2:
            return out
        lo = np.clip(np.searchsorted(self.stamps, query, side="right") - 1, 0, len(self.stamps) - 2)
        t0, t1 = self.stamps[lo], self.stamps[lo + 1]
        inside = ~hit & (query > t0) & (query < t1) & (t1 - t0 <= max_gap_s)
        lo, t0, t1 = lo[inside], t0[inside], t1[inside]
        fraction = (query[inside] - t0) / (t1 - t0)
        p0, p1 = self.poses[lo], self.poses[lo + 1]
        position = p0[:, :3] + fraction[:, None] * (p1[:, :3] - p0[:, :3])
        out[inside] = np.concatenate([position, quaternion.slerp(p0[:, 3:], p1[:, 3:], fraction)], axis=1)
        return out

    def pose_at(self, stamp: float, max_gap_s: float) -> Optional[Tuple[float, ...]]:
        """The pose at one stamp as a 7-tuple, or None (see `poses_at`)."""
        row = self.poses_at([stamp], max_gap_s)[0]
        return None if np.isnan(row[0]) else tuple(float(v) for v in row)


def _numbers_file(path: Union[str, Path], what: str) -> Iterator[Tuple[int, List[str]]]:
    """(line number, whitespace-split fields) of the non-blank, non-comment lines of a text file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                yield number, text.replace(",", " ").split()


def read_tum(path: Union[str, Path]) -> Trajectory:
    """A TUM trajectory file: `timestamp tx ty tz qx qy qz qw` per line, `#` comments.

    Fields may be separated by spaces, tabs or commas. A malformed line is an error naming the
    file and line number; lines out of time order are sorted (with a warning).
    """
    stamps, poses, labels = [], [], []
    for number, fields in _numbers_file(path, "trajectory file"):
        if len(fields) != 8:
            raise ValueError(f"{path}, line {number}: expected 8 numbers '{TUM_FIELDS}', "
                             f"got {len(fields)} field(s)")
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise ValueError(f"{path}, line {number}: not a number in {' '.join(fields)!r} "
                             f"(expected '{TUM_FIELDS}')") from None
        stamps.append(values[0])
        poses.append(values[1:])
        labels.append(f"line {number}")
    if not stamps:
        raise ValueError(f"trajectory file {path} has no poses (expected lines '{TUM_FIELDS}')")
    return Trajectory.from_samples(stamps, poses, str(path), labels)


def read_times(path: Union[str, Path]) -> np.ndarray:
    """Stamps (seconds) from a times file: one number per line, one line per image, `#` comments.

    Stamps must increase strictly (a frame is later than the one before it); an error names
    the line that does not.
    """
    stamps: List[float] = []
    previous_line = 0
    for number, fields in _numbers_file(path, "times file"):
        try:
            if len(fields) != 1:
                raise ValueError
            stamp = float(fields[0])
        except ValueError:
            raise ValueError(f"{path}, line {number}: expected one stamp in seconds, "
                             f"got {' '.join(fields)!r}") from None
        if not np.isfinite(stamp):
            raise ValueError(f"{path}, line {number}: stamp must be finite")
        if stamps and stamp <= stamps[-1]:
            raise ValueError(f"{path}, line {number}: stamp {stamp} is not after {stamps[-1]} "
                             f"(line {previous_line}); stamps must increase, one line per image in file order")
        stamps.append(stamp)
        previous_line = number
    if not stamps:
        raise ValueError(f"times file {path} has no stamps")
    return np.asarray(stamps, dtype=np.float64)


class PoseAttacher:
    """Gives frames their pose from a trajectory and counts those that get none."""

    def __init__(self, trajectory: Trajectory, max_gap_s: float):
        if not max_gap_s > 0.0:
            raise ValueError(f"the maximum pose gap must be positive, got {max_gap_s} s")
        self.trajectory = trajectory
        self.max_gap_s = max_gap_s
        self.with_pose = 0
        self.without_pose = 0

    def attach(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        """The frames, each with `pose` set from the trajectory (None where it has none)."""
        for frame in frames:
            pose = self.trajectory.pose_at(frame.stamp, self.max_gap_s)
            if pose is None:
                self.without_pose += 1
            else:
                self.with_pose += 1
            yield dataclasses.replace(frame, pose=pose)

    def summary(self) -> str:
        """One line: how many frames got a pose, and how many were kept without one."""
        t = self.trajectory
        return (f"poses from {t.source} ({len(t)} poses, {t.stamps[0]:.3f}..{t.stamps[-1]:.3f} s): "
                f"{self.with_pose} frames with a pose, {self.without_pose} kept without one "
                f"(outside the trajectory or in a gap > {self.max_gap_s:g} s)")
