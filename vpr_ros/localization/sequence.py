"""Online sequence matching: decide on the robot's last L frames, not on one (SeqSLAM family).

A hypothesis says "the last L query frames lie along this stretch of one map session, ending at
keyframe e, travelled at relative speed v (in this direction)". Frame i, which lies Δ_i behind
the current one, is paired with the session keyframe nearest to x_e − direction·v·Δ_i. Δ and x
are seconds when stepping by time, metres when the frames come with positions (odometry) and the
session has poses. The hypothesis scores the mean, over the frames it covers, of their
*normalized* similarities z_i(k) = (q_i·d_k − μ_i) / σ_i, where μ_i, σ_i describe how q_i scores
against the map at large (a fixed sample of keyframes): a frame that looks like everywhere counts
for little, a distinctive one for much.

Speeds. By time, v is map seconds per query second: how fast the robot revisits compared with
how fast it mapped, unknown and anything from half to twice as fast, so a wide geometric grid is
searched (`speed_min`..`speed_max`). By distance, v is map metres per odometry metre, close to 1.
A best trajectory at either end of its grid may continue beyond what was searched: it is
reported (`at_speed_edge`) and carries no evidence, since a slope the search cannot bracket is
not a trajectory it can vouch for.

Stops. Frames that show the robot where the newest buffered frame was taken do not make a
sequence longer: by odometry, closer than `min_step_m` to where that frame's spot began; without,
a descriptor at least `stop_similarity` cosine to that spot's first view (a static camera, not a
moving one: every pair of consecutive Gardens Point frames is below 0.86, an image with sensor
noise above 0.9). Such a frame replaces the newest one and the sequence's clock does not advance,
so a robot that parks resumes its trajectory where it stopped instead of being extrapolated along
the map, and a robot creeping at 0.1 m per frame grows its sequence once per `min_step_m`.

End keyframes come from FAISS shortlists: the current frame's, and those of the buffered frames
carried forward to now at every speed tried. Dot products are exact on stored descriptors,
computed once per (frame, keyframe) pair and only for keyframes a hypothesis touches: no
similarity matrix, so the cost does not grow with the map.

The confidence is a uniqueness margin: the best hypothesis' score minus the best score of one
that ends at another place (`SessionTracks.apart`: by position when keyframes have poses, else by
place along the route, which links across sessions make shared). A lone frame that matches the
wrong place well is outvoted by its neighbours; a route that looks alike in two places yields a
small margin and is not accepted. When no hypothesis ending elsewhere was seen, the rival is
bounded instead: a keyframe outside frame i's shortlist scores at most that shortlist's last
similarity, so no unseen trajectory beats the mean of those.

Where along the stretch the robot is comes from the hypotheses that end near the best one. A
slower line ending a few keyframes behind fits the older frames almost as well as the right one
(they pivot about the middle of the window), so the top score alone picks between near-ties by
noise. Each end is weighted by how far its score falls short of the best, in units of
END_SCALE times the standard error of a mean of n unit z-scores (1/sqrt(n)); weighted by the
recent frames' scores, the end nearest the weighted mean position along the track is reported
first. Weighted by the whole window's, the same mean must land within END_AGREEMENT keyframes
of it: when the two disagree (right after a speed change, or where the map's stretch matches
the query's at another pace), where along the stretch the robot is remains uncertain, and the
sequence carries no evidence (`end_uncertain`): a loop closure to a neighbouring keyframe is
still a wrong one.

Pace. A trajectory claims that the robot passed the keyframes it pairs with its frames, one
after another; then the camera's view changed along the window about as much as the map's does
along those keyframes. A look-alike stretch breaks this: a robot driving fast through unmapped
corridors (its view changing a lot from frame to frame) is best explained by a slow line through
a generic stretch of the map whose keyframes barely differ. The pace is the mean cosine distance
between consecutive paired keyframes over that between consecutive frames; a reported
trajectory below `min_pace` carries no evidence (`pace_mismatch`). On Gardens Point places 0-99,
right trajectories have paces of 0.78-1.27 (1st to 99th percentile of each pair of traversals),
the false loop closures of a robot driving off the map 0.27-0.55 (`python
bench/sequence_pace.py`).
"""
import math
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from threadpoolctl import threadpool_limits

from vpr_ros.localization.tracks import STEP_DISTANCE, STEP_TIME, SessionTracks

NORMALIZATION_SAMPLE = 256
MIN_SIGMA = 1e-3
END_SCALE = 0.25
"""Ends within a quarter of the score's standard error weigh alike: overlapping trajectories
differ far more precisely than one mean is known (chosen on Gardens Point places 0-99 for the
pose covariance, 2-sigma coverage 0.98 and 0.99; see docs/results.md)."""

END_AGREEMENT = 1
"""Keyframes along the track by which the end the recent frames place and the end the whole window
places may differ before the sequence's evidence is void (`end_uncertain`). With it, the
validation of `python bench/sequence_defaults.py` as it stood then (night revisits of Gardens
Point places 0-99, Nordland) accepted 0.862 of steady-speed genuine frames at threshold 1.4 with
no wrong one, against 0.775 without (recent frames weighed over 7 frames; docs/results.md)."""

RESTART_START = "start"
RESTART_GAP = "gap"
RESTART_OUT_OF_ORDER = "out_of_order"
RESTART_RESET = "reset"


@dataclass(frozen=True)
class SequenceSettings:
    """Knobs of the matcher; EngineConfig validates them and mirrors them as `sequence_*`.

    length: frames per sequence (L). speed_min/max, speed_steps: relative speeds tried when
    stepping by time (map seconds per query second, geometric steps); distance_speed_min/max,
    distance_speed_steps: the same when stepping by distance (map metres per odometry metre).
    reverse: also try travel against the map's direction. rival_window_s / rival_window_m: a
    rival must end at a place this far from the best (seconds of map time, or metres when
    keyframes have poses). min_step_m, stop_similarity: a frame that shows the robot where the
    newest frame was (closer than min_step_m by odometry; else a descriptor at least this
    cosine-similar; 1 turns the view test off) replaces it. max_gap_s: a longer gap between
    frames restarts the sequence. recent_frames: where the robot is now leans on the last
    frames, whose weights fall by e every this many frames. min_pace: the reported trajectory's
    keyframes must change at least this share as much as its frames do, one to the next (0: no
    pace test).
    warmup_length: a trajectory over n < warmup_length frames (after a start or a restart, or
    with the older frames before the start of the mapped stretch) has its margin discounted by
    sqrt(n / warmup_length) (see `SequenceResult.evidence`); 0: the sequence's length, so a
    margin counts as many of its own standard errors at any length.
    """

    length: int = 30
    warmup_length: int = 30
    speed_min: float = 0.4
    speed_max: float = 2.5
    speed_steps: int = 11
    distance_speed_min: float = 0.8
    distance_speed_max: float = 1.25
    distance_speed_steps: int = 5
    reverse: bool = False
    rival_window_s: float = 10.0
    rival_window_m: float = 10.0
    min_step_m: float = 1.0
    stop_similarity: float = 0.9
    max_gap_s: float = 5.0
    recent_frames: float = 4.0
    min_pace: float = 0.7

    @property
    def warmup(self) -> int:
        """Frames below which the margin is discounted (`warmup_length`, at most the length;
        the length for 0)."""
        return min(self.warmup_length or self.length, self.length)


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
    the unseen-rival bound; -inf when nothing was ranked). `length`: frames in the sequence now.
    `step`: "time" or "distance". `restart`: why the sequence started afresh on this frame
    (start, gap, out_of_order, reset), else None. `at_speed_edge`: the top trajectory runs at the
    slowest or fastest speed searched. `end_uncertain`: the ends the recent frames and the whole
    window place differ by more than END_AGREEMENT keyframes. `pace`: how much the reported
    trajectory's keyframes change from one to the next, over how much its frames do (inf when
    fewer than two pairs lie on the track); `pace_mismatch`: it is below `min_pace`.
    `evidence`: what a threshold applies to, the margin times sqrt(min(n, warmup_length) /
    warmup_length), n the frames the reported trajectory covers on its track (noise on a mean of
    n frames shrinks as 1/sqrt(n), so a short sequence after a restart, or one whose older
    frames lie before the start of the mapped stretch, as when a robot drives into the map from
    unmapped ground, must stand out by as many of its own standard errors as a `warmup_length`
    one), and 0 at a speed edge, with an uncertain end or with a pace mismatch.
    """

    ranked: List[Hypothesis]
    margin: float
    length: int
    step: str
    restart: Optional[str] = None
    evidence: float = float("-inf")
    at_speed_edge: bool = False
    end_uncertain: bool = False
    pace: float = float("inf")
    pace_mismatch: bool = False

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
                "at_speed_edge": bool(self.at_speed_edge),
                "end_uncertain": bool(self.end_uncertain),
                "pace": round(self.pace, 4) if math.isfinite(self.pace) else None,
                "pace_mismatch": bool(self.pace_mismatch),
                "frames_covered": None if best is None else int(best.length)}


@dataclass
class _QueryFrame:
    stamp: float
    clock: float
    """Seconds since the sequence began with stops taken out: time stepping reads Δ from it."""
    position: Optional[np.ndarray]
    spot_position: Optional[np.ndarray]
    spot_view: np.ndarray
    """Where and how the spot this frame stands for was first seen (the stop test's reference)."""
    descriptor: np.ndarray
    mean: float
    sigma: float
    shortlist: np.ndarray
    floor: float
    row: int
    change: float
    """Cosine distance to the frame buffered before it (0 for a sequence's first): the pace
    test's view side."""


class _SimilarityCache:
    """z_i(k) = (q_i·d_k − μ_i) / σ_i for buffered frame rows i and keyframes k, computed once
    per pair.

    Columns are assigned to keyframes on first use. When the cache is full, the columns of the
    keyframes asked for now are packed to the front and the rest dropped; it doubles when the
    keyframes of one lookup alone do not fit.
    """

    def __init__(self, rows: int, columns: int = 8192):
        self.values = np.zeros((rows, columns), np.float32)
        self.valid = np.zeros((rows, columns), bool)
        self.column_of = np.full(0, -1, np.int64)
        self.keyframe_of = np.full(columns, -1, np.int64)
        self.used = 0

    def forget_row(self, row: int) -> None:
        self.valid[row] = False

    def lookup(self, keyframes: np.ndarray, frames: Sequence[_QueryFrame], keyframe_map) -> np.ndarray:
        """Columns of `keyframes` (unique ids) with every frame's z filled in; the returned
        array maps any keyframe id up to the map size to its column (-1: not cached)."""
        if len(self.column_of) < len(keyframe_map):
            self.column_of = np.concatenate([self.column_of, np.full(
                len(keyframe_map) - len(self.column_of), -1, np.int64)])
        new = keyframes[self.column_of[keyframes] < 0]
        if self.used + len(new) > self.values.shape[1]:
            self._keep_only(keyframes[self.column_of[keyframes] >= 0], len(new))
        self.column_of[new] = self.used + np.arange(len(new))
        self.keyframe_of[self.used:self.used + len(new)] = new
        self.used += len(new)
        cols = self.column_of[keyframes]
        rows = np.array([f.row for f in frames])
        missing = ~self.valid[rows[:, None], cols[None, :]]
        needed = missing.any(axis=0)
        if needed.any():
            vectors = keyframe_map.descriptors(keyframes[needed])
            for frame, row_missing in zip(frames, missing[:, needed]):
                if row_missing.any():
                    slots = cols[needed][row_missing]
                    similarity = vectors[row_missing] @ frame.descriptor
                    self.values[frame.row, slots] = (similarity - frame.mean) / frame.sigma
                    self.valid[frame.row, slots] = True
        return self.column_of

    def _keep_only(self, keep: np.ndarray, room: int) -> None:
        """Pack the columns of `keep` to the front, drop the rest, and make room for `room` more."""
        old = self.column_of[keep]
        self.column_of[self.keyframe_of[:self.used]] = -1
        size = max(self.values.shape[1], 1 << int(len(keep) + room - 1).bit_length())
        values, valid = np.zeros((len(self.values), size), np.float32), np.zeros((len(self.values), size), bool)
        values[:, :len(keep)], valid[:, :len(keep)] = self.values[:, old], self.valid[:, old]
        self.values, self.valid = values, valid
        self.keyframe_of = np.full(size, -1, np.int64)
        self.keyframe_of[:len(keep)] = keep
        self.column_of[keep] = np.arange(len(keep))
        self.used = len(keep)

    def gather(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """values[rows, columns] broadcast (rows along the last axis), as one flat take."""
        return np.take(self.values.reshape(-1), rows * self.values.shape[1] + columns)


class SequenceMatcher:
    """Scores trajectory hypotheses over the last `settings.length` frames against a KeyframeMap.

    Call `update` once per frame, in stamp order, with its descriptor and FAISS shortlist;
    `last` is the latest result; `tracks` are the map's sessions as it walks them (the engine's
    pose estimate reads keyframe spacing from them too). `threads` caps numpy's BLAS threads for the process: per-frame
    products are too small to split, and OpenBLAS threads next to FAISS's OpenMP ones made a
    200 x 13312 matrix-vector product 20x slower on a 2-core machine (15.6 vs 0.7 ms).
    """

    def __init__(self, keyframe_map, settings: SequenceSettings = SequenceSettings(),
                 seed: int = 0, threads: int = 1):
        threadpool_limits(threads, user_api="blas")
        self.map = keyframe_map
        self.settings = settings
        directions = (1, -1) if settings.reverse else (1,)
        self._grids = {STEP_TIME: _speed_grid(settings.speed_min, settings.speed_max,
                                              settings.speed_steps, directions),
                       STEP_DISTANCE: _speed_grid(settings.distance_speed_min,
                                                  settings.distance_speed_max,
                                                  settings.distance_speed_steps, directions)}
        self._rng = np.random.default_rng(seed)
        self._frames: Deque[_QueryFrame] = deque()
        self._free_rows = list(range(settings.length))
        self._last_stamp: Optional[float] = None
        self.tracks = SessionTracks(keyframe_map, settings.rival_window_s, settings.stop_similarity)
        self._sample: Optional[np.ndarray] = None
        self._sample_size = -1
        self._restart: Optional[str] = RESTART_START
        self._cache = _SimilarityCache(settings.length)
        self.last: Optional[SequenceResult] = None

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
        odom; None when unknown for this frame) lets the sequence step by travelled distance, so
        a robot that stops or changes speed keeps its hypothesis.
        """
        self.tracks.sync()
        restart = self._restart_reason(stamp)
        if restart is not None:
            self._drop_frames()
        xyz = None if position is None else np.asarray(position, dtype=np.float64).reshape(-1)[:3]
        query = np.ascontiguousarray(descriptor, dtype=np.float32).reshape(-1)
        self._add(stamp, xyz, query, shortlist, shortlist_scores)
        step = self._step()
        ranking = self._rank(step)
        margin, length = self._margin(ranking), len(self._frames)
        warmup = self.settings.warmup
        ranked, end_agrees, first = self._agreed_end_first(ranking, step)
        pace = self._pace(ranking.paths[first]) if ranked else float("inf")
        slow = pace < self.settings.min_pace
        void = ranking.at_edge or not end_agrees or slow
        covered = ranked[0].length if ranked else length
        evidence = 0.0 if void else margin * math.sqrt(min(covered, warmup) / warmup)
        self.last = SequenceResult(ranked, margin, length, step, restart, evidence,
                                   ranking.at_edge, not end_agrees, pace, slow)
        return self.last

    def _add(self, stamp: float, xyz: Optional[np.ndarray], query: np.ndarray,
             shortlist: Sequence[int], shortlist_scores: Sequence[float]) -> None:
        """Buffer the frame: it replaces the newest one when the robot has not left that spot."""
        newest = self._frames[0] if self._frames else None
        if newest is not None and self._stationary(newest, xyz, query):
            self._release(self._frames.popleft())
            clock, spot_position, spot_view = newest.clock, newest.spot_position, newest.spot_view
        else:
            if len(self._frames) == self.settings.length:
                self._release(self._frames.pop())
            clock = 0.0 if newest is None else newest.clock + stamp - self._last_stamp
            spot_position, spot_view = xyz, query
        self._last_stamp = float(stamp)
        mean, sigma = self._normalization(query)
        kept = [(int(k), float(v)) for k, v in zip(shortlist, shortlist_scores) if k >= 0]
        ids = np.array([k for k, _ in kept], dtype=np.int64)
        floor = (min(v for _, v in kept) - mean) / sigma if kept else 0.0
        row = self._free_rows.pop()
        self._cache.forget_row(row)
        change = 1.0 - float(query @ self._frames[0].descriptor) if self._frames else 0.0
        self._frames.appendleft(_QueryFrame(float(stamp), clock, xyz, spot_position, spot_view,
                                            query, mean, sigma, ids, floor, row, change))

    def _stationary(self, newest: _QueryFrame, xyz: Optional[np.ndarray], query: np.ndarray) -> bool:
        if xyz is not None and newest.spot_position is not None:
            return float(np.linalg.norm(xyz - newest.spot_position)) < self.settings.min_step_m
        threshold = self.settings.stop_similarity
        return threshold < 1.0 and float(query @ newest.spot_view) >= threshold

    def _restart_reason(self, stamp: float) -> Optional[str]:
        reason, self._restart = self._restart, None
        if reason is None and self._last_stamp is not None:
            if not stamp > self._last_stamp:
                reason = RESTART_OUT_OF_ORDER
            elif stamp - self._last_stamp > self.settings.max_gap_s:
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

    def _step(self) -> str:
        """Distance when most buffered frames (and at least the newest or two) have positions."""
        with_position = sum(f.position is not None for f in self._frames)
        enough = with_position >= min(2, len(self._frames))
        return STEP_DISTANCE if enough and 2 * with_position >= len(self._frames) else STEP_TIME

    def _offsets(self, step: str) -> np.ndarray:
        """How far behind the current frame each buffered frame lies (s or m), newest first.

        By distance, frames without a position (a missed TF lookup) are placed by their clock
        between the frames that have one, or beyond them at the recent pace."""
        clocks = np.array([f.clock for f in self._frames])
        if step == STEP_TIME:
            return clocks[0] - clocks
        known = np.array([f.position is not None for f in self._frames])
        xyz = np.array([f.position for f in self._frames if f.position is not None])
        along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xyz[::-1], axis=0), axis=1))])
        times = clocks[known][::-1]
        coords = np.interp(clocks, times, along)
        if len(times) >= 2 and times[-1] > times[0]:
            pace = (along[-1] - along[0]) / (times[-1] - times[0])
            coords = np.where(clocks > times[-1], along[-1] + pace * (clocks - times[-1]), coords)
            coords = np.where(clocks < times[0], along[0] - pace * (times[0] - clocks), coords)
        return coords[0] - coords

    def _end_candidates(self, offsets: Dict[str, np.ndarray]) -> np.ndarray:
        """Keyframe ids where hypotheses may end: the current shortlist, and the shortlists of
        the buffered frames carried forward to now at every speed tried."""
        ends = [self._frames[0].shortlist]
        shortlists = [(i, f.shortlist) for i, f in enumerate(self._frames) if i and len(f.shortlist)]
        if not shortlists:
            return np.unique(ends[0])
        ids = np.concatenate([s for _, s in shortlists])
        frame_of = np.concatenate([np.full(len(s), i) for i, s in shortlists])
        sessions = self.tracks.session_of[ids]
        for s in np.unique(sessions):
            track = self.tracks.track(s)
            step = _track_step(STEP_DISTANCE if STEP_DISTANCE in offsets else STEP_TIME, track)
            coords = track.coordinates(step)
            mine = sessions == s
            signed = np.prod(self._grids[step], axis=0)
            ahead = signed[None, :] * offsets[step][frame_of[mine]][:, None]
            target = coords[self.tracks.position_of[ids[mine]]][:, None] + ahead
            ends.append(track.ids[_nearest(coords, target)].ravel())
        return np.unique(np.concatenate(ends))

    def _rank(self, step: str) -> "_Ranking":
        """Best hypothesis per end keyframe, best first, with their trajectories (see _Ranking).

        Each end's speed is the best of its grid, then of the two speeds half a grid step either
        side of that one: a speed between grid steps would otherwise misplace the oldest frames
        by up to half a step of the window's span and pull the end off by a keyframe or more.
        """
        offsets = {STEP_TIME: self._offsets(STEP_TIME)}
        if step == STEP_DISTANCE:
            offsets[STEP_DISTANCE] = self._offsets(STEP_DISTANCE)
        ends = self._end_candidates(offsets)
        if not len(ends):
            empty = np.zeros((0, len(self._frames)))
            return _Ranking([], empty.astype(np.int64), empty, np.zeros(0), False)
        rows = np.array([f.row for f in self._frames])
        sessions = [(s, ends[self.tracks.session_of[ends] == s])
                    for s in np.unique(self.tracks.session_of[ends])]
        grid = [self._lay_out(s, step, end_ids, offsets, None) for s, end_ids in sessions]
        column_of = self._cache.lookup(np.concatenate([g[3] for g in grid]), self._frames, self.map)
        picks = []
        for keyframes, inside, signed, _ in grid:
            per_direction = signed.shape[1] // len(np.unique(np.sign(signed)))
            best = self._best(rows, column_of, keyframes, inside, signed)
            at_edge = (per_direction > 1) & np.isin(best[0] % per_direction, (0, per_direction - 1))
            picks.append((best, at_edge))
        refined = [self._lay_out(s, step, end_ids, offsets, best[2])
                   for (s, end_ids), (best, _) in zip(sessions, picks)]
        column_of = self._cache.lookup(np.concatenate([r[3] for r in refined]), self._frames, self.map)
        found = []
        for (s, end_ids), (keyframes, inside, signed, _), (grid_best, at_edge) in zip(sessions, refined, picks):
            half_step = self._best(rows, column_of, keyframes, inside, signed)
            better = half_step[1] > grid_best[1]
            found.append((end_ids,) + tuple(np.where(better.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
                                            for a, b in zip(half_step[1:-1], grid_best[1:-1]))
                         + (np.maximum(half_step[-1], grid_best[-1]), at_edge))
        ends, scores, signed, covered, paths, path_z, recent, edge = (
            np.concatenate(c) for c in zip(*found))
        order = np.argsort(-scores, kind="stable")
        newest = self._frames[0]
        current = self._cache.gather(rows[0], column_of[ends]) * newest.sigma + newest.mean
        error = END_SCALE / math.sqrt(max(int(covered[order[0]]), 1))
        weights = np.exp(-0.5 * ((scores[order[0]] - scores) / error) ** 2)
        ranked = [Hypothesis(int(ends[i]), float(scores[i]), float(current[i]), float(abs(signed[i])),
                             int(np.sign(signed[i])), int(covered[i]), float(weights[i])) for i in order]
        return _Ranking(ranked, paths[order], path_z[order], recent[order], bool(edge[order[0]]))

    def _lay_out(self, session: int, step: str, end_ids: np.ndarray, offsets: Dict[str, np.ndarray],
                 around: Optional[np.ndarray]):
        """Trajectories ending at `end_ids` on one session's track: at every signed speed of the
        grid (`around` None), or half a grid step either side of each end's speed `around`.
        Returns the keyframe paired with each frame (n, speeds, L), whether that pairing falls
        on the track, the signed speeds (n, speeds) and the distinct keyframes paired."""
        track = self.tracks.track(session)
        track_step = _track_step(step, track)
        coords, spacing = track.coordinates(track_step), track.spacing[track_step]
        speeds, directions = self._grids[track_step]
        if around is None:
            signed = (directions * speeds)[None, :]
        else:
            half = math.sqrt(speeds.max() / speeds.min()) ** (1.0 / max(len(np.unique(speeds)) - 1, 1))
            magnitude = np.clip(np.abs(around)[:, None] * np.array([1.0 / half, half]),
                                speeds.min(), speeds.max())
            signed = np.sign(around)[:, None] * magnitude
        ends_at = coords[self.tracks.position_of[end_ids]][:, None, None]
        targets = ends_at - signed[:, :, None] * offsets[track_step][None, None, :]
        inside = (targets >= coords[0] - spacing) & (targets <= coords[-1] + spacing)
        inside[:, :, 0] = True
        at = _nearest(coords, targets)
        hit = np.zeros(len(track.ids), bool)
        hit[at[inside]] = True
        return track.ids[at], inside, np.broadcast_to(signed, targets.shape[:2]), track.ids[hit]

    def _best(self, rows: np.ndarray, column_of: np.ndarray, keyframes: np.ndarray,
              inside: np.ndarray, signed: np.ndarray):
        """Per end, the best of its laid-out trajectories (ties to the middle speed): (its
        index, mean z, signed speed, frames on the track, paired keyframes with -1 off the
        track, each frame's z), and the best recency-weighted mean z of any of them."""
        z = np.where(inside, self._cache.gather(rows, column_of[keyframes]), 0.0)
        counts = inside.sum(axis=2)
        mean_z = z.sum(axis=2) / counts
        order = _middle_out(signed.shape[1])
        pick = order[np.argmax(mean_z[:, order], axis=1)]
        one = np.arange(len(pick))
        age = _recency(len(rows), self.settings.recent_frames)
        recent = (z * age).sum(axis=2) / (inside * age).sum(axis=2)
        return (pick, mean_z[one, pick], signed[one, pick], counts[one, pick],
                np.where(inside[one, pick], keyframes[one, pick], -1), z[one, pick],
                recent.max(axis=1))

    def _agreed_end_first(self, ranking: "_Ranking", step: str
                          ) -> Tuple[List[Hypothesis], bool, int]:
        """The ranked hypotheses with the end where the robot is now first: among those that end
        at the top's place, the one nearest the weighted mean position of the ends that best
        explain the *recent* frames; and whether the end nearest the mean position weighted by
        the whole window's scores (`Hypothesis.weight`) lies within END_AGREEMENT keyframes; and
        the index in `ranking` of the end put first.

        The top score says which stretch of the map the sequence lies on; where along it the
        robot is now, the last frames tell. Lines that pivot about the middle of the window tie
        in score, and after a speed change the line that fits the older frames wins while its
        end lags. So each end weighs by its best recency-weighted mean z (frames count
        exp(-age / recent_frames)): exp(-((best - its) / (END_SCALE / sqrt(n)))^2 / 2), n the
        effective count of those frame weights.
        """
        ranked = ranking.ranked
        if len(ranked) < 2:
            return ranked, True, 0
        top = ranked[0].keyframe_id
        ids = np.array([h.keyframe_id for h in ranked])
        session = self.tracks.session_of[top]
        near = np.flatnonzero((self.tracks.session_of[ids] == session) & ~self._apart(top, ids))
        age = _recency(ranking.paths.shape[1], self.settings.recent_frames)
        recent = ranking.recent[near]
        error = END_SCALE * np.sqrt((age ** 2).sum()) / age.sum()
        recent_weights = np.exp(-0.5 * ((recent.max() - recent) / error) ** 2)
        window_weights = np.array([ranked[i].weight for i in near])
        track = self.tracks.track(session)
        index = self.tracks.position_of[ids[near]]
        where = track.coordinates(_track_step(step, track))[index]
        agreed, window = (int(np.argmin(np.abs(where - w @ where / w.sum())))
                          for w in (recent_weights, window_weights))
        first = int(near[agreed])
        ranked = [ranked[first]] + ranked[:first] + ranked[first + 1:]
        return ranked, abs(int(index[agreed]) - int(index[window])) <= END_AGREEMENT, first

    def _pace(self, path: np.ndarray) -> float:
        """Mean cosine distance between consecutive keyframes of `path` (one per buffered frame,
        -1 off the track) over that between the frames they pair, where both lie on the track."""
        on = np.flatnonzero(path >= 0)
        pairs = np.flatnonzero(np.diff(on) == 1)
        if len(pairs) < 2:
            return float("inf")
        keyframes = self.map.descriptors(path[on])
        mapped = 1.0 - np.einsum("ij,ij->i", keyframes[pairs], keyframes[pairs + 1])
        view = [self._frames[i].change for i in on[pairs]]
        return float(mapped.mean() / max(float(np.mean(view)), MIN_SIGMA))

    def _margin(self, ranking: "_Ranking") -> float:
        """Top score minus that of the best rival, or of the unseen bound when none was seen.

        A rival ends at another place than the top trajectory, and it is scored on its own
        evidence: frames it pairs with a keyframe at the place the top trajectory pairs them
        with count 0. A line that crosses the top one (a steep or slow one ending just outside
        the window) would otherwise borrow the top's frames where they cross and tax every
        decision for the width of the speed search.
        """
        ranked = ranking.ranked
        if not ranked:
            return float("-inf")
        top, others, z = ranking.paths[0], ranking.paths[1:], ranking.path_z[1:]
        paired = (top >= 0) & (others >= 0)
        apart = self._apart(np.where(paired, top, 0), np.where(paired, others, 0)) | ~paired
        ends_apart = np.flatnonzero(apart[:, 0])
        if len(ends_apart):
            covered = np.array([h.length for h in ranked[1:]])[ends_apart]
            own = (z[ends_apart] * apart[ends_apart]).sum(axis=1) / covered
            return ranked[0].score - float(own.max())
        return ranked[0].score - float(np.mean([f.floor for f in self._frames]))

    def _apart(self, keyframes, others) -> np.ndarray:
        return self.tracks.apart(keyframes, others, self.settings.rival_window_s,
                                 self.settings.rival_window_m)


class _Ranking(NamedTuple):
    """Hypotheses best first, and along each: `paths` (n, L) the keyframe paired with each
    buffered frame (-1 beyond the track), `path_z` (n, L) that frame's z, `recent` (n,) the best
    recency-weighted mean z of any trajectory to that end; `at_edge`: the top one runs at the
    slowest or fastest speed of its grid."""

    ranked: List[Hypothesis]
    paths: np.ndarray
    path_z: np.ndarray
    recent: np.ndarray
    at_edge: bool


def _recency(count: int, recent_frames: float) -> np.ndarray:
    """Weights of the buffered frames, newest first, for where the robot is now."""
    return np.exp(-np.arange(count) / recent_frames)


def _speed_grid(low: float, high: float, steps: int, directions) -> np.ndarray:
    """(2, n): speeds (geometric from low to high; their geometric mean for one step) and the
    direction of each, every speed once per direction."""
    speeds = np.geomspace(low, high, steps) if steps > 1 else np.array([math.sqrt(low * high)])
    return np.array([[s for _ in directions for s in speeds],
                     [d for d in directions for _ in speeds]], dtype=np.float64)


def _middle_out(count: int) -> np.ndarray:
    """Speed indices from the middle of the grid outwards: argmax over them breaks ties (a
    single frame fits every speed alike) towards the nominal speed, not the grid's edge."""
    return np.argsort(np.abs(np.arange(count) - (count - 1) / 2), kind="stable")


def _track_step(step: str, track) -> str:
    """Distance stepping needs poses on the track too; otherwise step by time."""
    return STEP_DISTANCE if step == STEP_DISTANCE and track.has_distance else STEP_TIME


def _nearest(sorted_values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the value nearest to each target in an ascending (ties allowed), non-empty array."""
    if len(sorted_values) == 1:
        return np.zeros(np.shape(targets), dtype=np.int64)
    right = np.clip(np.searchsorted(sorted_values, targets), 1, len(sorted_values) - 1)
    left = right - 1
    closer_left = np.abs(targets - sorted_values[left]) <= np.abs(sorted_values[right] - targets)
    return np.where(closer_left, left, right)
