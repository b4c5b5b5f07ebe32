"""build-map and localize with poses: bags with Odometry or TF next to images, TUM files for folders."""
import json
import math

import numpy as np
import pytest

from bag_poses import IMAGE_TOPIC, image_of, jpeg_image, odometry, tf_message, write_bag
from test_localization import PixelEmbedder
from vpr_ros.cli import main
from vpr_ros.mapping import KeyframeMap

IDENTITY = (0.0, 0.0, 0.0, 1.0)
T0 = 1_700_000_000.0
NAMES = [f"Image{2 * i:03d}.jpg" for i in range(12)]


class PoseEmbedder(PixelEmbedder):
    """The engine tests' pixel embedder, as a model of its own (maps of these tests are apart)."""

    fingerprint = "fake-pixels-8x8-poses"


@pytest.fixture
def fake_model(monkeypatch):
    from vpr_ros.commands import build_map, localize

    for module in (build_map, localize):
        monkeypatch.setattr(module, "load_embedder", lambda checkpoint=None, backend="auto": PoseEmbedder())


def _images(sample_dir, t0, condition="day_right"):
    """12 sample images at 2 Hz from t0: image i at t0 + 0.5 i."""
    return [(t0 + 0.5 * i, jpeg_image(t0 + 0.5 * i, image_of(sample_dir / condition / name)))
            for i, name in enumerate(NAMES)]


def _odometry(t0, start=0.0, end=6.0):
    """The robot drives along x at 2 m/s (1 m per frame) from t0 + start to t0 + end, 10 Hz."""
    stamps = t0 + np.arange(start, end + 1e-9, 0.1)
    return [(t, odometry(t, (2.0 * (t - t0), 0.0, 0.0, *IDENTITY), frame_id="map")) for t in stamps]


def test_build_map_from_a_bag_with_odometry_stores_poses_and_counts_frames_without(
        tmp_path, sample_dir, fake_model, capsys):
    bag = write_bag(tmp_path / "day", {IMAGE_TOPIC: _images(sample_dir, T0),
                                       "/odom": _odometry(T0, start=1.0)})
    assert main(["build-map", "--source", str(bag), "--pose-topic", "/odom", "--out", str(tmp_path / "m")]) == 0
    records = KeyframeMap.load(tmp_path / "m").records
    assert [r.pose is None for r in records] == [True, True] + [False] * 10
    np.testing.assert_allclose([r.pose[0] for r in records[2:]], np.arange(2, 12, dtype=float), atol=1e-6)
    out = capsys.readouterr().out
    assert "added 12 keyframes" in out and "10 frames with a pose, 2 kept without one" in out


def test_build_map_from_a_bag_with_tf(tmp_path, sample_dir, fake_model):
    tf = [(t, tf_message(t, [("odom", "base_link", (2.0 * (t - T0), 0.0, 0.0, *IDENTITY))]))
          for t in T0 + np.arange(0.0, 6.01, 0.1)]
    static = [(T0, tf_message(0.0, [("map", "odom", (10.0, 5.0, 0.0, 0.0, 0.0, math.sin(0.5), math.cos(0.5)))]))]
    bag = write_bag(tmp_path / "day", {IMAGE_TOPIC: _images(sample_dir, T0), "/tf": tf, "/tf_static": static})
    assert main(["build-map", "--source", str(bag), "--tf-frames", "map", "base_link",
                 "--every", "3", "--out", str(tmp_path / "m")]) == 0
    records = KeyframeMap.load(tmp_path / "m").records
    assert len(records) == 4 and all(r.pose is not None for r in records)
    # frame 3 is 3 m along odom x, which map rotates by 1 rad about z and shifts by (10, 5)
    np.testing.assert_allclose(records[1].pose[:2], [10 + 3 * math.cos(1.0), 5 + 3 * math.sin(1.0)], atol=1e-6)
    np.testing.assert_allclose(records[1].pose[3:], (0, 0, math.sin(0.5), math.cos(0.5)), atol=1e-9)


def test_localize_a_bag_with_poses_reports_metric_errors(tmp_path, sample_dir, fake_model, capsys):
    day = write_bag(tmp_path / "day", {IMAGE_TOPIC: _images(sample_dir, T0), "/odom": _odometry(T0)})
    assert main(["build-map", "--source", str(day), "--pose-topic", "/odom", "--out", str(tmp_path / "m")]) == 0
    # the same drive later, 0.3 m further along at every frame, with odometry ending early
    t1 = T0 + 1000.0
    odom = [(t, odometry(t, (2.0 * (t - t1) + 0.3, 0.0, 0.0, *IDENTITY), frame_id="map"))
            for t in t1 + np.arange(0.0, 4.01, 0.1)]
    replay = write_bag(tmp_path / "replay", {IMAGE_TOPIC: _images(sample_dir, t1), "/odom": odom})
    config = tmp_path / "engine.yaml"
    config.write_text("decision: single\ntop_k: 1\nscore_threshold: 0.9\nexclusion_window_s: 0.0\n")  # one vote: pose = keyframe
    events_path = tmp_path / "events.jsonl"
    capsys.readouterr()
    assert main(["localize", "--map", str(tmp_path / "m"), "--source", str(replay), "--pose-topic", "/odom",
                 "--config", str(config), "--out", str(events_path)]) == 0
    out = capsys.readouterr().out
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    accepted = [e for e in events if e["status"] == "accepted"]
    assert len(accepted) == 12 and all(e["pose"] is not None for e in accepted)
    report = json.loads((tmp_path / "events.metric.json").read_text())
    assert report["frames"] == 12 and report["frames_with_true_pose"] == 9
    assert report["accepted_without_true_pose"] == 3 and report["count"] == 9
    assert report["unit"] == "m" and report["median_error"] == pytest.approx(0.3, abs=1e-6)
    assert report["within"]["1"] == 1.0 and "with_covariance" in report
    assert "9 frames with a pose, 3 kept without one" in out
    assert "translation error (metres, xyz) of 9 accepted: median 0.30 m" in out
    assert "3 accepted frames have no true pose, not scored" in out


def test_folder_with_times_and_a_tum_trajectory_in_place_index(tmp_path, sample_dir, fake_model, capsys):
    folder = tmp_path / "day"
    folder.mkdir()
    for name in NAMES:
        (folder / name).write_bytes((sample_dir / "day_right" / name).read_bytes())
    times = tmp_path / "times.txt"
    times.write_text("".join(f"{100 + 0.5 * i}\n" for i in range(12)))
    tum = tmp_path / "places.tum"  # along-track place index as x: frame i is at place 2 i
    tum.write_text("# place index, not metres\n" + "".join(
        f"{100 + 0.5 * i} {2 * i} 0 0 0 0 0 1\n" for i in range(12)))
    assert main(["build-map", "--source", str(folder), "--times", str(times), "--trajectory", str(tum),
                 "--out", str(tmp_path / "m")]) == 0
    assert [r.pose[0] for r in KeyframeMap.load(tmp_path / "m").records] == [2.0 * i for i in range(12)]
    config = tmp_path / "engine.yaml"
    config.write_text("decision: single\ntop_k: 1\nscore_threshold: 0.9\n")  # one vote: pose = keyframe
    capsys.readouterr()
    assert main(["localize", "--map", str(tmp_path / "m"), "--source", str(folder), "--times", str(times),
                 "--trajectory", str(tum), "--pose-unit", "place", "--error-axes", "x", "--config", str(config),
                 "--out", str(tmp_path / "e.jsonl"), "--metrics", str(tmp_path / "report.json")]) == 0
    out = capsys.readouterr().out
    assert "translation error (place index, x) of 12 accepted: median 0.00 places" in out
    assert json.loads((tmp_path / "report.json").read_text())["unit"] == "place"


def test_pose_option_errors_are_clear(tmp_path, sample_dir, fake_model, caplog):
    bag = write_bag(tmp_path / "day", {IMAGE_TOPIC: _images(sample_dir, T0), "/odom": _odometry(T0)})
    out = str(tmp_path / "m")
    assert main(["build-map", "--source", str(bag), "--pose-topic", "/odometry", "--out", out]) == 2
    assert "pose topic '/odometry' is not in bag" in caplog.text and "/odom (nav_msgs/msg/Odometry)" in caplog.text
    assert main(["build-map", "--source", str(sample_dir / "day_right"), "--pose-topic", "/odom", "--out", out]) == 2
    assert "give a TUM file with --trajectory instead" in caplog.text
    assert main(["build-map", "--source", str(bag), "--rate", "2", "--out", out]) == 2
    assert "--rate stamps image folders" in caplog.text
    bad = tmp_path / "bad.tum"
    bad.write_text("1 0 0 0 0 0 0 1\n2 0 0 0 0 0 1\n")
    assert main(["build-map", "--source", str(bag), "--trajectory", str(bad), "--out", out]) == 2
    assert "bad.tum, line 2: expected 8 numbers" in caplog.text
    assert not (tmp_path / "m").exists(), "no map is written when the poses cannot be read"
    with pytest.raises(SystemExit):
        main(["build-map", "--source", str(bag), "--trajectory", str(bad), "--pose-topic", "/odom", "--out", out])
