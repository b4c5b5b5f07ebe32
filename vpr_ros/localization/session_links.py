"""Link a session just added to a map to the places the map already held (`Keyframe.link`).

`vpr-ros build-map` adds a drive to an existing map as a new session. Its keyframes are then
streamed, in stamp order, through the sequence matcher with shortlists drawn only from the
keyframes older than the session (FAISS's IDSelectorRange), and each keyframe whose sequence is
accepted links to the keyframe it matched. Sequence matching then counts the day and night
keyframes of one place as one place instead of rivals (`SessionTracks.apart`). In mapping mode
the engine links the keyframes it adds the same way, from its own accepted decisions.
"""
import dataclasses

import numpy as np
from tqdm import tqdm

from vpr_ros.localization.config import EngineConfig
from vpr_ros.localization.sequence import SequenceMatcher

CHUNK = 256
GAP_SPACINGS = 3.0
"""A session mapped sparsely (build-map --every N) still streams as one sequence: the matcher's
gap limit is at least this many of its median keyframe spacings."""


def link_session(keyframe_map, keyframe_ids, config: EngineConfig = EngineConfig()) -> int:
    """Link keyframes `keyframe_ids` (one session, added after every keyframe it may link to) to
    the older keyframes their sequences match; returns how many were linked."""
    ids = np.asarray(keyframe_ids, dtype=np.int64)
    first = int(ids.min()) if len(ids) else 0
    if first == 0:
        return 0
    records = keyframe_map.records
    ids = ids[np.argsort(records.stamps[ids], kind="stable")]
    stamps, poses = records.stamps[ids], records.poses[ids]
    gaps = np.diff(stamps)
    spacing = float(np.median(gaps[gaps > 0])) if np.any(gaps > 0) else 0.0
    settings = config.sequence_settings()
    settings = dataclasses.replace(settings, max_gap_s=max(settings.max_gap_s, GAP_SPACINGS * spacing))
    matcher = SequenceMatcher(keyframe_map, settings, threads=config.search_threads)
    targets = np.full(len(ids), -1, np.int64)
    with tqdm(total=len(ids), desc="link to the map", unit="keyframe") as progress:
        for start in range(0, len(ids), CHUNK):
            chunk = slice(start, start + CHUNK)
            descriptors = keyframe_map.descriptors(ids[chunk])
            scores, found = keyframe_map.search(descriptors, config.top_k, before_id=first)
            for row, i in enumerate(range(start, start + len(descriptors))):
                position = None if np.isnan(poses[i]).any() else poses[i, :3]
                result = matcher.update(stamps[i], descriptors[row], found[row], scores[row], position)
                if result.best is not None and result.evidence >= config.sequence_threshold:
                    targets[i] = result.best.keyframe_id
            progress.update(len(descriptors))
    linked = targets >= 0
    keyframe_map.link(ids[linked], targets[linked])
    return int(linked.sum())
