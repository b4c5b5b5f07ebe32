"""Sequence matching on an aligned database/query pair: what `vpr-ros eval --sequence-length` scores.

The database becomes a one-session map whose keyframe k has stamp k, and query q is streamed
with stamp q, so a query's sequence is it and its L-1 predecessors in the folder and speeds are
in frames per frame. The ranking of a query is its end keyframes, the agreed end first; its
confidence is the matcher's evidence (the uniqueness margin, discounted while the sequence is
shorter than its warm-up length), which the engine's threshold applies to.
"""
from typing import Tuple

import numpy as np
from tqdm import tqdm

from vpr_ros.localization.sequence import SequenceMatcher, SequenceSettings
from vpr_ros.mapping import Keyframe, KeyframeMap


def sequence_ranking(db: np.ndarray, queries: np.ndarray, settings: SequenceSettings,
                     shortlist: int = 10, k: int = 10) -> Tuple[np.ndarray, np.ndarray]:
    """(evidence (Q,), database ids (Q, k) best first, -1 where fewer) for queries in order."""
    kf_map = KeyframeMap.create(db.shape[1], "evaluation")
    kf_map.add(db, [Keyframe("db", float(i)) for i in range(len(db))])
    matcher = SequenceMatcher(kf_map, settings)
    scores, ids = kf_map.search(queries, shortlist)
    evidence = np.empty(len(queries))
    ranked = np.full((len(queries), k), -1, dtype=np.int64)
    for i in tqdm(range(len(queries)), desc=f"sequences of {settings.length}", unit="query",
                  leave=False):
        result = matcher.update(float(i), queries[i], ids[i], scores[i])
        evidence[i] = result.evidence
        ends = [h.keyframe_id for h in result.ranked[:k]]
        ranked[i, :len(ends)] = ends
    return evidence, ranked
