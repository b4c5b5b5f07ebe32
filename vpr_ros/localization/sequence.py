"""Online sequence matching: decide on the robot's last L frames, not on one (SeqSLAM family).

A hypothesis says "the last L query frames lie along this stretch of one map session, ending at
keyframe e, travelled at relative speed v (in this direction)". Frame i, which lies Δ_i behind
the current one (seconds, or metres when poses come with the frames and the session), is paired
with the session keyframe nearest to x_e − direction·v·Δ_i. The hypothesis scores the mean, over
the frames it covers, of their *normalized* similarities z_i(k) = (q_i·d_k − μ_i) / σ_i, where
μ_i, σ_i describe how q_i scores against the map at large (a fixed sample of keyframes): a frame
that looks like everywhere counts for little, a distinctive one for much.

End keyframes come from FAISS shortlists: the current frame's, and those of the buffered frames
carried forward to now. Dot products are exact on stored descriptors, computed once per
(frame, keyframe) pair and only for keyframes a hypothesis touches: no similarity matrix, so the
cost does not grow with the map.

The confidence is a uniqueness margin: the best hypothesis' score minus the best score of one
that ends elsewhere (farther than the rival window along the same session, or on another
session). A lone frame that matches the wrong place well is outvoted by its neighbours; a route
that looks alike in two places yields a small margin and is not accepted. When no hypothesis
ending elsewhere was seen, the rival is bounded instead: a keyframe outside frame i's shortlist
scores at most that shortlist's last similarity, so no unseen trajectory beats the mean of those.

Where along the stretch the robot is comes from the hypotheses that end near the best one. A
slower line ending a few keyframes behind fits the older frames almost as well as the right one
(they pivot about the middle of the window), so the top score alone picks between near-ties by
noise. Each end is weighted by how far its score falls short of the best, in units of
END_SCALE times the standard error of a mean of n unit z-scores (1/sqrt(n)), and the end
reported first is the one nearest their weighted mean position along the track.
"""
import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
from threadpoolctl import threadpool_limits

from vpr_ros.localization.tracks import STEP_DISTANCE, STEP_TIME, SessionTracks

NORMALIZATION_SAMPLE = 256
MIN_SIGMA = 1e-3
CACHE_COLUMNS = 8192
END_SCALE = 0.25
"""Ends within a quarter of the score's standard error weigh alike: overlapping trajectories
differ far more precisely than one mean is known (chosen on Gardens Point places 0-99 for the
pose covariance, 2-sigma coverage 0.98 and 0.99; see README)."""

RESTART_START = "start"
RESTART_GAP = "gap"
RESTART_OUT_OF_ORDER = "out_of_order"
RESTART_RESET = "reset"


@dataclass(frozen=True)
class SequenceSettings:
    """Knobs of the matcher; EngineConfig validates them and mirrors them as `sequence_*`.

    length: frames per sequence (L). speed_min/max, speed_steps: relative speeds tried (map
    coordinate per query coordinate, geometric steps). reverse: also try travel against the
    map's direction. rival_window_s / rival_window_m: a rival must end this far from the best
    (seconds of map time, or metres when poses exist). min_step_m: when stepping by distance, a
    frame closer than this to the previous one replaces it, so a parked robot's frames don't
    pass for a sequence. max_gap_s: a longer gap between frames restarts the sequence.
    warmup_length: a sequence of n < warmup_length frames (after a start or a restart) has its
    margin discounted by sqrt(n / warmup_length) (see `SequenceResult.evidence`).
    """

    length: int = 20
    warmup_length: int = 5
    speed_min: float = 0.8
    speed_max: float = 1.25
    speed_steps: int = 5
    reverse: bool = False
    rival_window_s: float = 10.0
    rival_window_m: float = 10.0
    min_step_m: float = 1.0
    max_gap_s: float = 5.0


@dataclass(frozen=True)
class Hypothesis:
    """The best trajectory ending at `keyframe_id`: mean normalized `score` over `length` frames.

    `similarity` is the current frame's cosine with the end keyframe. `weight` (0..1] says how
    well it stands against the top score: exp(-((top - score) / (END_SCALE / sqrt(n)))^2 / 2).
    """

    keyframe_id: int
    score: float
    similarity: float
    speed: float
    direction: int
    length: int
    weight: float


@dataclass
class SequenceResult:
    """What the matcher concluded for the current frame.

    `ranked`: one hypothesis per end keyframe; first the end that the hypotheses near the top
    score agree on, then the rest by score. `margin`: the top score minus the best rival's (or
    the unseen-rival bound; -inf when nothing was ranked). `length`: frames in
    the sequence now. `step`: "time" or "distance". `restart`: why the sequence started afresh
    on this frame (start, gap, out_of_order, reset), else None. `evidence`: what a threshold
    applies to, the margin times sqrt(min(length, warmup_length) / warmup_length): noise on a
    mean of n frames shrinks as 1/sqrt(n), so a short sequence after a restart must stand out
    by as many of its own standard errors as a `warmup_length` one.
    """

    ranked: List[Hypothesis]
    margin: float
    length: int
    step: str
    restart: Optional[str] = None
    evidence: float = float("-inf")

    @property
    def best(self) -> Optional[Hypothesis]:
        return self.ranked[0] if self.ranked else None

    def to_dict(self) -> dict:
        """The event's `sequence` field (JSON-safe)."""
        best = self.best
        finite = math.isfinite(self.margin)
        return {"length": int(self.length), "step": self.step, "restart": self.restart,
                "score": None if best is None else round(best.score, 6),
                "margin": round(self.margin, 6) if finite else None,
                "evidence": round(self.evidence, 6) if math.isfinite(self.evidence) else None,
                "speed": None if best is None else round(best.speed, 4),
                "direction": None if best is None else int(best.direction),
                "frames_covered": None if best is None else int(best.length)}


@dataclass
class _QueryFrame:
    stamp: float
    position: Optional[np.ndarray]
    descriptor: np.ndarray
    mean: float
    sigma: float
    shortlist: np.ndarray
    floor: float
    row: int


class SequenceMatcher:
    """Scores trajectory hypotheses over the last `settings.length` frames against a KeyframeMap.

    Call `update` once per frame, in stamp order, with its descriptor and FAISS shortlist;
    `last` is the latest result. `threads` caps numpy's BLAS threads for the process: per-frame
    products are too small to split, and OpenBLAS threads next to FAISS's OpenMP ones made a
    200 x 13312 matrix-vector product 20x slower on a 2-core machine (15.6 vs 0.7 ms).
    """

    def __init__(self, keyframe_map, settings: SequenceSettings = SequenceSettings(),
                 tracks: Optional[SessionTracks] = None, seed: int = 0, threads: int = 1):
        threadpool_limits(threads, user_api="blas")
        self.map = keyframe_map
        self.settings = settings
        self._nominal_speed = math.sqrt(settings.speed_min * settings.speed_max)
        speeds = np.geomspace(settings.speed_min, settings.speed_max, settings.speed_steps) \
            if settings.speed_steps > 1 else np.array([self._nominal_speed])
        directions = (1, -1) if settings.reverse else (1,)
        self._speeds = np.array([s for _ in directions for s in speeds])
        self._directions = np.array([d for d in directions for _ in speeds])
        self._rng = np.random.default_rng(seed)
        self._frames: Deque[_QueryFrame] = deque()
        self._free_rows = list(range(settings.length))
        self.tracks = tracks if tracks is not None else SessionTracks(keyframe_map)
        self._sample: Optional[np.ndarray] = None
        self._sample_size = -1
        self._restart: Optional[str] = RESTART_START
        self.last: Optional[SequenceResult] = None
        self._reset_cache()

    def reset(self) -> None:
        """Forget the buffered frames; the next frame starts a new sequence."""
        self._drop_frames()
        self._restart = RESTART_RESET

    def update(self, stamp: float, descriptor: np.ndarray, shortlist: Sequence[int],
               shortlist_scores: Sequence[float], position: Optional[Sequence[float]] = None
               ) -> SequenceResult:
        """Add the frame at `stamp` and rank hypotheses ending near the shortlists' keyframes.

        `shortlist`, `shortlist_scores`: the frame's top-k keyframe ids and cosine scores, best
        first (ids < 0 are ignored). `position` (x, y, z of the robot in any fixed frame, e.g.
        odom) lets the sequence step by travelled distance, so a robot that stops or changes
        speed keeps its hypothesis.
        """
        self.tracks.sync()
        restart = self._restart_reason(stamp)
        if restart is not None:
            self._drop_frames()
        xyz = None if position is None else np.asarray(position, dtype=np.float64).reshape(-1)[:3]
        if (xyz is not None and self._frames and self._frames[0].position is not None
                and np.linalg.norm(xyz - self._frames[0].position) < self.settings.min_step_m):
            self._release(self._frames.popleft())
        if len(self._frames) == self.settings.length:
            self._release(self._frames.pop())
        query = np.ascontiguousarray(descriptor, dtype=np.float32).reshape(-1)
        mean, sigma = self._normalization(query)
        row = self._free_rows.pop()
        self._valid[row] = False
        kept = [(int(k), float(v)) for k, v in zip(shortlist, shortlist_scores) if k >= 0]
        ids = np.array([k for k, _ in kept], dtype=np.int64)
        floor = (min(v for _, v in kept) - mean) / sigma if kept else 0.0
        self._frames.appendleft(_QueryFrame(float(stamp), xyz, query, mean, sigma, ids, floor, row))
        step = STEP_DISTANCE if all(f.position is not None for f in self._frames) else STEP_TIME
        ranked = self._rank(step)
        margin, length = self._margin(ranked, step), len(self._frames)
        warmup = self.settings.warmup_length
        evidence = margin * math.sqrt(min(length, warmup) / warmup)
        self.last = SequenceResult(self._agreed_end_first(ranked, step), margin, length, step,
                                   restart, evidence)
        return self.last

    def _restart_reason(self, stamp: float) -> Optional[str]:
        reason, self._restart = self._restart, None
        if reason is None and self._frames:
            last = self._frames[0].stamp
            if not stamp > last:
                reason = RESTART_OUT_OF_ORDER
            elif stamp - last > self.settings.max_gap_s:
                reason = RESTART_GAP
        return reason

    def _drop_frames(self) -> None:
        while self._frames:
            self._release(self._frames.pop())

    def _release(self, frame: _QueryFrame) -> None:
        self._free_rows.append(frame.row)

    def _normalization(self, query: np.ndarray) -> Tuple[float, float]:
        """Mean and spread of the query's similarity to the map at large (a keyframe sample)."""
        size = len(self.map)
        if size != self._sample_size and (size <= NORMALIZATION_SAMPLE or size > 2 * self._sample_size):
            ids = np.arange(size) if size <= NORMALIZATION_SAMPLE else \
                np.sort(self._rng.choice(size, NORMALIZATION_SAMPLE, replace=False))
            self._sample = self.map.descriptors(ids)
            self._sample_size = size
        if self._sample is None or len(self._sample) < 2:
            return 0.0, 1.0
        similarities = self._sample @ query
        return float(similarities.mean()), max(float(similarities.std()), MIN_SIGMA)

    def _offsets(self, step: str) -> np.ndarray:
        """How far behind the current frame each buffered frame lies (s or m), newest first."""
        frames = self._frames
        if step == STEP_TIME:
            return np.array([frames[0].stamp - f.stamp for f in frames])
        hops = [np.linalg.norm(a.position - b.position) for a, b in zip(frames, list(frames)[1:])]
        return np.concatenate([[0.0], np.cumsum(hops)])

    def _end_candidates(self, offsets: Dict[str, np.ndarray]) -> np.ndarray:
        """Keyframe ids where hypotheses may end: shortlists carried forward at nominal speed."""
        ends = [self._frames[0].shortlist]
        for i, frame in enumerate(list(self._frames)[1:], start=1):
            if not len(frame.shortlist):
                continue
            sessions = self.tracks.session_of[frame.shortlist]
            for s in np.unique(sessions):
                track = self.tracks.track(s)
                step = _track_step(STEP_DISTANCE if STEP_DISTANCE in offsets else STEP_TIME, track)
                coords = track.coordinates(step)
                ids = frame.shortlist[sessions == s]
                for direction in np.unique(self._directions):
                    ahead = direction * self._nominal_speed * offsets[step][i]
                    target = coords[self.tracks.position_of[ids]] + ahead
                    ends.append(track.ids[_nearest(coords, target)])
        return np.unique(np.concatenate(ends))

    def _rank(self, step: str) -> List[Hypothesis]:
        """Best hypothesis per end keyframe, best first."""
        offsets = {STEP_TIME: self._offsets(STEP_TIME)}
        if step == STEP_DISTANCE:
            offsets[STEP_DISTANCE] = self._offsets(STEP_DISTANCE)
        ends = self._end_candidates(offsets)
        if not len(ends):
            return []
        rows = np.array([f.row for f in self._frames])
        means = np.array([f.mean for f in self._frames])
        sigmas = np.array([f.sigma for f in self._frames])
        plans = []
        for s in np.unique(self.tracks.session_of[ends]):
            track = self.tracks.track(s)
            track_step = _track_step(step, track)
            coords, spacing = track.coordinates(track_step), track.spacing[track_step]
            end_ids = ends[self.tracks.session_of[ends] == s]
            signed = (self._directions * self._speeds)[None, :, None]
            ends_at = coords[self.tracks.position_of[end_ids]][:, None, None]
            targets = ends_at - signed * offsets[track_step][None, None, :]
            inside = (targets >= coords[0] - spacing) & (targets <= coords[-1] + spacing)
            inside[:, :, 0] = True
            plans.append((end_ids, track.ids[_nearest(coords, targets)], inside))
        columns = self._columns(np.unique(np.concatenate([p[1][p[2]] for p in plans])))
        all_ends, scores, best_speed, covered = [], [], [], []
        for end_ids, keyframes, inside in plans:
            sims = self._cache[rows[None, None, :], columns(keyframes)]
            z = np.where(inside, (sims - means) / sigmas, 0.0)
            mean_z = z.sum(axis=2) / inside.sum(axis=2)
            pick = np.argmax(mean_z, axis=1)
            all_ends.append(end_ids)
            scores.append(mean_z[np.arange(len(end_ids)), pick])
            best_speed.append(pick)
            covered.append(inside.sum(axis=2)[np.arange(len(end_ids)), pick])
        ends, scores = np.concatenate(all_ends), np.concatenate(scores)
        picks, covered = np.concatenate(best_speed), np.concatenate(covered)
        order = np.argsort(-scores, kind="stable")
        current = self._cache[rows[0], columns(ends)]
        error = END_SCALE / math.sqrt(max(int(covered[order[0]]), 1))
        weights = np.exp(-0.5 * ((scores[order[0]] - scores) / error) ** 2)
        return [Hypothesis(int(ends[i]), float(scores[i]), float(current[i]),
                           float(self._speeds[picks[i]]), int(self._directions[picks[i]]),
                           int(covered[i]), float(weights[i])) for i in order]

    def _agreed_end_first(self, ranked: List[Hypothesis], step: str) -> List[Hypothesis]:
        """`ranked` with the end nearest the weighted mean position of the top's neighbours first."""
        if len(ranked) < 2:
            return ranked
        top = ranked[0].keyframe_id
        near = np.flatnonzero(~self._elsewhere(top, [h.keyframe_id for h in ranked], step)).tolist()
        track = self.tracks.track(self.tracks.session_of[top])
        coords = track.coordinates(_track_step(step, track))
        ids = np.array([ranked[i].keyframe_id for i in near])
        where = coords[self.tracks.position_of[ids]]
        weights = np.array([ranked[i].weight for i in near])
        agreed = near[int(np.argmin(np.abs(where - weights @ where / weights.sum())))]
        return [ranked[agreed]] + ranked[:agreed] + ranked[agreed + 1:]

    def _reset_cache(self) -> None:
        self._cache = np.zeros((self.settings.length, CACHE_COLUMNS), np.float32)
        self._valid = np.zeros((self.settings.length, CACHE_COLUMNS), bool)
        self._column_of: Dict[int, int] = {}

    def _columns(self, keyframes: np.ndarray):
        """Make sure every buffered frame's similarity to `keyframes` is cached; return a lookup."""
        new = [int(k) for k in keyframes if int(k) not in self._column_of]
        if len(self._column_of) + len(new) > CACHE_COLUMNS:
            self._reset_cache()
            new = [int(k) for k in keyframes]
        for k in new:
            self._column_of[k] = len(self._column_of)
        cols = np.array([self._column_of[int(k)] for k in keyframes], dtype=np.int64)
        rows = np.array([f.row for f in self._frames])
        missing = ~self._valid[rows[:, None], cols[None, :]]
        needed = missing.any(axis=0)
        if needed.any():
            vectors = self.map.descriptors(keyframes[needed])
            for frame, row_missing in zip(self._frames, missing[:, needed]):
                if row_missing.any():
                    slots = cols[needed][row_missing]
                    self._cache[frame.row, slots] = vectors[row_missing] @ frame.descriptor
                    self._valid[frame.row, slots] = True
        lookup = np.full(int(keyframes.max()) + 1, -1, dtype=np.int64)
        lookup[keyframes] = cols
        return lambda ids: lookup[ids]

    def _margin(self, ranked: List[Hypothesis], step: str) -> float:
        """Top score minus that of the best hypothesis ending elsewhere, or of the unseen bound."""
        if not ranked:
            return float("-inf")
        elsewhere = np.flatnonzero(self._elsewhere(ranked[0].keyframe_id,
                                                   [h.keyframe_id for h in ranked[1:]], step))
        if len(elsewhere):
            return ranked[0].score - ranked[1 + int(elsewhere[0])].score
        return ranked[0].score - float(np.mean([f.floor for f in self._frames]))

    def _elsewhere(self, keyframe_id: int, others, step: str) -> np.ndarray:
        """(len(others),) bool: which keyframes lie outside the rival window of `keyframe_id`
        (another session, or beyond the window in metres when both have poses and the step is
        distance, in seconds otherwise); read from the record columns, not per-record objects."""
        records, others = self.map.records, np.asarray(others, dtype=np.int64)
        sessions, stamps, poses = records.session_codes, records.stamps, records.poses
        apart_s = np.abs(stamps[others] - stamps[keyframe_id]) > self.settings.rival_window_s
        if step == STEP_DISTANCE:
            delta = poses[others, :3] - poses[keyframe_id, :3]
            metric = ~np.isnan(delta).any(axis=1)
            apart_m = np.linalg.norm(np.where(metric[:, None], delta, 0.0), axis=1)
            apart_s = np.where(metric, apart_m > self.settings.rival_window_m, apart_s)
        return (sessions[others] != sessions[keyframe_id]) | apart_s


def _track_step(step: str, track) -> str:
    """Distance stepping needs poses on the track too; otherwise step by time."""
    return STEP_DISTANCE if step == STEP_DISTANCE and track.has_distance else STEP_TIME


def _nearest(sorted_values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the value nearest to each target in an ascending, non-empty array."""
    if len(sorted_values) == 1:
        return np.zeros(np.shape(targets), dtype=np.int64)
    right = np.clip(np.searchsorted(sorted_values, targets), 1, len(sorted_values) - 1)
    left = right - 1
    closer_left = np.abs(targets - sorted_values[left]) <= np.abs(sorted_values[right] - targets)
    return np.where(closer_left, left, right)
