"""Per-frame engine on synthetic maps with a fake embedder: exclusion window, temporal consistency,
mapping mode, bad frames, event schema."""
import json

import numpy as np
import pytest

from vpr_ros.io.frames import Frame
from vpr_ros.localization import EngineConfig, LocalizationEngine, replay
from vpr_ros.localization.rerank import place_voting
from vpr_ros.localization.decision import Candidate
from vpr_ros.mapping import Keyframe, KeyframeMap

DIM = 64


class PixelEmbedder:
    """Fake Embedder: the image downsampled to 8×8 grey, mean-removed and L2-normalized."""

    dim = DIM
    fingerprint = "fake-pixels-8x8"

    def __init__(self):
        self.calls = 0

    def embed(self, images):
        self.calls += 1
        rows = []
        for image in images:
            h, w = image.shape[:2]
            grey = image.mean(axis=2)[: h // 8 * 8, : w // 8 * 8]
            small = grey.reshape(8, h // 8, 8, w // 8).mean(axis=(1, 3)).reshape(-1)
            small = small - small.mean()
            rows.append(small / np.linalg.norm(small))
        return np.asarray(rows, dtype=np.float32)


class BrokenEmbedder(PixelEmbedder):
    def embed(self, images):
        raise RuntimeError("CUDA error: device lost (simulated)")


def place_image(place: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A 64×64 RGB image unique to `place`, optionally with pixel noise (a revisit)."""
    base = np.random.default_rng(1000 + place).integers(0, 256, (8, 8)).repeat(8, 0).repeat(8, 1)
    noisy = base + noise * np.random.default_rng(seed).standard_normal(base.shape)
    return np.repeat(np.clip(noisy, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def frame(place: int, stamp: float, noise: float = 20.0, index: int = 0) -> Frame:
    return Frame(place_image(place, noise, seed=int(stamp * 10)), stamp, "camera", index, f"f{index}")


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def route_map(places: int = 30, session: str = "day") -> KeyframeMap:
    """A map with one keyframe per place, 1 s apart, each with a pose x = place."""
    kf_map = KeyframeMap.create(DIM, PixelEmbedder.fingerprint)
    descriptors = PixelEmbedder().embed([place_image(p) for p in range(places)])
    kf_map.add(descriptors, [Keyframe(session, float(p), "camera", (float(p), 0, 0, 0, 0, 0, 1), "day")
                             for p in range(places)])
    return kf_map


def engine(kf_map=None, **overrides) -> LocalizationEngine:
    return LocalizationEngine(kf_map if kf_map is not None else route_map(), PixelEmbedder(),
                              EngineConfig(**overrides))


def test_true_revisit_is_accepted_after_three_coherent_frames():
    eng = engine(decision="chain", temporal_consecutive=3)
    decisions = [eng.process(frame(p, 1000.0 + i)) for i, p in enumerate([10, 11, 12, 13])]
    assert [d.reason for d in decisions[:2]] == ["temporal_inconsistent"] * 2
    assert decisions[2].accepted and decisions[3].accepted
    assert decisions[2].best.keyframe_id == 12 and decisions[2].temporal_count == 3
    assert decisions[2].pose[0] == pytest.approx(12.0, abs=0.5)      # mean-shift over the candidates
    assert decisions[2].pose[3:] == (0, 0, 0, 1)                       # orientation of the keyframe
    assert np.all(np.linalg.eigvalsh(np.array(decisions[2].covariance)) > 0)
    assert 0.0 < decisions[2].confidence <= 1.0


def test_one_frame_fluke_is_rejected():
    kf_map = route_map()
    eng = engine(kf_map, decision="chain", temporal_consecutive=3)
    unseen = [frame(100 + i, 1000.0 + i) for i in range(6)]
    unseen[3] = frame(20, 1003.0)
    decisions = [eng.process(f) for f in unseen]
    assert decisions[3].best.keyframe_id == 20 and decisions[3].reason == "temporal_inconsistent"
    assert not any(d.accepted for d in decisions)
    assert {d.reason for d in decisions[:3] + decisions[4:]} == {"below_threshold"}


def test_matches_jumping_across_the_map_are_not_coherent():
    eng = engine(decision="chain", temporal_consecutive=3)
    decisions = [eng.process(frame(p, 1000.0 + i)) for i, p in enumerate([5, 25, 12, 2])]
    assert all(d.reason == "temporal_inconsistent" for d in decisions)


def test_a_gap_in_time_breaks_the_chain():
    eng = engine(decision="chain", temporal_consecutive=3, temporal_max_gap_s=5.0)
    eng.process(frame(10, 1000.0))
    eng.process(frame(11, 1001.0))
    assert eng.process(frame(12, 1060.0)).reason == "temporal_inconsistent"


def test_exclusion_window_hides_own_recent_keyframes_only():
    eng = engine(KeyframeMap.create(DIM, PixelEmbedder.fingerprint), mode="mapping", session="live",
                 exclusion_window_s=30.0, decision="single", keyframe_interval_s=0)
    first = eng.process(frame(1, 0.0))
    assert first.reason == "empty_map" and first.keyframe_added == 0
    eng.process(frame(2, 1.0))
    back_soon = eng.process(frame(1, 10.0))
    assert all(c.keyframe_id not in (0, 1) for c in back_soon.candidates)
    assert back_soon.reason == "empty_map", "all keyframes are the robot's own recent ones"
    assert back_soon.keyframe_added is None, "not novel: keyframe 0 shows this place"
    back_later = eng.process(frame(1, 45.0))
    assert back_later.accepted and back_later.best.keyframe_id == 0


def test_a_parked_robot_never_closes_a_loop_onto_its_own_keyframes():
    eng = engine(KeyframeMap.create(DIM, PixelEmbedder.fingerprint), mode="mapping", session="live",
                 decision="single", exclusion_window_s=5.0, exclusion_distance_m=10.0,
                 keyframe_interval_s=1.0)
    parked = (3.0, 0, 0, 0, 0, 0, 1)
    decisions = [eng.process(frame(4, float(t)), pose=parked) for t in range(60)]
    assert not any(d.accepted for d in decisions)
    eng.reset()
    assert not eng.process(frame(4, 61.0), pose=parked).accepted
    away = [eng.process(frame(20 + t, 62.0 + t), pose=(3.0 + 2 * (t + 1), 0, 0, 0, 0, 0, 1))
            for t in range(6)]
    back = eng.process(frame(4, 70.0), pose=(4.0, 0, 0, 0, 0, 0, 1))
    assert not any(d.accepted for d in away) and back.accepted and back.best.stamp < 60


def test_keyframes_of_earlier_sessions_are_never_excluded():
    eng = engine(exclusion_window_s=1e9, decision="single")
    assert eng.process(frame(7, 7.0)).best.keyframe_id == 7


def test_mapping_mode_adds_novel_frames_and_time_triggered_ones():
    kf_map = KeyframeMap.create(DIM, PixelEmbedder.fingerprint)
    eng = engine(kf_map, mode="mapping", session="night", condition="night", keyframe_interval_s=10.0,
                 exclusion_window_s=0.0)
    added = [eng.process(frame(p, float(t))).keyframe_added for t, p in
             enumerate([0, 0, 0, 1, 1, 2])]
    assert added == [0, None, None, 1, None, 2]
    assert eng.process(frame(2, 20.0)).keyframe_added == 3, "10 s since the last keyframe"
    assert len(kf_map) == 4 and {kf.session for kf in kf_map.records} == {"night"}
    assert kf_map.record(0).condition == "night" and kf_map.record(0).thumbnail.startswith(b"\xff\xd8")


def test_localization_mode_never_changes_the_map():
    kf_map = route_map()
    eng = engine(kf_map)
    for i in range(5):
        eng.process(frame(100 + i, float(i)))
    assert len(kf_map) == 30


@pytest.mark.parametrize("image, detail", [
    (None, "not a numpy array"),
    (np.zeros((0, 0, 3), np.uint8), "smaller than"),
    (np.zeros((48, 64), np.uint8), "H×W×3"),
    (np.zeros((48, 64, 3), np.float32), "uint8"),
    (np.zeros((48, 64, 3), np.uint8), "uniform"),
])
def test_bad_frame_gives_a_rejected_decision(image, detail):
    decision = engine().process(Frame(image, 5.0, "camera", 3, "bad.jpg"))
    assert decision.status == "rejected" and decision.reason == "bad_frame" and detail in decision.detail
    assert decision.frame_name == "bad.jpg"
    json.dumps(decision.to_dict())


def test_a_missing_frame_gives_a_json_safe_bad_frame():
    event = engine().process(None).to_dict()
    assert event["reason"] == "bad_frame" and event["stamp"] is None
    json.dumps(event, allow_nan=False)


def test_embedder_failure_gives_bad_frame_not_an_exception():
    eng = LocalizationEngine(route_map(), BrokenEmbedder(), EngineConfig())
    decision = eng.process(frame(3, 1.0))
    assert decision.reason == "bad_frame" and "simulated" in decision.detail


def test_bad_descriptor_is_a_bad_frame():
    eng = engine()
    assert eng.process_descriptor(np.ones(DIM, np.float32), 1.0).reason == "bad_frame"
    assert "shape" in eng.process_descriptor(np.ones(3, np.float32), 1.0).detail


def test_batch_replay_equals_frame_by_frame_and_isolates_a_bad_frame():
    frames = [frame(p, 100.0 + i, index=i) for i, p in enumerate([4, 5, 6, 7, 8])]
    frames[2] = Frame(np.zeros((64, 64, 3), np.uint8), 102.0, "camera", 2, "black")
    single = engine()
    one_by_one = [single.process(f).to_dict() for f in frames]
    batched_engine = engine()
    batched = [d.to_dict() for d in replay(batched_engine, frames, batch_size=4)]
    strip = lambda events: [{k: v for k, v in e.items() if k != "latency_ms"} for e in events]
    assert strip(batched) == strip(one_by_one)
    assert batched[2]["reason"] == "bad_frame"
    assert batched_engine.embedder.calls == 2, "5 frames in batches of 4"


def test_decision_event_is_json_with_schema_version():
    eng = engine(decision="single")
    event = eng.process(frame(9, 50.0)).to_dict()
    assert json.loads(json.dumps(event)) == event
    assert event["schema"] == 2 and event["status"] == "accepted" and event["best"]["keyframe_id"] == 9
    assert len(event["candidates"]) == 10 and event["pose"][0] == pytest.approx(9.0, abs=0.5)
    assert np.array(event["covariance"]).shape == (6, 6) and event["sequence"] is None
    assert set(event) >= {"stamp", "reason", "verification", "confidence", "keyframe_added", "temporal_count"}


def test_score_threshold_rejects_weak_matches():
    decision = engine(score_threshold=0.999, decision="single").process(frame(9, 50.0, noise=40))
    assert decision.reason == "below_threshold" and decision.best.keyframe_id == 9


def test_embedder_of_another_model_is_refused():
    other = PixelEmbedder()
    other.fingerprint = "another"
    with pytest.raises(ValueError, match="not the one the map was built with"):
        LocalizationEngine(route_map(), other)


def test_config_from_yaml_and_unknown_keys(tmp_path):
    path = tmp_path / "engine.yaml"
    path.write_text("engine:\n  top_k: 5\n  temporal_consecutive: 2\n")
    assert EngineConfig.from_yaml(path).top_k == 5
    path.write_text("top_kk: 5\n")
    with pytest.raises(ValueError, match="unknown engine config keys.*top_kk"):
        EngineConfig.from_yaml(path)
    with pytest.raises(ValueError, match="temporal_consecutive"):
        EngineConfig(temporal_consecutive=0)


def test_place_voting_prefers_a_place_seen_by_several_keyframes():
    cands = [Candidate(0, "day", 50.0, 0.80, 0.80), Candidate(1, "day", 10.0, 0.75, 0.75),
             Candidate(2, "day", 10.5, 0.70, 0.70), Candidate(3, "night", 10.2, 0.74, 0.74)]
    ranked = place_voting(cands, window_s=1.0)
    assert [c.keyframe_id for c in ranked] == [1, 2, 0, 3]
    assert ranked[0].score == 0.75 and ranked[0].place_score == pytest.approx(1.45)


@pytest.fixture
def fake_model(monkeypatch):
    """Commands load the PixelEmbedder instead of a checkpoint (the real model is tested elsewhere)."""
    from vpr_ros.commands import build_map, localize

    for module in (build_map, localize):
        monkeypatch.setattr(module, "load_embedder", lambda checkpoint=None, backend="auto": PixelEmbedder())


def test_build_map_extend_by_night_then_localize(sample_dir, tmp_path, fake_model, capsys):
    from vpr_ros.cli import main

    map_dir = tmp_path / "map"
    assert main(["build-map", "--source", str(sample_dir / "day_right"), "--session", "day",
                 "--condition", "day", "--every", "2", "--out", str(map_dir)]) == 0
    assert len(KeyframeMap.load(map_dir)) == 50
    # The default index is auto; the pixel descriptors leave the sq8 range, so it keeps fp16.
    assert "index auto: exact fp16 until 50000 keyframes" in capsys.readouterr().out
    assert main(["build-map", "--source", str(sample_dir / "night_right"), "--session", "night",
                 "--condition", "night", "--every", "10", "--verification", "orb", "--out", str(map_dir)]) == 0
    assert "of 10 keyframes linked to places the map already held" in capsys.readouterr().out
    kf_map = KeyframeMap.load(map_dir, expected_fingerprint=PixelEmbedder.fingerprint)
    assert kf_map.sessions["night"] == {"keyframes": 10, "conditions": ["night"]}
    assert kf_map.record(50).features is not None and kf_map.record(0).features is None
    assert main(["build-map", "--source", str(sample_dir / "night_right"), "--session", "night",
                 "--out", str(map_dir)]) == 2, "a session name is used once per map"

    config = tmp_path / "engine.yaml"
    # raw-pixel descriptors: consecutive frames are >0.9 alike (no stop detection by view), and
    # their margins are not the calibrated model's (sequence threshold 1.0)
    config.write_text("engine:\n  temporal_consecutive: 2\n  score_threshold: 0.3\n"
                      "  sequence_stop_similarity: 1.0\n  sequence_threshold: 1.0\n")
    events_path = tmp_path / "events.jsonl"
    capsys.readouterr()
    assert main(["localize", "--map", str(map_dir), "--source", str(sample_dir / "day_right"),
                 "--config", str(config), "--out", str(events_path)]) == 0
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert len(events) == 100 and all(e["schema"] == 2 for e in events)
    accepted = [e for e in events if e["status"] == "accepted"]
    assert len(accepted) > 50, "the day traverse relocalizes against its own keyframes"
    out = capsys.readouterr().out
    assert "100 frames" in out and f"decision sequence: {EngineConfig().sequence_length} frames" in out
    assert main(["localize", "--map", str(map_dir), "--source", str(sample_dir / "day_right"),
                 "--config", str(config), "--decision", "chain", "--threshold", "0.35",
                 "--out", str(events_path)]) == 0
    assert "decision chain: score >= 0.35, 2 consecutive" in capsys.readouterr().out
    assert main(["localize", "--map", str(map_dir), "--source", str(sample_dir / "day_right"),
                 "--sequence-length", "0", "--out", str(events_path)]) == 2


def test_build_map_extends_a_map_left_aside_by_a_crashed_save(sample_dir, tmp_path, fake_model):
    from vpr_ros.cli import main

    map_dir = tmp_path / "map"
    day = ["build-map", "--source", str(sample_dir / "day_right"), "--every", "10"]
    assert main(day + ["--session", "day", "--out", str(map_dir)]) == 0
    map_dir.rename(tmp_path / ".map.previous-crash")      # a crash between the save's two renames
    assert main(day + ["--session", "again", "--out", str(map_dir)]) == 0
    assert KeyframeMap.load(map_dir).sessions["day"]["keyframes"] == 10, "the old map is never lost"
    assert len(KeyframeMap.load(map_dir)) == 20
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main(day + ["--out", str(tmp_path / "notes")]) == 2
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


def test_build_map_from_a_rosbag(gardens_point_bags, tmp_path, fake_model):
    from vpr_ros.cli import main

    bag = gardens_point_bags / "night_right_raw_every20_sqlite3"
    assert main(["build-map", "--source", str(bag), "--index", "fp16", "--out", str(tmp_path / "m")]) == 0
    kf_map = KeyframeMap.load(tmp_path / "m")
    assert len(kf_map) == 10 and kf_map.index_spec.kind == "fp16"
    assert kf_map.record(1).stamp - kf_map.record(0).stamp == pytest.approx(10.0)
    assert kf_map.record(0).session == "night_right_raw_every20_sqlite3"


def test_localize_refuses_verification_without_map_features(sample_dir, tmp_path, fake_model):
    from vpr_ros.cli import main

    assert main(["build-map", "--source", str(sample_dir / "day_right"), "--every", "20",
                 "--out", str(tmp_path / "m")]) == 0
    config = tmp_path / "engine.yaml"
    config.write_text("verify: true\n")
    assert main(["localize", "--map", str(tmp_path / "m"), "--source", str(sample_dir / "day_right"),
                 "--config", str(config), "--out", str(tmp_path / "e.jsonl")]) == 2
    assert not (tmp_path / "e.jsonl").exists()


def _folder_with_undecodable(sample_dir, folder, bad):
    """The first 10 day frames copied to `folder`, frames in `bad` replaced by text."""
    import shutil

    from vpr_ros.io.images import list_images

    folder.mkdir()
    for k, path in enumerate(list_images(sample_dir / "day_right")[:10]):
        target = folder / path.name
        if k in bad:
            target.write_text("not an image")
        else:
            shutil.copy(path, target)
    return folder


def test_build_map_counts_undecodable_frames_as_skipped(sample_dir, tmp_path, fake_model, capsys):
    from vpr_ros.cli import main

    folder = _folder_with_undecodable(sample_dir, tmp_path / "frames", bad={3})
    assert main(["build-map", "--source", str(folder), "--out", str(tmp_path / "m")]) == 0
    assert "added 9 keyframes as session 'frames' (1 frames skipped)" in capsys.readouterr().out
    assert main(["build-map", "--source", str(folder), "--every", "2", "--session", "even",
                 "--out", str(tmp_path / "m")]) == 0
    assert "added 5 keyframes as session 'even' (0 frames skipped)" in capsys.readouterr().out, \
        "frame 3 is not one of the kept frames 0, 2, 4, 6, 8 (kept by index, not shifted)"


def test_localize_counts_undecodable_frames_and_refuses_a_source_with_none_usable(
        sample_dir, tmp_path, fake_model, capsys, caplog):
    from vpr_ros.cli import main

    good = _folder_with_undecodable(sample_dir, tmp_path / "good", bad={9})
    assert main(["build-map", "--source", str(good), "--out", str(tmp_path / "m")]) == 0
    events = tmp_path / "events.jsonl"
    assert main(["localize", "--map", str(tmp_path / "m"), "--source", str(good),
                 "--out", str(events)]) == 0
    summary = capsys.readouterr().out
    assert "9 frames:" in summary and "(1 undecodable frames skipped)" in summary
    broken = _folder_with_undecodable(sample_dir, tmp_path / "broken", bad=set(range(10)))
    events.unlink()
    assert main(["localize", "--map", str(tmp_path / "m"), "--source", str(broken),
                 "--out", str(events)]) == 2
    assert f"no usable frames in {broken}" in caplog.text
    assert not events.exists(), "no empty events file is left behind"


def test_localize_with_another_model_refuses_before_exporting(sample_dir, tmp_path):
    """A wrong checkpoint is refused from the map's manifest, before `auto` exports it to ONNX."""
    from vpr_ros.cli import main
    from vpr_ros.model import ModelConfig, build_model
    from vpr_ros.model.checkpoint import save_checkpoint

    kf_map = KeyframeMap.create(DIM, PixelEmbedder.fingerprint)
    kf_map.add(np.eye(1, DIM, dtype=np.float32), [Keyframe("s", 0.0)])
    kf_map.save(tmp_path / "m")
    checkpoint = tmp_path / "other.pt"
    save_checkpoint(checkpoint, build_model(ModelConfig(
        backbone="efficientnet_lite0", image_long_side=96, num_clusters=8, reduce_dim=16,
        backbone_kwargs={"feature_block": 5})))
    assert main(["localize", "--map", str(tmp_path / "m"), "--source", str(sample_dir / "day_right"),
                 "--model", str(checkpoint), "--backend", "auto",
                 "--out", str(tmp_path / "e.jsonl")]) == 2
    assert not (tmp_path / ".vpr_ros_cache").exists(), "nothing exported for a refused model"
    assert not (tmp_path / "e.jsonl").exists()
