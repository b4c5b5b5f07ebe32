"""Pose estimate from a match: mean-shift over the supporting keyframes, covariance from the evidence."""
import math

import numpy as np
import pytest

from vpr_ros.localization.pose_estimate import estimate_pose


def pose(x, y=0.0, yaw=0.0):
    return (float(x), float(y), 0.0, 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def test_outliers_are_ignored_and_the_position_is_the_mode_of_the_anchor_cluster():
    cluster = [(pose(10.0), 0.9), (pose(11.0), 0.8), (pose(9.0), 0.8), (pose(12.0), 0.6)]
    outliers = [(pose(80.0), 0.85), (pose(-40.0, 5.0), 0.7), (pose(300.0), 0.95)]
    est = estimate_pose(pose(10.0, yaw=0.3), cluster + outliers, spacing_m=1.0, confidence=1.0)
    assert est.inliers == (0, 1, 2, 3)
    x = np.array([10.0, 11.0, 9.0, 12.0])
    w = np.array([0.9, 0.8, 0.8, 0.6])
    assert est.pose[0] == pytest.approx(np.average(x, weights=w), abs=0.15)
    assert est.pose[1:3] == (0.0, 0.0)
    assert est.pose[3:] == pytest.approx(pose(0, yaw=0.3)[3:]), "orientation is the anchor's"
    assert est.mode_weight == pytest.approx(3.1 / (3.1 + 2.5))
    assert np.isfinite(est.covariance).all() and est.covariance[0, 0] < 1.0


def test_the_mode_holding_the_anchor_wins_over_a_denser_place_elsewhere():
    here = [(pose(0.0), 0.9), (pose(1.0), 0.7)]
    elsewhere = [(pose(50.0 + i), 0.8) for i in range(5)]
    est = estimate_pose(pose(0.0), here + elsewhere, spacing_m=1.0, confidence=1.0)
    assert est.inliers == (0, 1) and est.pose[0] < 1.0
    assert est.mode_weight < 0.5, "the other place holds most of the weight: an ambiguity to report"
    est = estimate_pose(pose(52.0), here + elsewhere, spacing_m=1.0, confidence=1.0)
    assert est.inliers == (2, 3, 4, 5, 6) and est.pose[0] == pytest.approx(52.0, abs=1e-6)


def test_a_lone_anchor_keeps_its_pose_with_the_spacing_floor():
    est = estimate_pose(pose(5.0, 2.0), [(pose(5.0, 2.0), 0.7), (pose(40.0), 0.9)], spacing_m=2.0,
                        confidence=1.0, rotation_floor_rad=0.1)
    assert est.pose[:2] == (5.0, 2.0) and est.inliers == (0,)
    np.testing.assert_allclose(np.diag(est.covariance), [4 / 12] * 3 + [0.01] * 3)
    assert est.covariance_rows()[0][0] == pytest.approx(4 / 12) and len(est.covariance_rows()) == 6
    est = estimate_pose(pose(5.0), [], spacing_m=2.0, confidence=1.0)
    assert est.pose[0] == 5.0 and est.inliers == () and est.mode_weight == 0.0


def test_spread_of_the_votes_and_of_their_orientations_enter_the_covariance():
    tight = [(pose(x), 1.0) for x in (0.0, 0.1, -0.1)]
    wide = [(pose(x, yaw=0.2 * s), 1.0) for x, s in ((0.0, 0), (2.0, 1), (-2.0, -1))]
    a = estimate_pose(pose(0.0), tight, spacing_m=1.0, confidence=1.0)
    b = estimate_pose(pose(0.0), wide, spacing_m=1.0, confidence=1.0)
    assert b.covariance[0, 0] == pytest.approx(8 / 3 / 2 + 1 / 12)  # S / (n_eff - 1) + spacing^2/12
    assert a.covariance[0, 0] < b.covariance[0, 0]
    assert b.covariance[1, 1] == pytest.approx(1 / 12), "no spread across track"
    assert b.covariance[5, 5] == pytest.approx(2 * 0.04 / 3 + 0.01)
    assert b.covariance[3, 3] == pytest.approx(0.01)
    assert np.count_nonzero(b.covariance - np.diag(np.diag(b.covariance))) == 0


def test_lower_confidence_gives_larger_but_finite_sigma():
    support = [(pose(x), 1.0) for x in (0.0, 1.0, 2.0)]
    sigmas = [math.sqrt(estimate_pose(pose(1.0), support, 1.0, c).covariance[0, 0]) for c in (1.0, 0.5, 0.0, -3.0)]
    assert sigmas[0] < sigmas[1] < sigmas[2] == sigmas[3]
    assert sigmas[2] == pytest.approx(2 * sigmas[0]), "confidence_gain 1: sigma doubles at zero confidence"


@pytest.mark.parametrize("kwargs, message", [
    (dict(anchor=(0, 0, 0, 0, 0, 0)), "anchor must be a finite pose"),
    (dict(support=[(pose(0), -0.2)]), "weights finite and >= 0"),
    (dict(spacing_m=0.0), "spacing_m must be positive"),
    (dict(confidence=float("nan")), "confidence must be finite"),
    (dict(bandwidth_m=-1.0), "bandwidth_m must be positive"),
])
def test_bad_inputs_are_named(kwargs, message):
    args = dict(anchor=pose(0), support=[(pose(0), 1.0)], spacing_m=1.0, confidence=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        estimate_pose(**args)


@pytest.mark.parametrize("spacing, vote_sigma, votes", [(1.0, 1.0, 6), (2.0, 2.0, 8), (1.0, 2.0, 8)])
def test_two_sigma_coverage_is_calibrated_on_a_synthetic_run(spacing, vote_sigma, votes):
    """Known noise: keyframes every `spacing` m; the candidates that match are the keyframes
    nearest to truth + N(0, vote_sigma^2), with random weights, plus wrong places far away."""
    rng = np.random.default_rng(7)
    inside = []
    for _ in range(1500):
        truth = rng.uniform(100.0, 200.0)
        near = np.round((truth + rng.normal(0.0, vote_sigma, votes)) / spacing) * spacing
        weights = rng.uniform(0.5, 1.0, votes)
        far = rng.uniform(0.0, 1000.0, 3)
        far = far[np.abs(far - truth) > 30.0]
        support = [(pose(x), w) for x, w in zip(near, weights)] + [(pose(x), 0.9) for x in far]
        est = estimate_pose(pose(near[np.argmax(weights)]), support, spacing, confidence=1.0)
        error = est.pose[0] - truth
        inside.append(error ** 2 / est.covariance[0, 0] <= 4.0)
    assert 0.90 <= np.mean(inside) <= 0.99
