"""Offline replay: feed a stream of frames to the engine in batches (faster embedding on CPU/GPU)."""
from itertools import islice
from typing import Iterable, Iterator

from vpr_ros.localization.decision import Decision
from vpr_ros.localization.engine import LocalizationEngine


def replay(engine: LocalizationEngine, frames: Iterable, batch_size: int = 8) -> Iterator[Decision]:
    """Decisions for `frames` in order, embedding `batch_size` frames at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    iterator = iter(frames)
    while True:
        batch = list(islice(iterator, batch_size))
        if not batch:
            return
        yield from engine.process_batch(batch)
