"""vpr_node behaviour on the bundled sample, ROS-free: buffer, diagnostics, match image, frame
processor, engine setup, the console script outside ROS 2, and what the launch test expects.
Under rclpy: test_ros_node_rclpy.py and test_ros_node_process.py."""
import json
import os
import shutil
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from sample_frames import (PixelEmbedder, build_map, node_parameters, processor_for, replay,
                           sample_messages, small_checkpoint, trajectory_pose)
from vpr_ros.localization import EngineConfig, LocalizationEngine
from vpr_ros.mapping import KeyframeMap, MapMismatchError
from vpr_ros.mapping.thumbnail import decode_thumbnail, encode_thumbnail
from vpr_ros.ros.diagnostics import OK, WARN, NodeStatistics
from vpr_ros.ros.engine_setup import build_engine
from vpr_ros.ros.latest_buffer import LatestOnlyBuffer
from vpr_ros.ros.match_image import compose_match_image
from vpr_ros.ros.parameters import NodeSettings


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


# --- frame processor: bundled sample through the real engine, no ROS -----------------------

FRAMES = 24


class RecordingEngine(LocalizationEngine):
    """The real engine, remembering the pose it was given with each frame."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.poses = []

    def process(self, frame, pose=None):
        self.poses.append(pose)
        return super().process(frame, pose=pose)


def _garbled(msg):
    return type(msg)(header=msg.header, format="jpeg",
                     data=np.frombuffer(b"\xff\xd8junk", np.uint8))


def _blank(msg):
    ok, payload = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))
    assert ok
    return type(msg)(header=msg.header, format="jpeg", data=payload.ravel())


def test_processor_relocalizes_sample_frames_against_the_saved_map(messages, sample_map):
    settings = NodeSettings(map_path=str(sample_map))
    config = EngineConfig(mode="localization", decision="chain", temporal_consecutive=3, rerank="none")
    engine = build_engine(settings, config, embedder=PixelEmbedder())
    processor, stats = processor_for(engine, map_path=str(sample_map))
    outcomes = [processor.process(msg, i, received_at=float(i)) for i, msg in enumerate(messages)]
    events = [json.loads(o.event_json) for o in outcomes]
    assert all(e["schema"] == 2 and e["candidates"] for e in events)
    assert [e["status"] for e in events[:2]] == ["rejected", "rejected"]
    assert {e["reason"] for e in events[:2]} == {"temporal_inconsistent"}
    accepted = [o for o in outcomes[2:] if o.decision.accepted]
    assert len(accepted) == FRAMES - 2
    for o in accepted:
        i = o.decision.frame_index
        assert o.decision.best.keyframe_id == i, "the same image must match its own keyframe"
        assert o.relocalization.pose == o.decision.pose
        assert abs(o.relocalization.pose[0] - trajectory_pose(i)[0]) < 3.0   # mean-shift of the votes
        assert o.relocalization.covariance == pytest.approx(
            np.asarray(o.decision.covariance).reshape(-1).tolist())
    assert stats.accepted == FRAMES - 2 and stats.failed == 0
    picture = processor.match_image(accepted[0])
    assert picture.dtype == np.uint8 and picture[-2, 2].tolist() == [40, 170, 60]


def test_processor_turns_a_garbled_message_into_a_rejected_event(messages, sample_map):
    engine = build_engine(NodeSettings(map_path=str(sample_map)), EngineConfig(),
                          embedder=PixelEmbedder())
    processor, stats = processor_for(engine)
    outcome = processor.process(_garbled(messages[0]), 7, received_at=0.0)
    event = json.loads(outcome.event_json)
    assert (event["status"], event["reason"], event["frame_index"]) == ("rejected", "bad_frame", 7)
    assert "cannot decode CompressedImage" in event["detail"] and outcome.error
    assert outcome.relocalization is None and processor.match_image(outcome) is None
    assert stats.failed == 1 and stats.processed == 0
    good = processor.process(messages[0], 8, received_at=0.0)
    assert json.loads(good.event_json)["reason"] != "bad_frame"


def test_processor_survives_an_engine_error_as_a_rejected_event(messages, sample_map):
    class FailingEngine(LocalizationEngine):
        def process(self, frame, pose=None):
            raise RuntimeError("FAISS index corrupted")

    engine = FailingEngine(KeyframeMap.load(sample_map), PixelEmbedder(), EngineConfig())
    processor, stats = processor_for(engine)
    event = json.loads(processor.process(messages[0], 0, received_at=0.0).event_json)
    assert (event["status"], event["reason"]) == ("rejected", "bad_frame")
    assert event["detail"] == "RuntimeError: FAISS index corrupted" and stats.failed == 1


def test_processor_looks_up_the_pose_only_for_usable_frames_in_the_frame_mode(messages,
                                                                              sample_map):
    engine = RecordingEngine(KeyframeMap.load(sample_map), PixelEmbedder(), EngineConfig())
    processor, _ = processor_for(engine)
    asked = []

    def lookup(mode):
        asked.append(mode)
        return trajectory_pose(100 + len(asked))

    processor.process(_garbled(messages[0]), 0, received_at=0.0, lookup_pose=lookup)
    processor.process(_blank(messages[0]), 1, received_at=0.0, lookup_pose=lookup)
    assert asked == [], "no TF lookup for a frame that cannot be used"
    processor.process(messages[0], 2, received_at=0.0, lookup_pose=lookup)
    assert asked == ["localization"]
    assert engine.poses[-1] == trajectory_pose(101), "localization: the odometry pose goes along"
    processor.set_mode("mapping")
    decision = processor.process(messages[1], 3, received_at=0.0, lookup_pose=lookup).decision
    assert asked[-1] == "mapping" and engine.config.mode == "mapping"
    assert decision.keyframe_added is not None
    assert engine.map.record(decision.keyframe_added).pose == trajectory_pose(102)


def test_mode_switch_and_reset_do_not_wait_for_the_frame_in_progress(messages, sample_map):
    class SlowEngine(LocalizationEngine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.entered, self.release, self.resets = threading.Event(), threading.Event(), 0

        def process(self, frame, pose=None):
            self.entered.set()
            assert self.release.wait(10.0)
            return super().process(frame, pose=pose)

        def reset(self):
            self.resets += 1
            super().reset()

    engine = SlowEngine(KeyframeMap.load(sample_map), PixelEmbedder(), EngineConfig())
    processor, _ = processor_for(engine)
    worker = threading.Thread(target=processor.process, args=(messages[0], 0, 0.0))
    worker.start()
    assert engine.entered.wait(10.0)
    started = time.monotonic()
    processor.set_mode("mapping")
    processor.reset()
    assert time.monotonic() - started < 0.5, "service calls must not wait for a frame"
    assert processor.mode == "mapping" and engine.config.mode == "localization"
    engine.release.set()
    worker.join(10.0)
    processor.process(messages[1], 1, received_at=0.0)
    assert engine.config.mode == "mapping" and engine.resets == 1
    processor.process(messages[2], 2, received_at=0.0)
    assert engine.resets == 1, "one reset request, one reset"


def test_processor_refuses_an_unknown_mode_and_saving_without_a_path(sample_map):
    engine = build_engine(NodeSettings(map_path=str(sample_map)), EngineConfig(),
                          embedder=PixelEmbedder())
    processor, _ = processor_for(engine)
    assert processor.mode == "localization" and processor.map_size == FRAMES
    with pytest.raises(ValueError, match="mode must be one of"):
        processor.set_mode("slam")
    assert processor.mode == "localization"
    with pytest.raises(ValueError, match="map_path is empty"):
        processor.save_map("")


@pytest.mark.parametrize("decision", ["single", "sequence"])
def test_reset_in_mapping_mode_keeps_own_recent_keyframes_out_of_the_matches(messages, decision):
    config = EngineConfig(mode="mapping", keyframe_interval_s=0.5, decision=decision,
                          exclusion_window_s=30.0)
    engine = LocalizationEngine(KeyframeMap.create(PixelEmbedder.dim, PixelEmbedder.fingerprint),
                                PixelEmbedder(), config)
    processor, _ = processor_for(engine)
    for i, msg in enumerate(messages[:6]):
        processor.process(msg, i, received_at=0.0, lookup_pose=lambda mode: trajectory_pose(0))
    processor.reset()
    again = type(messages[5])(header=messages[6].header, format="jpeg", data=messages[5].data)
    decision = processor.process(again, 6, received_at=0.0,
                                 lookup_pose=lambda mode: trajectory_pose(0)).decision
    assert not decision.accepted, "a keyframe added 1 s ago is not a loop closure"


def test_engine_setup_explains_missing_model_map_and_model_mismatch(sample_map, tmp_path):
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
        build_engine(NodeSettings(map_path=str(sample_map)), EngineConfig(), embedder=OtherModel())


def _crash_during_save(old, new, target, point):
    """Lay out `target`'s directory as KeyframeMap.save (storage.replace_directory) leaves it
    when the process dies at `point`; returns the keyframe count of the map that must be read."""
    parent = target.parent
    if point == "writing":            # the new map half-written beside the intact old one
        shutil.copytree(old, target)
        shutil.copytree(new, parent / f".{target.name}.saving-x1")
        os.remove(next((parent / f".{target.name}.saving-x1").glob("*.faiss")))
        return len(KeyframeMap.load(old))
    if point == "between_renames":    # old map moved aside, new one not in place yet
        shutil.copytree(old, parent / f".{target.name}.previous-x2")
        shutil.copytree(new, parent / f".{target.name}.saving-x3")
        return len(KeyframeMap.load(old))
    shutil.copytree(new, target)      # "before_cleanup": new map in place, old one not deleted
    shutil.copytree(old, parent / f".{target.name}.previous-x4")
    return len(KeyframeMap.load(new))


@pytest.mark.parametrize("point", ["writing", "between_renames", "before_cleanup"])
def test_mapping_after_a_crash_during_a_save_extends_the_map_on_disk(point, messages, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    build_map(PixelEmbedder(), messages[:6], old)
    build_map(PixelEmbedder(), messages[:8], new)
    target = tmp_path / "maps" / "campus"
    target.parent.mkdir()
    expected = _crash_during_save(old, new, target, point)
    settings = NodeSettings(map_path=str(target))

    relocalizer = build_engine(settings, EngineConfig(), embedder=PixelEmbedder())
    assert len(relocalizer.map) == expected, "localization reads the map a crash left"
    engine = build_engine(settings, EngineConfig(mode="mapping", session="second",
                                                 keyframe_novelty_threshold=1.0),
                          embedder=PixelEmbedder())
    assert len(engine.map) == expected, "mapping must extend the map on disk, not start empty"
    processor, _ = processor_for(engine)
    assert processor.process(messages[10], 0, received_at=0.0).decision.keyframe_added is not None
    assert processor.save_map(str(target)) == expected + 1
    assert len(KeyframeMap.load(target)) == expected + 1
    assert sorted(p.name for p in target.parent.iterdir()) == ["campus"], "leftovers cleaned up"


def test_engine_setup_passes_the_gpu_parameters_to_the_embedder_and_the_map(monkeypatch,
                                                                             sample_map):
    from vpr_ros.mapping import gpu_available
    from vpr_ros.ros import engine_setup

    asked = {}

    def fake_load_embedder(model, **kwargs):
        asked.update(model=model, **kwargs)
        return PixelEmbedder()

    monkeypatch.setattr(engine_setup, "load_embedder", fake_load_embedder)
    settings = NodeSettings(model="/m/model.pt", backend="tensorrt", engine_precision="int8",
                            engine_path="/m/model.int8.engine", map_path=str(sample_map))
    build_engine(settings, EngineConfig())
    assert asked == {"model": "/m/model.pt", "backend": "tensorrt", "precision": "int8",
                     "engine": "/m/model.int8.engine"}
    build_engine(NodeSettings(model="/m/model.pt", map_path=str(sample_map)), EngineConfig())
    assert (asked["engine"], asked["precision"]) == (None, "auto")
    if gpu_available():
        pytest.skip("faiss sees a GPU here: map_use_gpu would succeed")
    with pytest.raises(ValueError, match="GPU index was requested"):
        build_engine(NodeSettings(model="/m/model.pt", map_path=str(sample_map),
                                  map_use_gpu=True), EngineConfig())


# --- the console script outside ROS 2 ------------------------------------------------------

def test_vpr_node_without_ros_says_in_one_line_to_source_a_setup(monkeypatch, capsys):
    from vpr_ros.ros import entry

    monkeypatch.delitem(sys.modules, "vpr_ros.ros.node", raising=False)
    monkeypatch.setitem(sys.modules, "rclpy", None)      # what an unsourced shell looks like
    assert entry.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'rclpy' not found" in err and "source" in err
    assert "Traceback" not in err


def test_only_missing_ros_modules_count_as_an_unsourced_shell():
    from vpr_ros.ros.entry import is_ros_module

    for name in ("rclpy.node", "tf2_ros", "sensor_msgs.msg", "std_srvs.srv", "rcl_interfaces.msg"):
        assert is_ros_module(name), name
    for name in ("faiss", "torch", "vpr_ros.ros.conversions"):
        assert not is_ros_module(name), name


def test_launch_test_parameters_accept_each_published_frame_at_its_own_keyframe(tmp_path):
    """What test_launch_localize.py (launch_testing, needs a ROS 2 install) expects of the
    launched node, checked here without ROS: same model, map, parameters and replay."""
    from vpr_ros.runtime.embedder import load_embedder

    checkpoint = small_checkpoint(tmp_path / "model.pt")
    build_map(load_embedder(checkpoint, backend="torch"), sample_messages(12), tmp_path / "map")
    decisions = replay(node_parameters(model=str(checkpoint), map_path=str(tmp_path / "map"),
                                       backend="torch", use_compressed=True), sample_messages(6))
    assert [(d.accepted, d.best.keyframe_id) for d in decisions] == [(True, i) for i in range(6)]
    assert all(d.pose is not None for d in decisions), "relocalizations for every frame"
