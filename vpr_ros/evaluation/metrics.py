"""Retrieval and loop-closure metrics on plain arrays (DESIGN.md §7)."""
from typing import Dict, Iterable, Sequence

import numpy as np


def recall_at_n(ranked: np.ndarray, positives: Sequence[Iterable[int]],
                ns: Sequence[int] = (1, 5, 10)) -> Dict[int, float]:
    """Fraction of queries with a true positive among their first N retrieved database ids.

    ranked: (Q, K) database ids per query, best first (−1 = no result). positives: per query, the
    database ids that count as correct. Queries with no positive at all still count (as misses).
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or len(ranked) != len(positives):
        raise ValueError(f"ranked must be (Q, K) with Q = {len(positives)} queries, "
                         f"got {ranked.shape}")
    if max(ns) > ranked.shape[1]:
        raise ValueError(f"Recall@{max(ns)} needs ≥ {max(ns)} results per query, "
                         f"got {ranked.shape[1]}")
    return recall_from_ranks(first_match_rank(ranked, positives), ns)


def recall_from_ranks(first: np.ndarray, ns: Sequence[int]) -> Dict[int, float]:
    """Recall@N from each query's first-match rank (`first_match_rank`, 0: none)."""
    return {int(n): float(np.mean(hits_within(first, n))) for n in ns}


def hits_within(first: np.ndarray, n: int) -> np.ndarray:
    """(Q,) whether each query's first correct match (1-based rank, 0: none) is in its top n."""
    first = np.asarray(first)
    return (first > 0) & (first <= n)


def first_match_rank(ranked: np.ndarray, positives: Sequence[Iterable[int]]) -> np.ndarray:
    """(Q,) 1-based rank of each query's first correct database id in `ranked`, 0 if none.

    Per-query ranks let two models be compared on the same queries (a paired comparison)."""
    ranked = np.asarray(ranked)
    hits = np.array([[r in pos for r in row] for row, pos in zip(ranked, map(set, positives))],
                    dtype=bool).reshape(ranked.shape)
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def precision_recall(scores: np.ndarray, correct: np.ndarray, n_positives=None):
    """Precision and recall at every threshold on the best-match score, best score first.

    scores: (Q,) best-match score per query (higher = more confident). correct: (Q,) whether that
    best match is right. n_positives: queries that have a true match (default: all of them).
    Returns (precision, recall, thresholds), each of length Q.
    """
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
    if scores.shape != correct.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and correct {correct.shape} must be equal 1-D")
    n_positives = len(scores) if n_positives is None else n_positives
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(correct[order])
    accepted = np.arange(1, len(scores) + 1)
    return tp / accepted, tp / max(n_positives, 1), scores[order]


def pr_auc(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision–recall curve by the trapezoid rule, starting at (R=0, P=1)."""
    p = np.concatenate([[1.0], precision])
    r = np.concatenate([[0.0], recall])
    return float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) / 2.0))


def recall_at_precision(precision: np.ndarray, recall: np.ndarray, min_precision=1.0) -> float:
    """Highest recall reached while precision ≥ `min_precision` (0 if never)."""
    ok = np.asarray(precision) >= min_precision - 1e-12
    return float(np.max(np.asarray(recall)[ok])) if ok.any() else 0.0
