"""Covariance of a relocalization pose, checked and flattened for the ROS message.

The engine estimates the pose and its covariance from the evidence of the match
(`vpr_ros.localization.pose_estimate`: spread of the supporting keyframes, keyframe spacing,
confidence); `message_covariance` checks that 6x6 matrix and flattens it, row-major over
(x, y, z, rot_x, rot_y, rot_z) as in geometry_msgs/PoseWithCovariance.
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
