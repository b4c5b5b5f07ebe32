"""Fill a keyframe map from a stream of frames (embedding in batches); shared by build-map and demo."""
import logging
from itertools import islice
from typing import Iterable, List, Optional, Tuple

from tqdm import tqdm

from vpr_ros.localization.frame_check import frame_problem
from vpr_ros.mapping.keyframe_map import KeyframeMap
from vpr_ros.mapping.records import Keyframe
from vpr_ros.mapping.thumbnail import encode_thumbnail

LOG = logging.getLogger(__name__)


def add_frames(kf_map: KeyframeMap, embedder, frames: Iterable, session: str, condition: str = "",
               thumbnails: bool = True, verifier=None, batch_size: int = 8,
               total: Optional[int] = None) -> Tuple[List[int], int]:
    """Add every usable frame as a keyframe of `session`; returns (new keyframe ids, skipped count).

    Unusable frames (empty, garbled) are skipped with a warning; the rest are embedded
    `batch_size` at a time and keep their `pose` (None when the frame has none). `verifier`
    (a GeometricVerifier) stores local features for verification at localization time.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    frames = iter(frames)
    ids: List[int] = []
    skipped = 0
    with tqdm(total=total, desc=f"map {session}", unit="frame") as progress:
        while True:
            batch = list(islice(frames, batch_size))
            if not batch:
                break
            progress.update(len(batch))
            usable = []
            for frame in batch:
                problem = frame_problem(frame.image)
                if problem:
                    LOG.warning("skipping frame %s: %s", frame.name, problem)
                    skipped += 1
                else:
                    usable.append(frame)
            if not usable:
                continue
            descriptors = embedder.embed([f.image for f in usable])
            records = [Keyframe(session, f.stamp, f.frame_id, pose=f.pose, condition=condition,
                                thumbnail=encode_thumbnail(f.image) if thumbnails else None,
                                features=verifier.extract(f.image) if verifier else None)
                       for f in usable]
            ids.extend(int(i) for i in kf_map.add(descriptors, records))
    return ids, skipped
