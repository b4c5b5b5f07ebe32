"""Every knob of the per-frame engine in one dataclass, with defaults, ranges and YAML loading."""
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import yaml

from vpr_ros.localization.sequence import SequenceSettings
from vpr_ros.localization.verification import FEATURE_TYPES

MODES = ("localization", "mapping")
RERANK_METHODS = ("none", "place_voting")
DECISIONS = ("single", "chain", "sequence")
_SEQUENCE = SequenceSettings()
"""The matcher's defaults: the `sequence_*` fields (and `temporal_max_gap_s`) take theirs from it."""


@dataclass
class EngineConfig:
    """Engine parameters. Times are seconds in the frames' clock; scores are cosine similarities.

    mode: "localization" (fixed map) or "mapping" (the map grows by the keyframe policy).
    session, condition: tags stored with keyframes added in mapping mode ("night", "rain", ...).
    top_k: neighbours retrieved per frame (candidates in every decision).
    score_threshold: single and chain decisions: a match needs at least this cosine similarity.
        0.44 is the lowest score above every wrong single-frame match of the default model on
        Gardens Point places 0-99 (both pairs; `python bench/sequence_defaults.py`); tune it on
        an eval PR curve.
    exclusion_window_s: skip keyframes this engine added in the last N s (it always "matches"
        where it just was); keyframes of earlier sessions are never excluded.
    exclusion_distance_m: with poses, also skip them until the robot has travelled this far since
        adding them (a parked robot never closes a loop onto itself; 0 disables). `reset` keeps
        both exclusions: the robot's own recent keyframes are never loop closures.
    rerank: "place_voting" orders candidates by the summed scores of neighbours that lie within
        `place_window_s` of each other on the same session (a place seen by several keyframes beats
        an isolated look-alike); "none" keeps the raw cosine order. Default "none": on Gardens
        Point voting lowered single-frame R@1 (see rerank.py); temporal consistency does that job.
    decision: how a frame is accepted. "single": its best match clears `score_threshold`.
        "chain": also `temporal_consecutive` frames in a row matched a coherent stretch of the map
        (ORB-SLAM-style). "sequence" (default): the last `sequence_length` frames are matched as
        one trajectory through the map and accepted when its uniqueness margin clears
        `sequence_threshold` (see sequence.py and docs/ros_interface.md).
    temporal_consecutive: with decision "chain", frames in a row that must agree.
    temporal_max_jump_s, temporal_speed_ratio: consecutive chain matches are coherent when they are
        on the same session and their keyframe stamps differ by at most
        max_jump + speed_ratio x (query time step), i.e. the robot moves along the map at a
        plausible speed (either direction). A query gap over `temporal_max_gap_s` breaks the chain
        and restarts a sequence.
    sequence_length: frames per sequence; sequence_warmup_length: a trajectory over n frames of
        the map's track, fewer than this (after a (re)start, or while entering the map), must
        clear the threshold with its margin discounted by sqrt(n / sequence_warmup_length) (a
        short one is more easily unique by chance); 0 or more
        than the length: the sequence length; 30 by default (`python bench/sequence_defaults.py`).
        sequence_speed_min/max, sequence_speed_steps: relative speeds tried when stepping by time
        (map seconds per query second: 0.4-2.5 covers a robot revisiting at half to twice the
        speed it mapped at, with a step to spare, since a best trajectory at either end of the
        range carries no evidence); sequence_distance_speed_min/max/steps: the same when
        frames come with odometry (map metres per odometry metre, its scale error).
        sequence_reverse: also try travel against the map's direction.
    sequence_threshold: minimum margin (in normalized similarity units) of the best trajectory
        over the best one ending elsewhere; sequence_rival_window_s / _m: "elsewhere" means
        farther than this along the session (map seconds, or metres when keyframes have poses).
    sequence_min_step_m: with poses, a frame closer than this to where the newest frame's spot
        began replaces that frame (a parked robot is not a sequence; a creeping one grows it once
        per this distance). sequence_stop_similarity: without poses, a frame at least this
        cosine-similar to the newest frame's spot replaces it, and the sequence's clock waits
        (a stop); mapped keyframes as similar to their predecessor mark the map's stops; 1 turns
        this off. 0.9: every pair of consecutive Gardens Point frames (moving) is below 0.86, a
        frame with sensor noise (σ 2-5 grey levels) is 0.92-0.97 similar to its clean self.
        sequence_recent_frames: where along the matched stretch the robot is now leans on the
        last frames, whose weights fall by e every this many frames (shorter follows a speed
        change sooner, noisier; `python bench/sequence_defaults.py`). sequence_min_pace: the
        reported trajectory's keyframes must change at least this share as much as its frames
        do, one to the next, or it is no evidence (a fast drive through look-alikes matched to
        a slow line through a bland stretch of the map; 0: off; `python
        bench/sequence_defaults.py`).
    verify: run geometric verification on the accepted candidate (needs keyframes with local
        features: build the map with verification on). verification_*: see verification.py.
    keyframe_novelty_threshold: in mapping mode add a keyframe when the best score against the
        whole map is below this; keyframe_interval_s / keyframe_distance_m: ... or when this much
        time / distance (with poses) passed since the last added keyframe (0 disables).
    store_thumbnails, thumbnail_long_side: keep a small JPEG with each keyframe (match images).
    search_threads: FAISS and BLAS threads for the per-frame search and sequence scoring. One
        query is too small to split: on a busy 2-core machine two FAISS threads made a
        100-keyframe search 6x slower (14.6 vs 2.5 ms); see SequenceMatcher for BLAS.
    """

    mode: str = "localization"
    session: str = "session"
    condition: str = ""
    top_k: int = 10
    score_threshold: float = 0.44
    exclusion_window_s: float = 30.0
    exclusion_distance_m: float = 10.0
    rerank: str = "none"
    place_window_s: float = 2.0
    decision: str = "sequence"
    temporal_consecutive: int = 3
    temporal_max_jump_s: float = 3.0
    temporal_speed_ratio: float = 3.0
    temporal_max_gap_s: float = _SEQUENCE.max_gap_s
    sequence_length: int = _SEQUENCE.length
    sequence_warmup_length: int = _SEQUENCE.warmup_length
    sequence_speed_min: float = _SEQUENCE.speed_min
    sequence_speed_max: float = _SEQUENCE.speed_max
    sequence_speed_steps: int = _SEQUENCE.speed_steps
    sequence_distance_speed_min: float = _SEQUENCE.distance_speed_min
    sequence_distance_speed_max: float = _SEQUENCE.distance_speed_max
    sequence_distance_speed_steps: int = _SEQUENCE.distance_speed_steps
    sequence_reverse: bool = _SEQUENCE.reverse
    sequence_threshold: float = 1.2
    sequence_rival_window_s: float = _SEQUENCE.rival_window_s
    sequence_rival_window_m: float = _SEQUENCE.rival_window_m
    sequence_min_step_m: float = _SEQUENCE.min_step_m
    sequence_stop_similarity: float = _SEQUENCE.stop_similarity
    sequence_recent_frames: float = _SEQUENCE.recent_frames
    sequence_min_pace: float = _SEQUENCE.min_pace
    verify: bool = False
    verification_features: str = "orb"
    verification_max_features: int = 1000
    verification_min_inliers: int = 25
    verification_ratio: float = 0.8
    verification_ransac_px: float = 3.0
    keyframe_novelty_threshold: float = 0.7
    keyframe_interval_s: float = 10.0
    keyframe_distance_m: float = 2.0
    store_thumbnails: bool = True
    thumbnail_long_side: int = 160
    search_threads: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (bool(self.session), "session must be a non-empty name"),
            (self.top_k >= 1, "top_k must be >= 1"),
            (-1.0 <= self.score_threshold <= 1.0, "score_threshold must be in [-1, 1]"),
            (self.exclusion_window_s >= 0, "exclusion_window_s must be >= 0"),
            (self.exclusion_distance_m >= 0, "exclusion_distance_m must be >= 0"),
            (self.rerank in RERANK_METHODS, f"rerank must be one of {RERANK_METHODS}"),
            (self.place_window_s >= 0, "place_window_s must be >= 0"),
            (self.decision in DECISIONS, f"decision must be one of {DECISIONS}"),
            (self.temporal_consecutive >= 1, "temporal_consecutive must be >= 1"),
            (self.temporal_max_jump_s >= 0 and self.temporal_speed_ratio >= 0,
             "temporal_max_jump_s and temporal_speed_ratio must be >= 0"),
            (self.temporal_max_gap_s > 0, "temporal_max_gap_s must be > 0"),
            (self.sequence_length >= 1, "sequence_length must be >= 1"),
            (self.sequence_warmup_length >= 0,
             "sequence_warmup_length must be >= 0 (0: the sequence length)"),
            *_speed_range_checks("sequence_speed", self.sequence_speed_min,
                                 self.sequence_speed_max, self.sequence_speed_steps),
            *_speed_range_checks("sequence_distance_speed", self.sequence_distance_speed_min,
                                 self.sequence_distance_speed_max,
                                 self.sequence_distance_speed_steps),
            (self.sequence_threshold >= 0, "sequence_threshold must be >= 0"),
            (self.sequence_rival_window_s > 0 and self.sequence_rival_window_m > 0,
             "sequence_rival_window_s and sequence_rival_window_m must be > 0"),
            (self.sequence_min_step_m >= 0, "sequence_min_step_m must be >= 0"),
            (-1 <= self.sequence_stop_similarity <= 1.0,
             "sequence_stop_similarity must be in [-1, 1] (1: no stop detection by view)"),
            (self.sequence_recent_frames > 0, "sequence_recent_frames must be > 0"),
            (self.sequence_min_pace >= 0, "sequence_min_pace must be >= 0 (0: no pace test)"),
            (self.verification_features in FEATURE_TYPES,
             f"verification_features must be one of {FEATURE_TYPES}"),
            (self.verification_min_inliers >= 8, "verification_min_inliers must be >= 8"),
            (0 < self.verification_ratio <= 1, "verification_ratio must be in (0, 1]"),
            (self.verification_ransac_px > 0, "verification_ransac_px must be > 0"),
            (self.verification_max_features >= 8, "verification_max_features must be >= 8"),
            (self.keyframe_interval_s >= 0 and self.keyframe_distance_m >= 0,
             "keyframe_interval_s and keyframe_distance_m must be >= 0"),
            (self.thumbnail_long_side >= 16, "thumbnail_long_side must be >= 16"),
            (self.search_threads >= 1, "search_threads must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid engine config: {message}")

    @classmethod
    def from_dict(cls, data: Optional[dict], **overrides) -> "EngineConfig":
        """Config from a mapping (unknown keys are an error that lists the known ones)."""
        merged = dict(data or {}, **overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown engine config keys {unknown}; known keys: {sorted(known)}")
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path, **overrides) -> "EngineConfig":
        """Config from a YAML file of `key: value` pairs, optionally under an `engine:` key."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"engine config {path} not found")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"engine config {path} must be a mapping of parameter: value")
        return cls.from_dict(data.get("engine", data), **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    def sequence_settings(self) -> SequenceSettings:
        """The sequence matcher's settings taken from this config: each `sequence_<name>`
        field is the matcher's `<name>`, and `temporal_max_gap_s` its `max_gap_s`."""
        mirrored = {f.name: getattr(self, "sequence_" + f.name) for f in fields(SequenceSettings)
                    if hasattr(self, "sequence_" + f.name)}
        return SequenceSettings(max_gap_s=self.temporal_max_gap_s, **mirrored)


def _speed_range_checks(name: str, low: float, high: float, steps: int):
    """(ok, message) checks of one geometric speed range, named like its parameters."""
    return [
        (low > 0, f"{name}_min must be > 0"),
        (high >= low, f"{name}_max must be >= {name}_min (the speed range is inverted)"),
        (steps >= 1, f"{name}_steps must be >= 1"),
        (steps == 1 or high > low, f"{name}_steps > 1 needs {name}_max > {name}_min"),
    ]
