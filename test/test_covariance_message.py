"""The engine's 6x6 covariance as the ~/relocalization message field."""
import numpy as np
import pytest

from vpr_ros.localization.pose_estimate import estimate_pose
from vpr_ros.ros.covariance import message_covariance


def test_an_estimate_covariance_flattens_row_major():
    est = estimate_pose((1, 2, 0, 0, 0, 0, 1), [((1, 2, 0, 0, 0, 0, 1), 0.8), ((2, 2, 0, 0, 0, 0, 1), 0.6)],
                        spacing_m=2.0, confidence=0.5)
    flat = message_covariance(est.covariance_rows())
    assert len(flat) == 36 and flat == pytest.approx(est.covariance.reshape(-1).tolist())
    assert flat[0] == est.covariance[0, 0] and flat[35] == est.covariance[5, 5]


@pytest.mark.parametrize("matrix, message", [
    (np.eye(3), "must be 6x6"),
    (np.full((6, 6), np.nan), "must be 6x6 finite"),
    (np.triu(np.ones((6, 6))), "symmetric"),
    (-np.eye(6), "non-negative variances"),
])
def test_covariances_a_filter_would_reject_are_refused(matrix, message):
    with pytest.raises(ValueError, match=message):
        message_covariance(matrix.tolist())
