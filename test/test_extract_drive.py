"""extract-drive: a bag with images and odometry becomes images + a position CSV that training reads."""
import csv

import cv2

from bag_poses import IMAGE_TOPIC, write_bag
from test_relocalization_cli import T0, _images, _odometry
from training.datasets import load_position_csv
from vpr_ros.cli import main


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_two_drives_become_a_training_set(tmp_path, sample_dir, capsys):
    day = write_bag(tmp_path / "day", {IMAGE_TOPIC: _images(sample_dir, T0),
                                       "/odom": _odometry(T0, end=3.0)})
    night = write_bag(tmp_path / "night", {IMAGE_TOPIC: _images(sample_dir, T0, "night_right"),
                                           "/odom": _odometry(T0)})
    out = tmp_path / "data"
    assert main(["extract-drive", "--source", str(day), "--pose-topic", "/odom", "--every", "2",
                 "--traversal", "day", "--out", str(out)]) == 0
    assert "4 images with positions; 2 frames skipped without a pose" in capsys.readouterr().out
    rows = _rows(out / "day.csv")
    assert [float(r["x"]) for r in rows] == [0.0, 2.0, 4.0, 6.0]   # 2 m/s, every 2nd frame at 2 Hz
    assert {r["traversal"] for r in rows} == {"day"}
    first = cv2.imread(str(out / rows[0]["path"]))
    assert first is not None and first.shape[2] == 3
    assert main(["extract-drive", "--source", str(night), "--pose-topic", "/odom",
                 "--traversal", "night", "--out", str(out)]) == 0

    places = load_position_csv(out / "day.csv", out / "night.csv", pos_radius=1, neg_radius=3)
    assert places.num_db == 4 and places.num_queries == 12
    positives = places.train_positives()
    assert [places.db_positions[p, 0].tolist() for p in positives[:3]] == [[0.0], [0.0, 2.0], [2.0]]


def test_extract_drive_refuses_no_poses_and_an_existing_drive(tmp_path, sample_dir, caplog):
    bag = write_bag(tmp_path / "day", {IMAGE_TOPIC: _images(sample_dir, T0),
                                       "/odom": _odometry(T0 + 100.0, end=3.0)})
    out = tmp_path / "data"
    assert main(["extract-drive", "--source", str(bag), "--traversal", "day", "--out", str(out)]) == 2
    assert "training needs where each frame was taken" in caplog.text
    assert main(["extract-drive", "--source", str(bag), "--pose-topic", "/odom",
                 "--traversal", "day", "--out", str(out)]) == 2
    assert "no frame of" in caplog.text and "has a pose within --max-pose-gap" in caplog.text
    assert not (out / "day.csv").exists()
    (out / "day.csv").write_text("path,x,y\n")
    assert main(["extract-drive", "--source", str(bag), "--pose-topic", "/odom",
                 "--traversal", "day", "--out", str(out)]) == 2
    assert "day.csv exists" in caplog.text
    assert main(["extract-drive", "--source", str(bag), "--pose-topic", "/odom",
                 "--traversal", "a/b", "--out", str(out)]) == 2
    assert "must be a non-empty name" in caplog.text
    assert (out / "day.csv").read_text() == "path,x,y\n"          # the existing drive is kept
