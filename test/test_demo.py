"""`vpr-ros demo` end to end on the bundled sample (tiny model so it runs in seconds)."""
import json

from vpr_ros.cli import main
from vpr_ros.commands.demo import default_sample
from vpr_ros.evaluation.loop_closure import Outcome, place_from_name, recall_at_full_precision
from vpr_ros.io.images import list_images, read_image
from vpr_ros.mapping import KeyframeMap
from vpr_ros.model import ModelConfig
from vpr_ros.model.checkpoint import save_checkpoint
from vpr_ros.model.clustering import build_offtheshelf_model


def test_bundled_sample_is_found_and_small(sample_dir):
    assert default_sample() == sample_dir
    size = sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file())
    assert size <= 5 * 1024 * 1024


def test_demo_runs_end_to_end(sample_dir, tmp_path, capsys):
    day = [read_image(p) for p in list_images(sample_dir / "day_right")[::4]]
    model = build_offtheshelf_model(
        day, ModelConfig(image_long_side=128, num_clusters=8, backbone_kwargs={"feature_block": 10}))
    save_checkpoint(tmp_path / "tiny.pt", model)
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tmp_path / "tiny.pt"), "--backend", "torch",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "single frame" in printed and "chain (3 frames)" in printed and "sequence (" in printed
    summary = json.loads((out / "demo.json").read_text())
    for row in summary.values():
        assert row["frames"] == 100
        assert row["correct"] + row["wrong"] == row["accepted"]
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "demo_poses.png").read_bytes()[:4] == b"\x89PNG"
    assert "median err" in printed and "place index" in printed
    sequence = next(row for label, row in summary.items() if label.startswith("sequence"))
    assert sequence["along_track"]["unit"] == "place" and sequence["along_track"]["count"] == (
        sequence["accepted"])
    assert len(KeyframeMap.load(out / "map", expected_fingerprint=model.fingerprint())) == 100


def test_place_from_name_and_recall_at_full_precision():
    assert place_from_name("Image042.jpg") == 42
    sweep = [(0.3, Outcome(10, 8, 6, 2)), (0.4, Outcome(10, 5, 5, 0)), (0.5, Outcome(10, 2, 2, 0))]
    assert recall_at_full_precision(sweep) == (0.5, 0.4)
