"""A user's own drives, end to end on the bundled sample: a day and a night rosbag become two
`vpr-ros extract-drive` outputs, `vpr-train` trains on one stretch of the route and validates on
a held-out one, `python -m training.compare` says whether training helped there, and the trained
model builds a map on the robot side."""
import yaml

from bag_poses import IMAGE_TOPIC, image_of, jpeg_image, odometry, write_bag
from training.compare import main as compare_main
from training.train import main as train_main
from vpr_ros.cli import main as vpr_main
from vpr_ros.mapping import KeyframeMap
from vpr_ros.model.checkpoint import load_checkpoint

FRAMES = 40
T0 = 1_700_000_000.0
TINY_MODEL = {"backbone": "efficientnet_lite0", "image_long_side": 64, "num_clusters": 4,
              "reduce_dim": None, "backbone_kwargs": {"feature_block": 4}}


def _drive_bag(path, sample_dir, condition):
    """FRAMES sample images at 2 Hz while the robot drives along x at 2 m/s (1 m per frame)."""
    images = [(T0 + 0.5 * i, jpeg_image(T0 + 0.5 * i, image_of(
        sample_dir / condition / f"Image{2 * i:03d}.jpg"))) for i in range(FRAMES)]
    poses = [(T0 + 0.1 * k, odometry(T0 + 0.1 * k, (0.2 * k, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                                     frame_id="map")) for k in range(5 * FRAMES)]
    return write_bag(path, {IMAGE_TOPIC: images, "/odom": poses})


def test_two_extracted_drives_train_validate_on_a_held_out_stretch_and_map(
        tmp_path, sample_dir, capsys):
    drives = tmp_path / "drives"
    for condition, traversal in (("day_right", "day"), ("night_right", "night")):
        bag = _drive_bag(tmp_path / traversal, sample_dir, condition)
        assert vpr_main(["extract-drive", "--source", str(bag), "--pose-topic", "/odom",
                         "--traversal", traversal, "--out", str(drives)]) == 0
    csvs = {"csv_file": str(drives / "day.csv"), "query_csv_file": str(drives / "night.csv"),
            "pos_radius": 1, "neg_radius": 3, "eval_radius": 1}
    run = tmp_path / "run"
    config = {
        "output_dir": str(run), "model": TINY_MODEL,
        "data": {"train": {"kind": "csv", **csvs, "places": [0, 28], "synthetic_night": 1},
                 "val": {"kind": "csv", **csvs, "places": [0, FRAMES],
                         "query_places": [31, FRAMES]}},
        "mining": {"negatives_kept": 3, "cache_refresh_queries": 100},
        "optim": {"epochs": 2, "lr_step_epochs": 2},
        "recall_ns": [1, 5], "select_by_recall_at": 1, "select_epoch": "last",
        "whitening_dim": None, "cluster_images": 20,
    }
    path = tmp_path / "my_drives.yaml"
    path.write_text(yaml.safe_dump(config))
    assert train_main(["--config", str(path)]) == 0

    model = load_checkpoint(run / "model.pt")
    capsys.readouterr()
    assert compare_main([str(run)]) == 0                     # last epoch against the start
    printed = capsys.readouterr().out
    assert "9 common validation queries" in printed          # night rows 31-39, held out
    assert f"{run}:0" in printed and f"{run}:2" in printed and "95 % interval" in printed

    assert vpr_main(["build-map", "--source", str(drives / "images" / "day"), "--rate", "2",
                     "--index", "flat",
                     "--model", str(run / "model.pt"), "--out", str(tmp_path / "map")]) == 0
    built = KeyframeMap.load(tmp_path / "map")
    assert built.fingerprint == model.fingerprint() and len(built) == FRAMES
