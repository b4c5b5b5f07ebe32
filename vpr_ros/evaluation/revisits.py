"""Revisits of a mapped route as a robot drives them: another speed, a change of speed half-way,
jittered stamps, lost frames, a stop.

An aligned drive (keyframe j and query frame j show place j, as Gardens Point and Nordland are)
becomes a stream of (place, stamp): keyframes are 1 s apart, and the robot reaches place j after
j / ratio seconds, so `ratio` is the map time per query time the sequence matcher must find (2:
revisiting twice as fast as mapping); `ratio_after`, when given, is the speed from half-way on
(an abrupt change). Jitter moves each stamp by up to `jitter` of a frame step, `drop` loses that
share of frames, and the robot parks at `stop_at` (share of the route) for `stop_frames` frames
that repeat the view it stopped at.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from vpr_ros.evaluation.sequence_retrieval import stream_sequences
from vpr_ros.localization.sequence import SequenceResult


@dataclass(frozen=True)
class Revisit:
    """How the route is driven again; `stream` turns it into frames."""

    ratio: float = 1.0
    ratio_after: Optional[float] = None
    jitter: float = 0.0
    drop: float = 0.0
    stop_at: Optional[float] = None
    stop_frames: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ratio <= 0 or (self.ratio_after is not None and self.ratio_after <= 0) or \
                not 0 <= self.jitter < 0.5 or not 0 <= self.drop < 1:
            raise ValueError("a revisit needs ratio (and ratio_after) > 0, jitter in [0, 0.5) "
                             "and drop in [0, 1)")

    @property
    def name(self) -> str:
        rough = ", jitter/drops/stop" if self.jitter or self.drop or self.stop_frames else ""
        change = "" if self.ratio_after is None else f"->{self.ratio_after:g}"
        return f"{self.ratio:g}{change}x{rough}"

    def stream(self, places: Sequence[int]) -> List[Tuple[int, float]]:
        """(place, stamp) of each frame the robot takes, in order."""
        rng = np.random.default_rng(self.seed)
        stop = None if self.stop_at is None else int(self.stop_at * (len(places) - 1))
        frames: List[Tuple[int, float]] = []
        clock = 0.0
        for i, place in enumerate(places):
            late = self.ratio_after is not None and i >= len(places) // 2
            step = 1.0 / (self.ratio_after if late else self.ratio)
            if not (self.drop and rng.random() < self.drop) or i == stop:
                frames.append((int(place), clock + self.jitter * step * rng.uniform(-1.0, 1.0)))
            clock += step
            if i == stop:
                for _ in range(self.stop_frames):
                    frames.append((int(place), clock))
                    clock += step
        return frames


ROUGH = dict(jitter=0.2, drop=0.1, stop_at=0.5, stop_frames=30)
"""A rough revisit: stamps jittered by up to a fifth of a step, one frame in ten lost, and a stop
of 30 frames half-way."""

RATIOS = (0.5, 0.75, 1.0, 1.5, 2.0)
"""Revisit speeds, relative to mapping, that the sequence decision is held to."""

CHANGES = ((0.5, 1.0), (1.0, 0.5), (1.0, 2.0), (2.0, 1.0))
"""Abrupt speed changes half-way (before, after): doubling and halving from either end of RATIOS."""


def steady_revisits() -> List[Revisit]:
    """Every speed ratio of RATIOS, clean and rough."""
    return [Revisit(ratio, **rough) for ratio in RATIOS for rough in ({}, ROUGH)]


def speed_changes() -> List[Revisit]:
    """A revisit per change of CHANGES."""
    return [Revisit(before, ratio_after=after) for before, after in CHANGES]


def drive_revisit(db: np.ndarray, queries: np.ndarray, revisit: Revisit, settings,
                  places: Optional[Sequence[int]] = None, mapped: Optional[Sequence[int]] = None,
                  shortlist: int = 10) -> Tuple[np.ndarray, np.ndarray, List[SequenceResult]]:
    """Map the places `mapped` (default all; keyframe j shows place mapped[j], 1 s apart), drive
    `places` (default all) again as `revisit` says, and match each frame's sequence.

    Returns the place each frame shows, `mapped` as an array (keyframe id -> place) and the
    matcher's result per frame."""
    mapped = np.arange(len(db)) if mapped is None else np.asarray(mapped, dtype=np.int64)
    places = np.arange(len(queries)) if places is None else np.asarray(places, dtype=np.int64)
    frames = revisit.stream(places)
    shown = np.array([place for place, _ in frames], dtype=np.int64)
    stamps = np.array([stamp for _, stamp in frames])
    results = list(stream_sequences(db[mapped], queries, settings, shortlist, order=shown,
                                    stamps=stamps))
    return shown, mapped, results


def stream_revisit(db: np.ndarray, queries: np.ndarray, revisit: Revisit, settings,
                   places: Optional[Sequence[int]] = None, mapped: Optional[Sequence[int]] = None,
                   shortlist: int = 10) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`drive_revisit` as arrays, per frame: the place it shows, the matcher's evidence, and the
    place of the end it reported first (-1 when none)."""
    shown, mapped, results = drive_revisit(db, queries, revisit, settings, places, mapped,
                                           shortlist)
    evidence = np.array([r.evidence for r in results], dtype=float)
    reported = np.array([-1 if r.best is None else mapped[r.best.keyframe_id] for r in results],
                        dtype=np.int64)
    return shown, evidence, reported
