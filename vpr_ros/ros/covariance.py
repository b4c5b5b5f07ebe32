"""Covariance of a relocalization pose: the engine's own, or one from the match confidence.

The engine estimates the pose and its covariance from the evidence of the match
(`vpr_ros.localization.pose_estimate`: spread of the supporting keyframes, keyframe spacing,
confidence); `message_covariance` checks that 6x6 matrix and flattens it for the message.
`pose_covariance` is the older model, for decisions that carry no covariance: a
relocalization reports the pose of the matched keyframe, so its error is the distance from the
robot to that keyframe (about the keyframe spacing when the match is right) plus the risk that
the match is wrong. The standard deviation therefore grows as the confidence c in [0, 1] falls:

    sigma(c) = sigma_at_full_confidence * min(1 / c, max_scale)      (c <= 0 -> max_scale)

so c = 1 gives the configured sigma, c = 0.5 doubles it and a near-zero confidence saturates at
`max_scale` times it instead of going to infinity (filters such as robot_localization reject
non-finite covariances). Position axes share one sigma, rotation axes another; the matrix is
diagonal, row-major 6x6 over (x, y, z, rot_x, rot_y, rot_z) as in
geometry_msgs/PoseWithCovariance.
"""
from typing import List, Sequence

import numpy as np


def message_covariance(covariance: Sequence[Sequence[float]]) -> List[float]:
    """A 6x6 pose covariance (x, y, z, rot_x, rot_y, rot_z) as the message's 36 row-major floats.

    Refuses what a filter would choke on: not 6x6, non-finite, not symmetric, or a negative
    variance.
    """
    matrix = np.asarray(covariance, dtype=np.float64)
    if matrix.shape != (6, 6) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"a pose covariance must be 6x6 finite numbers, got shape {matrix.shape}")
    if not np.allclose(matrix, matrix.T, rtol=1e-9, atol=1e-12) or np.any(np.diag(matrix) < 0.0):
        raise ValueError("a pose covariance must be symmetric with non-negative variances")
    return [float(v) for v in matrix.reshape(-1)]


def sigma_scale(confidence: float, max_scale: float) -> float:
    """The factor 1/c by which sigma grows at confidence c, capped at `max_scale`."""
    if max_scale < 1.0:
        raise ValueError(f"max_scale must be >= 1, got {max_scale}")
    if not confidence > 0.0:
        return max_scale
    return min(1.0 / min(confidence, 1.0), max_scale)


def pose_covariance(confidence: float, position_sigma: float, rotation_sigma: float,
                    max_scale: float) -> List[float]:
    """Row-major 6x6 covariance (36 floats) for a relocalization with this confidence."""
    if position_sigma <= 0.0 or rotation_sigma <= 0.0:
        raise ValueError(f"sigmas must be positive, got position {position_sigma} m and "
                         f"rotation {rotation_sigma} rad")
    scale = sigma_scale(confidence, max_scale)
    variances = [(position_sigma * scale) ** 2] * 3 + [(rotation_sigma * scale) ** 2] * 3
    covariance = [0.0] * 36
    for axis, variance in enumerate(variances):
        covariance[axis * 6 + axis] = variance
    return covariance
