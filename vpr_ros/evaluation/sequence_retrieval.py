"""Sequence matching on an aligned database/query pair: what `vpr-ros eval --sequence-length` and
the sequence benches score.

The database becomes a one-session map whose keyframe k has stamp k, and
the queries are streamed through the matcher in the order and at the stamps given: by default
query q at stamp q, so a query's sequence is it and its L-1 predecessors in the folder and
speeds are in frames per frame. The ranking of a frame is its end keyframes, the agreed end
first; its confidence is the matcher's evidence (the uniqueness margin, discounted while the
sequence is shorter than its warm-up length, 0 at a speed edge), which the engine's threshold
applies to.
"""
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from vpr_ros.localization.sequence import SequenceMatcher, SequenceResult, SequenceSettings
from vpr_ros.mapping import Keyframe, KeyframeMap


def stream_sequences(db: np.ndarray, queries: np.ndarray, settings: SequenceSettings,
                     shortlist: int = 10, order: Optional[Sequence[int]] = None,
                     stamps: Optional[Sequence[float]] = None) -> Iterator[SequenceResult]:
    """The matcher's result for each frame streamed: query `order[f]` at `stamps[f]` (default:
    every query once, query q at stamp q) against the database as a one-session map."""
    order = np.arange(len(queries)) if order is None else np.asarray(order, dtype=np.int64)
    stamps = np.arange(len(order), dtype=float) if stamps is None else np.asarray(stamps, float)
    kf_map = KeyframeMap.create(db.shape[1], "evaluation")
    kf_map.add(db, [Keyframe("db", float(i)) for i in range(len(db))])
    matcher = SequenceMatcher(kf_map, settings)
    scores, ids = kf_map.search(queries, shortlist)
    for f in tqdm(range(len(order)), desc=f"sequences of {settings.length}", unit="frame",
                  leave=False):
        q = order[f]
        yield matcher.update(float(stamps[f]), queries[q], ids[q], scores[q])


def sequence_ranking(db: np.ndarray, queries: np.ndarray, settings: SequenceSettings,
                     shortlist: int = 10, k: int = 10, order: Optional[Sequence[int]] = None,
                     stamps: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(evidence (F,), database ids (F, k) best first, -1 where fewer) of the F frames streamed
    as `stream_sequences` streams them."""
    frames = len(queries) if order is None else len(order)
    evidence = np.empty(frames)
    ranked = np.full((frames, k), -1, dtype=np.int64)
    for f, result in enumerate(stream_sequences(db, queries, settings, shortlist, order, stamps)):
        evidence[f] = result.evidence
        ends = [h.keyframe_id for h in result.ranked[:k]]
        ranked[f, :len(ends)] = ends
    return evidence, ranked
