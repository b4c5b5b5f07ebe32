"""Relocalization pose and covariance from the evidence of one match (pure numpy, no ROS).

IM2GPS-style (Hays & Efros 2008): the keyframes that look like the query vote with their
positions. A weighted mean-shift over the supporting candidates' positions finds the mode of
their kernel density whose basin holds the anchor (the matched keyframe, or a sequence's end
keyframe); the position is that mode and the orientation is the anchor's. The covariance
(6x6, ROS order x y z rot_x rot_y rot_z) is what the evidence says:

    Sigma_pos = k(c)^2 * (V + spacing^2 / 12 * I3),   V = S / (n_eff - 1) or S (see below)
    Sigma_rot = k(c)^2 * (R + rotation_floor^2 * I3)     (diagonal)
    k(c)      = 1 + confidence_gain * (1 - c),  c clipped to [0, 1]

- S: weighted covariance of the mode's keyframe positions about the mode, with
  n_eff = (sum w)^2 / sum w^2 the effective number of votes. Independent votes (noisy looks
  at one place, e.g. a frame's shortlist): the mode is a weighted mean of them, so its error
  is their spread over n_eff; dividing by n_eff - 1 instead is the small-sample (Bessel)
  correction, V = S / (n_eff - 1), and one vote (n_eff = 1) gives no spread term.
  Alternatives (places the evidence cannot tell apart, e.g. a sequence's end keyframes):
  the robot is at one of them, so their spread is the uncertainty itself, V = S.
- spacing^2 / 12: the robot is anywhere between two keyframes `spacing` apart; a uniform
  position over one spacing has this variance. It is the floor when the votes agree.
- R: per-axis mean square of the mode keyframes' orientations about the anchor's (rotation
  vectors in the map frame): the orientation is the anchor's, one sample of them.
  `rotation_floor` covers the heading difference between any two images that still match
  (overlapping views), which the keyframes cannot show.
- k(c): a match that barely clears the threshold is more likely a near miss, so sigma grows
  linearly up to (1 + confidence_gain) times at zero confidence; finite by design (filters
  reject infinite covariances).

Measured figures (Gardens Point with the frame index as the along-track coordinate) are in
docs/results.md, with the commands that give them.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from vpr_ros.io import quaternion

Pose = Tuple[float, float, float, float, float, float, float]

KERNEL_SUPPORT = 3.0
"""The Gaussian kernel is cut at this many bandwidths, so far-away candidates never pull."""


@dataclass(frozen=True)
class PoseEstimate:
    """A relocalization: `pose` (x y z qx qy qz qw) and its 6x6 `covariance` (x y z rot_x rot_y rot_z).

    `inliers` are the indices of the `support` entries in the chosen mode; `mode_weight` is
    their share of the total support weight (1: every candidate agrees).
    """

    pose: Pose
    covariance: np.ndarray
    inliers: Tuple[int, ...]
    mode_weight: float

    def covariance_rows(self) -> List[List[float]]:
        """The covariance as a nested 6x6 list of floats (JSON, the event's `covariance`)."""
        return [[float(v) for v in row] for row in self.covariance]


def _shift_to_mode(start: np.ndarray, points: np.ndarray, weights: np.ndarray, bandwidth: float,
                   iterations: int = 100) -> np.ndarray:
    """Weighted Gaussian mean-shift from `start` until it moves less than 1e-6 bandwidths."""
    x = start
    for _ in range(iterations):
        d2 = np.sum((points - x) ** 2, axis=1) / bandwidth ** 2
        k = weights * np.exp(-0.5 * d2) * (d2 <= KERNEL_SUPPORT ** 2)
        total = k.sum()
        if total <= 0.0:
            return x
        moved = k @ points / total
        if np.linalg.norm(moved - x) < 1e-6 * bandwidth:
            return moved
        x = moved
    return x


def _check(anchor, support, spacing_m: float, confidence: float):
    anchor = np.asarray(anchor, dtype=np.float64).reshape(-1)
    if anchor.shape != (7,) or not np.all(np.isfinite(anchor)):
        raise ValueError(f"anchor must be a finite pose (x, y, z, qx, qy, qz, qw), got {anchor.tolist()}")
    poses = np.asarray([p for p, _ in support], dtype=np.float64).reshape(-1, 7)
    weights = np.asarray([w for _, w in support], dtype=np.float64)
    if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(weights)) and np.all(weights >= 0.0)):
        raise ValueError("support poses must be finite and weights finite and >= 0 "
                         "(clip negative cosine scores before passing them)")
    if not (np.isfinite(spacing_m) and spacing_m > 0.0):
        raise ValueError(f"spacing_m must be positive, got {spacing_m}")
    if not np.isfinite(confidence):
        raise ValueError(f"confidence must be finite, got {confidence}")
    return anchor, poses, weights


def estimate_pose(anchor: Pose, support: Sequence[Tuple[Pose, float]], spacing_m: float,
                  confidence: float, *, bandwidth_m: Optional[float] = None,
                  rotation_floor_rad: float = 0.1, confidence_gain: float = 1.0,
                  independent_votes: bool = True) -> PoseEstimate:
    """The pose of the query and its covariance from the anchor keyframe and its support.

    anchor: pose of the matched keyframe (it picks the mode and gives the orientation).
    support: (pose, weight) of the candidates with poses, the anchor's own entry included;
        weights >= 0, e.g. their cosine scores.
    spacing_m: distance between consecutive keyframes around the anchor.
    confidence: the match confidence in [0, 1] (values outside are clipped).
    bandwidth_m: mean-shift kernel width; default 2 * spacing_m, so neighbours of the anchor
        vote together and a place 6 bandwidths away never pulls.
    independent_votes: True when each vote is a noisy look at the same place (a shortlist):
        the mode's error is the votes' spread over n_eff - 1. False when the votes are places
        the evidence cannot tell apart (a sequence's end keyframes): their spread S itself is
        how far along the route the robot may be.
    See the module docstring for the covariance formula.
    """
    anchor, poses, weights = _check(anchor, support, spacing_m, confidence)
    if rotation_floor_rad <= 0.0 or confidence_gain < 0.0:
        raise ValueError(f"rotation_floor_rad must be > 0 and confidence_gain >= 0, got "
                         f"{rotation_floor_rad} and {confidence_gain}")
    bandwidth = 2.0 * spacing_m if bandwidth_m is None else float(bandwidth_m)
    if not bandwidth > 0.0:
        raise ValueError(f"bandwidth_m must be positive, got {bandwidth_m}")
    points = poses[:, :3]
    mode = _shift_to_mode(anchor[:3], points, weights, bandwidth)
    inliers = [i for i in range(len(points)) if weights[i] > 0.0 and np.linalg.norm(
        _shift_to_mode(points[i], points, weights, bandwidth) - mode) <= 0.5 * bandwidth]
    w = weights[inliers]
    spread = np.zeros((3, 3))
    rotation_var = np.zeros(3)
    if w.sum() > 0.0:
        offsets = points[inliers] - mode
        spread = (w[:, None] * offsets).T @ offsets / w.sum()
        if independent_votes:
            n_eff = w.sum() ** 2 / (w ** 2).sum()
            spread = spread / (n_eff - 1.0) if n_eff > 1.0 + 1e-9 else np.zeros((3, 3))
        residuals = quaternion.rotation_vector(
            quaternion.multiply(poses[inliers, 3:], quaternion.conjugate(anchor[3:])))
        rotation_var = w @ residuals ** 2 / w.sum()
    scale = (1.0 + confidence_gain * (1.0 - float(np.clip(confidence, 0.0, 1.0)))) ** 2
    covariance = np.zeros((6, 6))
    covariance[:3, :3] = scale * (spread + spacing_m ** 2 / 12.0 * np.eye(3))
    covariance[3:, 3:] = scale * np.diag(rotation_var + rotation_floor_rad ** 2)
    quat = anchor[3:] / np.linalg.norm(anchor[3:])
    pose = tuple(float(v) for v in np.concatenate([mode, quat]))
    total = weights.sum()
    return PoseEstimate(pose, covariance, tuple(inliers), float(w.sum() / total) if total > 0 else 0.0)
