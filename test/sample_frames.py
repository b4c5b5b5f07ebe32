"""Test helpers: the bundled sample (data/sample) as CompressedImage messages, and a map of it.

Used by the node tests and the launch test, so both run on a fresh clone.
"""
import array
from pathlib import Path

import cv2
import numpy as np
import yaml
from rosbags.typesys import Stores, get_typestore

from vpr_ros.localization import EngineConfig, LocalizationEngine
from vpr_ros.mapping import KeyframeMap
from vpr_ros.ros.diagnostics import NodeStatistics
from vpr_ros.ros.engine_setup import build_engine
from vpr_ros.ros.parameters import NodeSettings, settings_from_parameters
from vpr_ros.ros.processor import FrameProcessor

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
CONFIG = Path(__file__).resolve().parents[1] / "config" / "vpr_node.yaml"
LAUNCH_TEST_PARAMETERS = {"decision": "single", "score_threshold": 0.9,
                          "relocalization_min_interval": 0.0}
"""What the launch test changes in config/vpr_node.yaml: a published frame identical to a keyframe
(score 1) is accepted at once, and every relocalization goes out."""
T = get_typestore(Stores.ROS2_HUMBLE).types
FIRST_STAMP_S = 1_700_000_000
FRAME_PERIOD_S = 1


def sample_messages(count: int, traversal: str = "day_right"):
    """The first `count` JPEGs of a sample traversal as rosbags CompressedImage messages, one
    second apart (the JPEG files are the message payloads)."""
    paths = sorted((SAMPLE_DIR / traversal).glob("*.jpg"))[:count]
    if len(paths) < count:
        raise FileNotFoundError(f"{SAMPLE_DIR / traversal} has {len(paths)} JPEGs, {count} needed")
    return [T["sensor_msgs/msg/CompressedImage"](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=FIRST_STAMP_S + i * FRAME_PERIOD_S,
                                                   nanosec=0),
            frame_id="camera"),
        format="jpeg", data=np.frombuffer(path.read_bytes(), np.uint8))
        for i, path in enumerate(paths)]


class PixelEmbedder:
    """Embedder contract with a tiny raw-pixel descriptor: enough to exercise the node's wiring."""

    dim = 32 * 16
    fingerprint = "test-pixels-32x16"

    def embed(self, images):
        rows = []
        for image in images:
            grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), (32, 16),
                              interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
            grey -= grey.mean()
            rows.append(grey / (np.linalg.norm(grey) + 1e-9))
        return np.stack(rows).astype(np.float32)


def trajectory_pose(i: int):
    """A made-up TF pose: the robot drives 1 m along x per frame."""
    return (float(i), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def processor_for(engine, **settings):
    """A FrameProcessor with fresh statistics, and those statistics."""
    stats = NodeStatistics(started_at=0.0)
    return FrameProcessor(engine, NodeSettings(**settings), stats, "image"), stats


def build_map(embedder, messages, path: Path, session: str = "day_right") -> int:
    """Map `messages` in mapping mode, one keyframe per frame at trajectory_pose(i); save it to
    `path` and return its keyframe count."""
    engine = LocalizationEngine(KeyframeMap.create(embedder.dim, embedder.fingerprint), embedder,
                                EngineConfig(mode="mapping", session=session,
                                             keyframe_interval_s=0.5))
    processor, _ = processor_for(engine)
    for i, msg in enumerate(messages):
        outcome = processor.process(msg, i, received_at=float(i),
                                    lookup_pose=lambda mode: trajectory_pose(i))
        if outcome.decision.keyframe_added != i:
            raise AssertionError(f"frame {i} did not become keyframe {i}: {outcome.event_json}")
    return processor.save_map(str(path))


def restamped(msg, seconds: float):
    """`msg` taken `seconds` after the first sample stamp (a revisit's timing)."""
    sec, nanosec = divmod(int(round(seconds * 1e9)), 10**9)
    stamp = T["builtin_interfaces/msg/Time"](sec=FIRST_STAMP_S + sec, nanosec=nanosec)
    return T["sensor_msgs/msg/CompressedImage"](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id=msg.header.frame_id),
        format=msg.format, data=msg.data)


def to_rclpy_compressed(msg):
    """A rosbags CompressedImage as an rclpy sensor_msgs/CompressedImage (needs ROS 2)."""
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header

    out = CompressedImage()
    out.header = Header(stamp=Time(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec),
                        frame_id=msg.header.frame_id)
    out.format = msg.format
    out.data = array.array("B", bytes(msg.data))
    return out


def shipped_parameters(**overrides) -> dict:
    """config/vpr_node.yaml's parameters (what a user launches) with `overrides`."""
    values = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["/**"]["ros__parameters"]
    values.update(overrides)
    return values


def node_parameters(**overrides) -> dict:
    """config/vpr_node.yaml's parameters with the launch test's changes and `overrides`."""
    return shipped_parameters(**dict(LAUNCH_TEST_PARAMETERS, **overrides))


def replay(parameters: dict, messages) -> list:
    """The decisions a node with these parameters makes on `messages` (no pose source), made
    without ROS: the launch test expects exactly these from the launched node."""
    settings, config = settings_from_parameters(parameters)
    processor, _ = processor_for(build_engine(settings, config))
    return [processor.process(msg, i, received_at=0.0).decision for i, msg in enumerate(messages)]


def small_checkpoint(path: Path) -> Path:
    """A small real model at `path`: the packaged pretrained backbone (no download) at 128 px
    and an uninitialized 8-cluster NetVLAD. Distinct sample frames score <= 0.997 against each
    other, an identical one 1.0 (an untrained backbone scores everything 1.0)."""
    from vpr_ros.model import ModelConfig, build_model
    from vpr_ros.model.checkpoint import save_checkpoint

    save_checkpoint(path, build_model(ModelConfig(image_long_side=128, num_clusters=8),
                                      pretrained=True))
    return path
