"""Metric relocalization report: translation error, fraction within thresholds, 2-sigma coverage."""
import json

import numpy as np
import pytest

from vpr_ros.evaluation.metric import COVERAGE_PROBABILITY, chi2_quantile, evaluate_positions


def test_chi2_quantiles_of_the_2_sigma_probability():
    assert COVERAGE_PROBABILITY == pytest.approx(0.9545, abs=1e-4)
    assert chi2_quantile(COVERAGE_PROBABILITY, 1) == pytest.approx(4.0)
    assert chi2_quantile(COVERAGE_PROBABILITY, 2) == pytest.approx(6.1801, abs=1e-4)
    assert chi2_quantile(COVERAGE_PROBABILITY, 3) == pytest.approx(8.0249, abs=1e-4)
    assert chi2_quantile(0.95, 3) == pytest.approx(7.8147, abs=1e-4)
    with pytest.raises(ValueError, match="1 to 3 dimensions"):
        chi2_quantile(0.9, 4)


def test_errors_and_thresholds_in_metres():
    truth = np.zeros((4, 3))
    estimated = [[0.5, 0, 0], [0, 1.5, 0], [3, 4, 0], [0, 0, 20]]
    report = evaluate_positions(estimated, truth, [None] * 4)
    assert report.count == 4 and report.median_error == pytest.approx(3.25)
    assert report.within == {1.0: 0.25, 2.0: 0.5, 5.0: 0.75, 10.0: 0.75}
    assert report.coverage_2sigma is None and "no covariance published" in report.summary()
    assert evaluate_positions(estimated, truth, [None] * 4, axes="xy").median_error == pytest.approx(1.0)


def test_coverage_counts_truths_inside_the_2_sigma_region():
    cov = np.diag([1.0, 1.0, 1.0, 0.1, 0.1, 0.1])
    estimated = [[1.9, 0, 0], [2.1, 0, 0], [0, 0, 0], [5, 0, 0]]
    report = evaluate_positions(estimated, np.zeros((4, 3)), [cov, cov, None, np.zeros((6, 6))], axes="x",
                                unit="place")
    assert report.with_covariance == 3
    assert report.coverage_2sigma == pytest.approx(1 / 3), "1.9 sigma in, 2.1 out, zero covariance covers nothing"
    assert report.summary().startswith("translation error (place index, x) of 4 accepted: median 2.00 places")
    assert "metres" not in report.summary()
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["unit"] == "place" and as_json["within"]["1"] == 0.25
    assert as_json["coverage_region"].startswith("chi2 1 dof <= 4.000")


def test_coverage_of_honest_gaussian_errors_is_near_95_percent_in_3d():
    rng = np.random.default_rng(3)
    cov = np.array([[4.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.5]])
    errors = rng.multivariate_normal(np.zeros(3), cov, size=4000)
    report = evaluate_positions(errors, np.zeros_like(errors), [cov] * len(errors))
    assert report.coverage_2sigma == pytest.approx(COVERAGE_PROBABILITY, abs=0.01)
    assert evaluate_positions(errors, np.zeros_like(errors), [cov / 4] * len(errors)).coverage_2sigma < 0.6


def test_empty_and_mismatched_inputs():
    report = evaluate_positions([], [], [])
    assert report.count == 0 and report.median_error is None and "no accepted estimate" in report.summary()
    with pytest.raises(ValueError, match="one of each per relocalization"):
        evaluate_positions([[0, 0, 0]], [], [None])
    with pytest.raises(ValueError, match="axes must be one of x, xy, xyz"):
        evaluate_positions([], [], [], axes="yz")
