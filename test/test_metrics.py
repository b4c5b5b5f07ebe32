"""Metric functions on tiny cases computed by hand."""
import numpy as np
import pytest

from vpr_ros.evaluation.metrics import pr_auc, precision_recall, recall_at_n, recall_at_precision


def test_recall_at_n_by_hand():
    ranked = np.array([[0, 1, 2], [5, 3, 4], [7, 8, 9], [-1, -1, -1]])
    positives = [{0}, {4}, {1}, {2}]
    # query 0 hits at rank 1, query 1 at rank 3, queries 2 and 3 never.
    assert recall_at_n(ranked, positives, ns=(1, 2, 3)) == {1: 0.25, 2: 0.25, 3: 0.5}


def test_recall_at_n_needs_enough_results():
    with pytest.raises(ValueError, match="Recall@5"):
        recall_at_n(np.zeros((2, 3), int), [{0}, {1}], ns=(1, 5))


def test_precision_recall_auc_and_recall_at_100p_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, False, True])
    precision, recall, thresholds = precision_recall(scores, correct)
    np.testing.assert_allclose(precision, [1.0, 1.0, 2 / 3, 0.75])
    np.testing.assert_allclose(recall, [0.25, 0.5, 0.5, 0.75])
    np.testing.assert_allclose(thresholds, scores)
    # Trapezoids from (0, 1): 0.25·1 + 0.25·1 + 0 + 0.25·(2/3 + 3/4)/2.
    assert pr_auc(precision, recall) == pytest.approx(0.5 + 0.25 * (17 / 12) / 2)
    assert recall_at_precision(precision, recall, 1.0) == pytest.approx(0.5)


def test_recall_at_100p_is_zero_when_the_most_confident_match_is_wrong():
    precision, recall, _ = precision_recall(np.array([0.9, 0.1]), np.array([False, True]))
    assert recall_at_precision(precision, recall) == 0.0
    # Points (0, 1) → (0, 0) → (0.5, 0.5): area 0.5 · (0 + 0.5) / 2.
    assert pr_auc(precision, recall) == pytest.approx(0.125)


def test_perfect_ranking_has_auc_one():
    precision, recall, _ = precision_recall(np.array([3.0, 2.0, 1.0]), np.ones(3, bool))
    assert pr_auc(precision, recall) == pytest.approx(1.0)
    assert recall_at_precision(precision, recall) == 1.0
