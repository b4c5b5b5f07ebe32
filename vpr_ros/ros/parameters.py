"""Every `vpr_node` parameter, defined once, ROS-free.

Two dataclasses are the single source of parameter names, types and defaults:
- `EngineConfig` (vpr_ros.localization): the per-frame engine's knobs (mode, thresholds, ...);
- `NodeSettings` (below): what only the node needs (model, map, topics, frames, covariance...).

The node declares one ROS parameter per field of each, named like the field, with a
ParameterDescriptor built from the field's description and range: `NodeSettings` carries them
in its field metadata, `ENGINE_PARAMETER_DOCS` adds them to EngineConfig's fields (a test fails
when the two drift apart). `config/vpr_node.yaml` mirrors the declared list 1:1 (also tested),
and `settings_from_parameters` validates the values read back and builds both configurations.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple, Type

from vpr_ros.localization.config import DECISIONS, MODES, RERANK_METHODS, EngineConfig
from vpr_ros.localization.verification import FEATURE_TYPES
from vpr_ros.runtime.backends import BACKENDS
from vpr_ros.runtime.engine_cache import RUNTIME_PRECISIONS

POSE_SOURCES = ("tf", "odometry", "none")
RELOCALIZATION_GATES = ("always", "lost_or_disagreeing")
CURRENT_POSE_TYPES = ("PoseWithCovarianceStamped", "Odometry")

DAY_S = 86400.0


def _describe(description: str, minimum=None, maximum=None, choices: Tuple[str, ...] = ()) -> dict:
    """Field metadata of one parameter: both range ends or neither."""
    if (minimum is None) != (maximum is None):
        raise ValueError(f"give both range ends or neither: {description}")
    return {"description": description, "minimum": minimum, "maximum": maximum,
            "choices": tuple(choices)}


@dataclass(frozen=True)
class NodeSettings:
    """Node-level parameters (the engine's own knobs are EngineConfig's)."""

    model: str = field(default="", metadata=_describe(
        "model checkpoint (.pt) or exported ONNX file; required"))
    backend: str = field(default="auto", metadata=_describe(
        "embedding backend; auto picks the fastest one that works here", choices=BACKENDS))
    engine_precision: str = field(default="auto", metadata=_describe(
        "TensorRT engine precision; auto loads any cached engine of the model for this GPU (and "
        "builds fp16 when there is none), the others require that precision",
        choices=RUNTIME_PRECISIONS))
    engine_path: str = field(default="", metadata=_describe(
        "prebuilt TensorRT engine from `vpr-ros build-engine` (backend tensorrt or auto); empty: "
        "the engine cached beside the model's ONNX export"))
    map_path: str = field(default="", metadata=_describe(
        "keyframe map directory: loaded at start-up when it exists (required in localization "
        "mode); in mapping mode a new map is started and written here by ~/save_map"))
    map_use_gpu: bool = field(default=False, metadata=_describe(
        "search the keyframe map with FAISS on GPU 0 (needs faiss-gpu)"))
    save_map_on_shutdown: bool = field(default=True, metadata=_describe(
        "save the map to map_path when the node shuts down, if keyframes were added (so only "
        "after mapping)"))
    autosave_interval: float = field(default=300.0, metadata=_describe(
        "mapping: save the map to map_path every this many seconds when keyframes were added "
        "(atomic; a killed node loses at most this much mapping; 0: off)", 0.0, DAY_S))
    use_compressed: bool = field(default=False, metadata=_describe(
        "subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image"))
    map_frame: str = field(default="map", metadata=_describe(
        "fixed frame of keyframe poses, of ~/relocalization and of ~/loop_closures poses"))
    base_frame: str = field(default="base_link", metadata=_describe(
        "robot frame whose pose goes with each frame (pose_source tf)"))
    pose_source: str = field(default="tf", metadata=_describe(
        "where the robot pose at the image stamp comes from: tf (mapping: map_frame -> "
        "base_frame; localization: odom_frame -> base_frame when odom_frame is set), odometry "
        "(nav_msgs/Odometry on the odom topic, interpolated; in mapping mode its frame is the "
        "map's) or none", choices=POSE_SOURCES))
    odom_frame: str = field(default="", metadata=_describe(
        "localization mode with pose_source tf: the odom_frame -> base_frame pose at the image "
        "stamp goes to the engine (sequence matching steps by travelled distance); empty: no "
        "pose (set it when the robot publishes odometry on TF)"))
    tf_timeout: float = field(default=0.05, metadata=_describe(
        "seconds to wait for the pose at the image stamp (TF transform or odometry message); "
        "the frame goes on without pose when it does not come", 0.0, 1.0))
    relocalization_min_interval: float = field(default=1.0, metadata=_describe(
        "seconds between two ~/relocalization messages (0: every accepted match)", 0.0, DAY_S))
    relocalization_gate: str = field(default="always", metadata=_describe(
        "always: publish every accepted relocalization (after relocalization_min_interval); "
        "lost_or_disagreeing: only when the current_pose topic says the robot is lost or "
        "disagrees with the match (initialpose-style use)", choices=RELOCALIZATION_GATES))
    current_pose_type: str = field(default="PoseWithCovarianceStamped", metadata=_describe(
        "message type of the current_pose topic (the localizer's estimate, e.g. amcl_pose or "
        "odometry/filtered)", choices=CURRENT_POSE_TYPES))
    lost_after: float = field(default=5.0, metadata=_describe(
        "lost_or_disagreeing: the robot counts as lost when current_pose was silent this many "
        "seconds", 0.1, DAY_S))
    lost_position_std: float = field(default=1.0, metadata=_describe(
        "lost_or_disagreeing: ... or when the current pose's position standard deviation (m) "
        "exceeds this", 0.0, 1000.0))
    disagreement_distance: float = field(default=2.0, metadata=_describe(
        "lost_or_disagreeing: publish when the relocalization is farther than this (m) from the "
        "current pose", 0.0, 10000.0))
    disagreement_yaw: float = field(default=0.5, metadata=_describe(
        "lost_or_disagreeing: ... or turned more than this (rad) from it", 0.0, 3.15))
    publish_match_image: bool = field(default=True, metadata=_describe(
        "publish ~/match_image (rendered only while something subscribes)"))
    match_image_height: int = field(default=240, metadata=_describe(
        "height in pixels of the pictures in ~/match_image", 64, 1080))
    diagnostics_period: float = field(default=1.0, metadata=_describe(
        "seconds between /diagnostics messages", 0.1, 60.0))
    no_image_warn_after: float = field(default=5.0, metadata=_describe(
        "diagnostics turn WARN when no image arrived for this many seconds", 0.5, 3600.0))


ENGINE_PARAMETER_DOCS: Dict[str, dict] = {
    "mode": _describe("localization: match against a fixed map; mapping: also add keyframes "
                      "(writable at runtime: ros2 param set, or ~/set_mapping_mode)",
                      choices=MODES),
    "session": _describe("session name stored with keyframes added by this run"),
    "condition": _describe("condition tag stored with added keyframes (day, night, rain...)"),
    "top_k": _describe("map neighbours retrieved per frame", 1, 1000),
    "score_threshold": _describe("minimum cosine similarity of a match; tune it on the PR "
                                 "curve of `vpr-ros eval`", -1.0, 1.0),
    "exclusion_window_s": _describe("ignore keyframes this run added in the last N seconds "
                                    "(the robot always matches where it just was)", 0.0, DAY_S),
    "exclusion_distance_m": _describe("with poses, also ignore them until the robot has travelled "
                                      "this far (a parked robot never matches itself; 0: off)",
                                      0.0, 100000.0),
    "rerank": _describe("place_voting: sum scores of neighbours close in time on one session; "
                        "none: raw cosine order", choices=RERANK_METHODS),
    "place_window_s": _describe("keyframes within this many seconds form one place for "
                                "place_voting", 0.0, 3600.0),
    "decision": _describe("how a frame is accepted: single (best score over score_threshold), "
                          "chain (temporal_consecutive frames agree) or sequence (the last "
                          "sequence_length frames as one trajectory; its margin over the best "
                          "trajectory elsewhere must clear sequence_threshold)", choices=DECISIONS),
    "temporal_consecutive": _describe("decision chain: consecutive frames that must match a "
                                      "coherent stretch of the map", 1, 100),
    "temporal_max_jump_s": _describe("allowed keyframe-stamp jump between consecutive matches, "
                                     "plus temporal_speed_ratio x query time step", 0.0, 3600.0),
    "temporal_speed_ratio": _describe("how much faster than when mapping the robot may move "
                                      "along the map", 0.0, 100.0),
    "temporal_max_gap_s": _describe("a longer pause between query frames breaks the temporal "
                                    "chain and restarts the sequence", 0.01, 3600.0),
    "sequence_length": _describe("decision sequence: query frames matched as one trajectory",
                                 1, 1000),
    "sequence_warmup_length": _describe("a trajectory over n frames of the map, fewer than this "
                                        "(after a (re)start, or entering the map), clears the "
                                        "threshold with its margin times sqrt(n / this) (0: the "
                                        "sequence length; at most the length)", 0, 1000),
    "sequence_speed_min": _describe("slowest relative speed tried without odometry (map "
                                    "seconds per query second: how much slower than when mapping "
                                    "the robot may revisit)", 0.01, 100.0),
    "sequence_speed_max": _describe("fastest relative speed tried without odometry", 0.01, 100.0),
    "sequence_speed_steps": _describe("speeds tried between min and max (geometric steps)", 1, 100),
    "sequence_distance_speed_min": _describe("with odometry: slowest map metres per odometry "
                                             "metre tried (odometry scale error)", 0.01, 100.0),
    "sequence_distance_speed_max": _describe("with odometry: fastest map metres per odometry "
                                             "metre tried", 0.01, 100.0),
    "sequence_distance_speed_steps": _describe("with odometry: speeds tried between min and max",
                                               1, 100),
    "sequence_reverse": _describe("also try travel against the direction the map was recorded in"),
    "sequence_threshold": _describe("minimum margin of the best trajectory over the best one "
                                    "through another stretch of the map (normalized similarity "
                                    "units)", 0.0, 100.0),
    "sequence_rival_window_s": _describe("a rival trajectory lies farther than this from the "
                                         "best along the route (map seconds, stops taken out)",
                                         0.01, DAY_S),
    "sequence_rival_window_m": _describe("the same in metres, when keyframes have poses", 0.01,
                                         100000.0),
    "sequence_min_step_m": _describe("with odometry, a frame closer than this to where the newest "
                                     "frame's spot began replaces that frame (a parked robot is "
                                     "not a sequence)", 0.0, 1000.0),
    "sequence_stop_similarity": _describe("without odometry, a frame at least this cosine-similar "
                                          "to the newest frame's spot replaces it and the "
                                          "sequence clock waits (a stop; 1: off)", -1.0, 1.0),
    "sequence_recent_frames": _describe("where along the matched stretch the robot is now leans "
                                        "on the last frames: their weights fall by e every this "
                                        "many frames", 0.1, 1000.0),
    "sequence_min_pace": _describe("the matched keyframes must change at least this share as "
                                   "much as the frames do, one to the next, or the sequence is "
                                   "no evidence (0: off)", 0.0, 100.0),
    "verify": _describe("geometric verification (local features + RANSAC) of the best match; "
                        "needs a map built with verification on"),
    "verification_features": _describe("local features for verification", choices=FEATURE_TYPES),
    "verification_max_features": _describe("local features extracted per image", 8, 100000),
    "verification_min_inliers": _describe("RANSAC inliers needed to verify a match", 8, 10000),
    "verification_ratio": _describe("Lowe ratio test threshold", 0.01, 1.0),
    "verification_ransac_px": _describe("RANSAC reprojection threshold in pixels", 0.1, 100.0),
    "keyframe_novelty_threshold": _describe("mapping: add a keyframe when its best score "
                                            "against the map is below this", -1.0, 1.0),
    "keyframe_interval_s": _describe("mapping: add a keyframe at least this often (0: off)",
                                     0.0, DAY_S),
    "keyframe_distance_m": _describe("mapping: add a keyframe after this distance, with TF "
                                     "poses (0: off)", 0.0, 10000.0),
    "store_thumbnails": _describe("keep a small JPEG per keyframe (shown in ~/match_image)"),
    "thumbnail_long_side": _describe("long side in pixels of keyframe thumbnails", 16, 1024),
    "search_threads": _describe("FAISS threads per frame search (1 is fastest for one query on "
                                "a busy robot CPU)", 1, 64),
}


@dataclass(frozen=True)
class ParameterSpec:
    """One ROS parameter: name, default (its type is the parameter type), description, range."""

    name: str
    default: Any
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        """bool, integer, double or string, as ROS names parameter types."""
        return {bool: "bool", int: "integer", float: "double", str: "string"}[type(self.default)]

    def check(self, value: Any) -> Any:
        """`value` if it has this parameter's type and lies in its range; ValueError otherwise."""
        expected = type(self.default)
        if type(value) is not expected:
            raise ValueError(f"parameter {self.name} must be a {self.type_name}, got {value!r}; "
                             f"write it like {self.default!r}")
        if self.choices and value not in self.choices:
            raise ValueError(f"parameter {self.name} must be one of {', '.join(self.choices)}, "
                             f"got {value!r}")
        if self.minimum is not None and not self.minimum <= value <= self.maximum:
            raise ValueError(f"parameter {self.name} must be in [{self.minimum}, {self.maximum}], "
                             f"got {value!r}")
        return value


RUNTIME_PARAMETERS = ("mode",)
"""Parameters that may change while the node runs; every other one is read once at start-up."""


def check_runtime_update(name: str, value: Any) -> Optional[str]:
    """Why setting parameter `name` to `value` at runtime is refused, or None when it may be set.

    Names this module does not define (rclpy's own use_sim_time) are not its business: None.
    """
    spec = next((s for s in parameter_specs() if s.name == name), None)
    if spec is None:
        return None
    if name not in RUNTIME_PARAMETERS:
        return f"parameter {name} is read once at start-up; restart the node to change it"
    try:
        spec.check(value)
    except ValueError as err:
        return str(err)
    return None


def _specs(config_cls: Type, docs: Mapping[str, dict]) -> Tuple[ParameterSpec, ...]:
    """One ParameterSpec per dataclass field: default from the field, the rest from `docs`."""
    specs = []
    for f in dataclasses.fields(config_cls):
        if f.name not in docs:
            raise TypeError(f"{config_cls.__name__}.{f.name} has no parameter description; add "
                            f"it to vpr_ros/ros/parameters.py and config/vpr_node.yaml")
        meta = docs[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        specs.append(ParameterSpec(f.name, default, meta["description"], meta["minimum"],
                                   meta["maximum"], meta["choices"]))
    return tuple(specs)


def parameter_specs() -> Tuple[ParameterSpec, ...]:
    """Every parameter the node declares: its own settings, then the engine's."""
    node_docs = {f.name: f.metadata for f in dataclasses.fields(NodeSettings)}
    return _specs(NodeSettings, node_docs) + _specs(EngineConfig, ENGINE_PARAMETER_DOCS)


def settings_from_parameters(values: Mapping[str, Any]) -> Tuple[NodeSettings, EngineConfig]:
    """Validate parameter values (name -> value; missing ones take their default) and build
    the node settings and the engine configuration."""
    specs = {spec.name: spec for spec in parameter_specs()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise ValueError(f"unknown vpr_node parameters {unknown}; see config/vpr_node.yaml")
    checked = {name: spec.check(values.get(name, spec.default)) for name, spec in specs.items()}
    node_fields = {f.name for f in dataclasses.fields(NodeSettings)}
    node = NodeSettings(**{k: v for k, v in checked.items() if k in node_fields})
    engine = EngineConfig(**{k: v for k, v in checked.items() if k not in node_fields})
    return node, engine
