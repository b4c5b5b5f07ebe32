"""The worker side of `vpr_node`, ROS-free: message in, engine decision and outputs out.

`FrameProcessor.process` decodes an image message (any object with the sensor_msgs field names,
so rosbags messages work in tests), looks up the robot pose only for a usable frame, runs the
engine, and returns what the node publishes. It never raises for a bad frame: a garbled image or
an engine error comes back as a rejected `bad_frame` event with the reason, so one bad frame
cannot stop the node. The engine is used under one lock by the worker (frames), by a map save
and by the compressed-index training, which runs on a thread of its own (index_training.py); a mode switch or a reset is only recorded and applied before the next frame, so the
executor thread that asks for it never waits for a frame in progress.
"""
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from vpr_ros.io.frames import Frame
from vpr_ros.io.messages import message_to_rgb, stamp_to_seconds
from vpr_ros.localization import Decision, LocalizationEngine
from vpr_ros.localization.config import MODES
from vpr_ros.localization.decision import REASON_BAD_FRAME
from vpr_ros.localization.frame_check import frame_problem
from vpr_ros.mapping.records import Pose
from vpr_ros.mapping.thumbnail import decode_thumbnail
from vpr_ros.ros.covariance import message_covariance
from vpr_ros.ros.diagnostics import NodeStatistics
from vpr_ros.ros.index_training import BackgroundIndexTraining
from vpr_ros.ros.match_image import compose_match_image
from vpr_ros.ros.parameters import NodeSettings


@dataclass
class Relocalization:
    """What ~/relocalization carries: the estimated pose and its covariance (36 floats)."""

    pose: tuple
    covariance: List[float]


@dataclass
class Outcome:
    """Everything the node publishes for one frame."""

    decision: Decision
    event_json: str
    relocalization: Optional[Relocalization]
    image: Optional[np.ndarray]
    error: str = ""
    keyframe_pose: Optional[Pose] = None
    """Pose in the map of the best candidate's keyframe, when it has one."""


PoseLookup = Callable[[str], Optional[Pose]]
"""Called with the frame's mode, once the frame is decoded and usable: the robot pose or None."""


class FrameProcessor:
    """Runs the localization engine on image messages and turns decisions into node outputs."""

    def __init__(self, engine: LocalizationEngine, settings: NodeSettings, stats: NodeStatistics,
                 source_name: str):
        self._engine = engine
        self._settings = settings
        self._stats = stats
        self._source_name = source_name
        self._lock = threading.Lock()
        self._mode = engine.config.mode
        self._reset_requested = False
        self._saved_size = len(engine.map)
        self.index_training = BackgroundIndexTraining(engine.map, self._lock)

    def process(self, msg, index: int, received_at: float,
                lookup_pose: Optional[PoseLookup] = None) -> Outcome:
        """Decode `msg`, look up the pose of a usable frame, run the engine, build the outputs."""
        started_at = time.monotonic()
        stamp = stamp_to_seconds(msg.header.stamp)
        frame_id, name = str(msg.header.frame_id), f"{self._source_name}#{index}"
        image = None
        try:
            image = message_to_rgb(msg)
            frame = Frame(image=image, stamp=stamp, frame_id=frame_id, index=index, name=name)
            mode = self._mode
            pose = (lookup_pose(mode) if lookup_pose is not None and frame_problem(image) is None
                    else None)
            with self._lock:
                self._apply_requests(mode)
                decision = self._engine.process(frame, pose=pose)
                keyframe_pose = (None if decision.best is None
                                 else self._engine.map.record(decision.best.keyframe_id).pose)
        except Exception as err:  # a garbled message or an engine failure costs one frame only
            detail = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            decision = Decision(stamp=stamp, frame_id=frame_id, frame_index=index, frame_name=name,
                                reason=REASON_BAD_FRAME, detail=detail)
            keyframe_pose = None
        error = decision.detail if decision.reason == REASON_BAD_FRAME else ""
        if error:
            self._stats.record_failed(error)
        else:
            self._stats.record_processed(received_at, started_at, time.monotonic(),
                                         accepted=decision.accepted,
                                         keyframe_added=decision.keyframe_added is not None)
        return Outcome(decision, json.dumps(decision.to_dict()), self._relocalization(decision),
                       image, error, keyframe_pose)

    def _apply_requests(self, mode: str) -> None:
        """Bring the engine to the requested mode and apply a requested reset (under the lock)."""
        if self._engine.config.mode != mode:
            self._engine.set_mode(mode)
        if self._reset_requested:
            self._reset_requested = False
            self._engine.reset()

    def _relocalization(self, decision: Decision) -> Optional[Relocalization]:
        if not decision.accepted or decision.pose is None:
            return None
        return Relocalization(tuple(decision.pose), message_covariance(decision.covariance))

    def match_image(self, outcome: Outcome) -> Optional[np.ndarray]:
        """Query beside its best keyframe, or None when the frame had no candidate."""
        decision, best = outcome.decision, outcome.decision.best
        if best is None or outcome.image is None:
            return None
        with self._lock:
            thumbnail = self._engine.map.record(best.keyframe_id).thumbnail
        try:
            keyframe_image = decode_thumbnail(thumbnail) if thumbnail else None
        except ValueError:
            keyframe_image = None
        caption = (f"{decision.status}{'' if decision.accepted else ' (' + str(decision.reason) + ')'}"
                   f"  kf {best.keyframe_id}  score {best.score:.2f}  conf {decision.confidence:.2f}")
        return compose_match_image(outcome.image, keyframe_image, caption, decision.accepted,
                                   self._settings.match_image_height)

    @property
    def map_size(self) -> int:
        return len(self._engine.map)

    @property
    def decision_mode(self) -> str:
        """How the engine accepts frames: single, chain or sequence."""
        return self._engine.config.decision

    @property
    def has_unsaved_keyframes(self) -> bool:
        """Whether the map grew since it was loaded or last saved."""
        return len(self._engine.map) != self._saved_size

    @property
    def mode(self) -> str:
        """The requested mode, which the next frame runs in."""
        return self._mode

    def set_mode(self, mode: str) -> None:
        """Switch between localization and mapping from the next frame on; never waits."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._mode = mode

    def reset(self) -> None:
        """Forget temporal chains before the next frame (engine.reset); never waits."""
        self._reset_requested = True

    def save_map(self, path: str) -> int:
        """Save the map atomically to `path`; returns its keyframe count."""
        if not path:
            raise ValueError("map_path is empty: set the map_path parameter to save the map")
        with self._lock:
            self._engine.map.save(Path(path))
            self._saved_size = len(self._engine.map)
            return self._saved_size
