"""vpr_node behaviour: ROS-free parts here; the rclpy end-to-end tests skip without ROS 2."""
import array
import json
import threading
import time

import cv2
import numpy as np
import pytest

from vpr_ros.localization import EngineConfig, LocalizationEngine
from vpr_ros.mapping import KeyframeMap, MapMismatchError
from vpr_ros.mapping.thumbnail import decode_thumbnail, encode_thumbnail
from vpr_ros.ros.covariance import pose_covariance, sigma_scale
from vpr_ros.ros.diagnostics import OK, WARN, NodeStatistics
from vpr_ros.ros.engine_setup import build_engine
from vpr_ros.ros.latest_buffer import LatestOnlyBuffer
from vpr_ros.ros.match_image import compose_match_image
from vpr_ros.ros.parameters import NodeSettings
from vpr_ros.ros.processor import FrameProcessor


# --- latest-only buffer --------------------------------------------------------------------

def test_buffer_keeps_only_the_newest_item_and_counts_drops():
    buffer = LatestOnlyBuffer()
    assert buffer.put(1) is False
    assert buffer.put(2) is True
    assert buffer.put(3) is True
    assert buffer.take(timeout=0) == 3
    assert (buffer.received, buffer.dropped) == (3, 2)
    assert buffer.take(timeout=0.01) is None


def test_buffer_take_wakes_when_an_item_arrives_from_another_thread():
    buffer = LatestOnlyBuffer()
    taken = []
    worker = threading.Thread(target=lambda: taken.append(buffer.take(timeout=5)))
    worker.start()
    buffer.put("frame")
    worker.join(timeout=5)
    assert taken == ["frame"]
    assert buffer.dropped == 0


def test_buffer_close_releases_a_waiting_worker_and_refuses_items():
    buffer = LatestOnlyBuffer()
    taken = []
    worker = threading.Thread(target=lambda: taken.append(buffer.take()))
    worker.start()
    buffer.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and taken == [None]
    assert buffer.put("late") is False and buffer.take(timeout=0) is None


def test_buffer_under_a_fast_producer_never_hands_out_stale_items():
    buffer = LatestOnlyBuffer()
    seen = []
    last = 1999

    def consume():
        while not seen or seen[-1] != last:
            item = buffer.take(timeout=5)
            if item is None:
                return
            seen.append(item)

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(last + 1):
        buffer.put(i)
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == last
    assert buffer.received == last + 1
    assert buffer.dropped + len(seen) == last + 1


# --- covariance from confidence ------------------------------------------------------------

def test_covariance_is_diagonal_with_the_configured_sigmas_at_full_confidence():
    cov = np.array(pose_covariance(1.0, position_sigma=2.0, rotation_sigma=0.1, max_scale=50.0))
    matrix = cov.reshape(6, 6)
    assert np.allclose(np.diag(matrix), [4.0, 4.0, 4.0, 0.01, 0.01, 0.01])
    assert np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0


def test_sigma_doubles_when_confidence_halves_and_saturates_at_max_scale():
    assert sigma_scale(0.5, 100.0) == pytest.approx(2.0)
    assert sigma_scale(0.25, 100.0) == pytest.approx(4.0)
    assert sigma_scale(0.001, 100.0) == 100.0
    assert sigma_scale(0.0, 100.0) == 100.0
    assert sigma_scale(float("nan"), 100.0) == 100.0
    assert sigma_scale(1.5, 100.0) == 1.0
    low = pose_covariance(0.2, 1.0, 0.1, 100.0)
    high = pose_covariance(0.9, 1.0, 0.1, 100.0)
    assert all(np.isfinite(low)) and low[0] > high[0] and low[35] > high[35]


def test_covariance_rejects_non_positive_sigmas():
    with pytest.raises(ValueError, match="sigmas must be positive"):
        pose_covariance(0.5, 0.0, 0.1, 10.0)
    with pytest.raises(ValueError, match="max_scale"):
        sigma_scale(0.5, 0.5)


# --- diagnostics ---------------------------------------------------------------------------

def _values(report):
    return dict(report.values)


def test_diagnostics_warn_when_no_image_arrived_for_too_long():
    stats = NodeStatistics(started_at=100.0)
    report = stats.report(104.0, dropped=0, map_size=10, mode="localization", no_image_warn_after=5.0)
    assert report.level == OK
    report = stats.report(106.0, dropped=0, map_size=10, mode="localization", no_image_warn_after=5.0)
    assert report.level == WARN and "no images received" in report.message
    stats.record_received(106.5)
    assert stats.report(107.0, dropped=0, map_size=10, mode="localization",
                        no_image_warn_after=5.0).level == OK
    report = stats.report(120.0, dropped=0, map_size=10, mode="localization", no_image_warn_after=5.0)
    assert report.level == WARN and "no new images" in report.message


def test_diagnostics_report_rate_latency_drops_and_match_age():
    stats = NodeStatistics(started_at=0.0)
    for i in range(11):
        stats.record_received(1.0 + 0.5 * i)          # 2 Hz
    stats.record_processed(received_at=5.0, started_at=5.02, finished_at=5.12, accepted=True,
                           keyframe_added=False)
    stats.record_processed(received_at=5.5, started_at=5.5, finished_at=5.7, accepted=False,
                           keyframe_added=True)
    stats.record_failed("cannot decode CompressedImage")
    values = _values(stats.report(8.0, dropped=3, map_size=42, mode="mapping", no_image_warn_after=5.0))
    assert float(values["input_rate_hz"]) == pytest.approx(2.0)
    assert float(values["latency_ms_mean"]) == pytest.approx(160.0)
    assert float(values["latency_ms_max"]) == pytest.approx(200.0)
    assert float(values["processing_ms_mean"]) == pytest.approx(150.0)
    assert float(values["last_match_age_s"]) == pytest.approx(2.9)
    assert values["frames_dropped"] == "3" and values["frames_failed"] == "1"
    assert values["map_keyframes"] == "42" and values["mode"] == "mapping"
    assert values["keyframes_added"] == "1" and values["matches_accepted"] == "1"
    assert "cannot decode" in values["last_error"]


# --- match image ---------------------------------------------------------------------------

def test_match_image_puts_query_beside_keyframe_with_a_coloured_caption():
    query = np.full((360, 640, 3), 10, dtype=np.uint8)
    keyframe = decode_thumbnail(encode_thumbnail(np.full((120, 160, 3), 200, np.uint8), 160))
    image = compose_match_image(query, keyframe, "kf 7 score 0.81", accepted=True, height=120)
    assert image.dtype == np.uint8 and image.shape[0] == 120 + 28
    assert image.shape[1] == round(640 * 120 / 360) + 4 + 160
    assert image[60, 10].tolist() == [10, 10, 10]
    assert abs(int(image[60, -10, 0]) - 200) <= 3
    assert image[-2, 2].tolist() == [40, 170, 60]
    rejected = compose_match_image(query, None, "no match", accepted=False, height=120)
    assert rejected[-2, 2].tolist() == [200, 50, 40]
    assert rejected.shape[1] == 2 * round(640 * 120 / 360) + 4


# --- frame processor: Gardens Point bag through the real engine, no ROS ----------------------

BAG_FRAMES = 24


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


def _bag_messages(bag_dir, count):
    """The first `count` image messages of a rosbag2 directory, deserialized by rosbags."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    messages = []
    with Reader(bag_dir) as reader:
        for connection, _, raw in reader.messages():
            messages.append(typestore.deserialize_cdr(raw, connection.msgtype))
            if len(messages) == count:
                break
    return messages


def _trajectory_pose(i):
    """A made-up TF pose: the robot drives 1 m along x per frame."""
    return (float(i), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


def _processor(engine, **settings):
    stats = NodeStatistics(started_at=0.0)
    return FrameProcessor(engine, NodeSettings(**settings), stats, "image"), stats


@pytest.fixture(scope="module")
def day_left_messages(gardens_point_bags):
    return _bag_messages(gardens_point_bags / "day_left_compressed_sqlite3", BAG_FRAMES)


@pytest.fixture(scope="module")
def day_left_map(day_left_messages, tmp_path_factory):
    """A map built in mapping mode from the bag, one keyframe per frame, saved by the processor."""
    config = EngineConfig(mode="mapping", session="day_left", condition="day",
                          keyframe_interval_s=0.5)
    engine = LocalizationEngine(KeyframeMap.create(PixelEmbedder.dim, PixelEmbedder.fingerprint),
                                PixelEmbedder(), config)
    processor, stats = _processor(engine)
    for i, msg in enumerate(day_left_messages):
        outcome = processor.process(msg, i, received_at=float(i), pose=_trajectory_pose(i))
        assert outcome.decision.keyframe_added == i and not outcome.error
    path = tmp_path_factory.mktemp("maps") / "day_left"
    assert processor.save_map(str(path)) == BAG_FRAMES
    assert stats.keyframes_added == BAG_FRAMES
    return path


def test_processor_relocalizes_bag_frames_against_the_saved_map(day_left_messages, day_left_map):
    settings = NodeSettings(map_path=str(day_left_map), position_sigma=1.0, rotation_sigma=0.2)
    config = EngineConfig(mode="localization", temporal_consecutive=3, rerank="none")
    engine = build_engine(settings, config, embedder=PixelEmbedder())
    processor, stats = _processor(engine, map_path=str(day_left_map))
    outcomes = [processor.process(msg, i, received_at=float(i))
                for i, msg in enumerate(day_left_messages)]
    events = [json.loads(o.event_json) for o in outcomes]
    assert all(e["schema"] == 1 and e["candidates"] for e in events)
    assert [e["status"] for e in events[:2]] == ["rejected", "rejected"]
    assert {e["reason"] for e in events[:2]} == {"temporal_inconsistent"}
    accepted = [o for o in outcomes[2:] if o.decision.accepted]
    assert len(accepted) == BAG_FRAMES - 2
    for o in accepted:
        i = o.decision.frame_index
        assert o.decision.best.keyframe_id == i, "the same image must match its own keyframe"
        assert o.relocalization.pose == _trajectory_pose(i)
        sigma = 1.0 / max(o.decision.confidence, 1e-2)
        assert o.relocalization.covariance[0] == pytest.approx(min(sigma, 100.0) ** 2)
    assert stats.accepted == BAG_FRAMES - 2 and stats.failed == 0
    picture = processor.match_image(accepted[0])
    assert picture.dtype == np.uint8 and picture[-2, 2].tolist() == [40, 170, 60]


def test_processor_turns_a_garbled_message_into_a_rejected_event(day_left_messages, day_left_map):
    engine = build_engine(NodeSettings(map_path=str(day_left_map)), EngineConfig(),
                          embedder=PixelEmbedder())
    processor, stats = _processor(engine)
    good = day_left_messages[0]
    garbled = type(good)(header=good.header, format="jpeg", data=np.frombuffer(b"\xff\xd8junk", np.uint8))
    outcome = processor.process(garbled, 7, received_at=0.0)
    event = json.loads(outcome.event_json)
    assert (event["status"], event["reason"], event["frame_index"]) == ("rejected", "bad_frame", 7)
    assert "cannot decode CompressedImage" in event["detail"] and outcome.error
    assert outcome.relocalization is None and processor.match_image(outcome) is None
    assert stats.failed == 1 and stats.processed == 0
    assert json.loads(processor.process(good, 8, received_at=0.0).event_json)["reason"] != "bad_frame"


def test_processor_survives_an_engine_error_as_a_rejected_event(day_left_messages, day_left_map):
    class FailingEngine(LocalizationEngine):
        def process(self, frame, pose=None):
            raise RuntimeError("FAISS index corrupted")

    engine = FailingEngine(KeyframeMap.load(day_left_map), PixelEmbedder(), EngineConfig())
    processor, stats = _processor(engine)
    event = json.loads(processor.process(day_left_messages[0], 0, received_at=0.0).event_json)
    assert (event["status"], event["reason"]) == ("rejected", "bad_frame")
    assert event["detail"] == "RuntimeError: FAISS index corrupted" and stats.failed == 1


def test_processor_switches_mode_resets_and_refuses_to_save_without_a_path(day_left_map):
    engine = build_engine(NodeSettings(map_path=str(day_left_map)), EngineConfig(),
                          embedder=PixelEmbedder())
    processor, _ = _processor(engine)
    assert processor.mode == "localization" and processor.map_size == BAG_FRAMES
    processor.set_mode("mapping")
    assert processor.mode == "mapping"
    with pytest.raises(ValueError, match="mode must be one of"):
        processor.set_mode("slam")
    processor.reset()
    with pytest.raises(ValueError, match="map_path is empty"):
        processor.save_map("")


def test_engine_setup_explains_missing_model_map_and_model_mismatch(day_left_map, tmp_path):
    with pytest.raises(ValueError, match="parameter 'model' is empty"):
        build_engine(NodeSettings(), EngineConfig())
    with pytest.raises(FileNotFoundError, match="localization mode needs a prior map"):
        build_engine(NodeSettings(map_path=str(tmp_path / "none")), EngineConfig(),
                     embedder=PixelEmbedder())
    fresh = build_engine(NodeSettings(map_path=str(tmp_path / "new")), EngineConfig(mode="mapping"),
                         embedder=PixelEmbedder())
    assert len(fresh.map) == 0 and fresh.map.fingerprint == PixelEmbedder.fingerprint

    class OtherModel(PixelEmbedder):
        fingerprint = "another-model"

    with pytest.raises(MapMismatchError, match="built with model"):
        build_engine(NodeSettings(map_path=str(day_left_map)), EngineConfig(), embedder=OtherModel())


def test_engine_setup_passes_the_gpu_parameters_to_the_embedder_and_the_map(monkeypatch,
                                                                             day_left_map):
    from vpr_ros.mapping import gpu_available
    from vpr_ros.ros import engine_setup

    asked = {}

    def fake_load_embedder(model, **kwargs):
        asked.update(model=model, **kwargs)
        return PixelEmbedder()

    monkeypatch.setattr(engine_setup, "load_embedder", fake_load_embedder)
    settings = NodeSettings(model="/m/model.pt", backend="tensorrt", engine_precision="int8",
                            engine_path="/m/model.int8.engine", map_path=str(day_left_map))
    build_engine(settings, EngineConfig())
    assert asked == {"model": "/m/model.pt", "backend": "tensorrt", "precision": "int8",
                     "engine": "/m/model.int8.engine"}
    build_engine(NodeSettings(model="/m/model.pt", map_path=str(day_left_map)), EngineConfig())
    assert (asked["engine"], asked["precision"]) == (None, "auto")
    if gpu_available():
        pytest.skip("faiss sees a GPU here: map_use_gpu would succeed")
    with pytest.raises(ValueError, match="GPU index was requested"):
        build_engine(NodeSettings(model="/m/model.pt", map_path=str(day_left_map),
                                  map_use_gpu=True), EngineConfig())


# --- the rclpy node end to end (needs a sourced ROS 2 Humble/Jazzy) -------------------------

ROS_SKIP_REASON = ("rclpy (ROS 2) is not installed here; source ROS 2 Humble or Jazzy to run the "
                   "vpr_node end-to-end tests")


def _wait_for(condition, timeout_s=60.0):
    """Poll `condition` until it holds or `timeout_s` passes; its final value."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _to_rclpy_compressed(msg, compressed_type, header_type, time_type):
    """A rosbags CompressedImage as an rclpy message."""
    out = compressed_type()
    out.header = header_type(stamp=time_type(sec=msg.header.stamp.sec, nanosec=msg.header.stamp.nanosec),
                             frame_id=msg.header.frame_id)
    out.format = msg.format
    out.data = array.array("B", bytes(msg.data))
    return out


def test_node_relocalizes_bag_frames_reports_loop_closures_and_serves_map_services(
        day_left_messages, tmp_path):
    rclpy = pytest.importorskip("rclpy", reason=ROS_SKIP_REASON)
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import Header, String
    from std_srvs.srv import Trigger

    from vpr_ros.model import ModelConfig, build_model
    from vpr_ros.model.checkpoint import save_checkpoint
    from vpr_ros.ros.node import VprNode
    from vpr_ros.runtime.embedder import load_embedder

    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, build_model(ModelConfig(image_long_side=128, num_clusters=8),
                                            pretrained=False))
    map_dir = tmp_path / "map"
    embedder = load_embedder(checkpoint, backend="torch")
    mapping = LocalizationEngine(KeyframeMap.create(embedder.dim, embedder.fingerprint), embedder,
                                 EngineConfig(mode="mapping", session="day", keyframe_interval_s=0.5))
    mapper, _ = _processor(mapping)
    for i, msg in enumerate(day_left_messages):
        mapper.process(msg, i, received_at=0.0, pose=_trajectory_pose(i))
    mapper.save_map(str(map_dir))

    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    node = VprNode(context=context, parameter_overrides=[
        Parameter("model", value=str(checkpoint)), Parameter("backend", value="torch"),
        Parameter("map_path", value=str(map_dir)), Parameter("use_compressed", value=True),
        Parameter("rerank", value="none"), Parameter("temporal_consecutive", value=1)])
    probe = rclpy.create_node("vpr_node_probe", context=context)
    events, poses = [], []
    probe.create_subscription(String, "/vpr_node/loop_closures",
                              lambda m: events.append(json.loads(m.data)), 100)
    probe.create_subscription(PoseWithCovarianceStamped, "/vpr_node/relocalization", poses.append, 100)
    images = probe.create_publisher(CompressedImage, "/image/compressed", 10)
    save_map = probe.create_client(Trigger, "/vpr_node/save_map")
    reset = probe.create_client(Trigger, "/vpr_node/reset")
    executor.add_node(node)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert _wait_for(lambda: images.get_subscription_count() > 0, 10.0)
        garbled = _to_rclpy_compressed(day_left_messages[0], CompressedImage, Header, Time)
        garbled.data = array.array("B", b"\xff\xd8 not a jpeg")
        images.publish(garbled)
        assert _wait_for(lambda: len(events) >= 1)
        for msg in day_left_messages[:6]:
            images.publish(_to_rclpy_compressed(msg, CompressedImage, Header, Time))
            count = len(events)
            assert _wait_for(lambda: len(events) > count)
        assert events[0]["reason"] == "bad_frame"
        assert any(e["status"] == "accepted" for e in events[1:])
        assert _wait_for(lambda: len(poses) >= 1)
        assert poses[0].header.frame_id == "map" and poses[0].pose.covariance[0] > 0.0

        for client in (save_map, reset):
            assert client.wait_for_service(timeout_sec=10.0)
            future = client.call_async(Trigger.Request())
            assert _wait_for(future.done, 30.0)
            assert future.result().success, future.result().message
        assert len(KeyframeMap.load(map_dir, expected_fingerprint=embedder.fingerprint)) == BAG_FRAMES
    finally:
        executor.shutdown()
        node.shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(timeout=10.0)

