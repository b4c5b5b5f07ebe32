"""The `vpr-ros eval` pipeline end to end on the bundled sample, with a tiny fast model."""
import json
import shutil

import numpy as np
import pytest

from vpr_ros.cli import main
from vpr_ros.evaluation.ground_truth import (positives_by_frame_number, positives_by_tolerance,
                                             positives_from_csv)
from vpr_ros.evaluation.run import run_eval
from vpr_ros.io.images import list_images, read_image
from vpr_ros.localization import EngineConfig
from vpr_ros.model import ModelConfig
from vpr_ros.model.checkpoint import save_checkpoint
from vpr_ros.model.clustering import build_offtheshelf_model
from vpr_ros.runtime.embedder import load_embedder

TINY = ModelConfig(image_long_side=128, num_clusters=8, backbone_kwargs={"feature_block": 10})


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory, sample_dir):
    """12 consecutive day/night sample images (every 2nd original frame) in two folders."""
    root = tmp_path_factory.mktemp("pair")
    for traversal in ("day_right", "night_right"):
        (root / traversal).mkdir()
        for path in list_images(sample_dir / traversal)[20:32]:
            shutil.copy(path, root / traversal / path.name)
    return root


@pytest.fixture(scope="module")
def tiny_checkpoint(small_pair, tmp_path_factory):
    images = [read_image(p) for p in list_images(small_pair / "day_right")]
    model = build_offtheshelf_model(images, TINY)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, model)
    return path


def test_eval_writes_metrics_and_pictures(small_pair, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    code = main(["eval", "--db", str(small_pair / "day_right"), "--query",
                 str(small_pair / "night_right"), "--tolerance-frames", "1",
                 "--model", str(tiny_checkpoint), "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("recall", "auc", "recall_at_100p", "n_queries", "ms_per_image",
                "raw_pixel_baseline", "model_fingerprint"):
        assert key in metrics
    assert set(metrics["recall"]) == {"1", "5", "10"}
    assert metrics["n_queries"] == 12
    assert 0.0 <= metrics["recall"]["1"] <= metrics["recall"]["5"] <= metrics["recall"]["10"] <= 1.0
    for png in ("pr_curve.png", "matches.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_images_as_db_and_query_give_perfect_recall(small_pair, tiny_checkpoint, tmp_path):
    embedder = load_embedder(tiny_checkpoint, backend="torch")
    folder = small_pair / "day_right"
    metrics = run_eval(folder, folder, tmp_path, embedder=embedder, tolerance=0)
    assert metrics["recall"]["1"] == 1.0
    assert metrics["raw_pixel_baseline"]["recall"]["1"] == 1.0
    assert metrics["recall_at_100p"] == 1.0


def test_eval_scores_sequence_matching_beside_single_images(small_pair, tiny_checkpoint, tmp_path,
                                                           capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--db", str(small_pair / "day_right"), "--query",
                 str(small_pair / "night_right"), "--tolerance-frames", "1", "--sequence-length", "4",
                 "--model", str(tiny_checkpoint), "--out", str(out)]) == 0
    sequence = json.loads((out / "metrics.json").read_text())["sequence"]
    assert sequence["length"] == 4 and set(sequence["recall"]) == {"1", "5", "10"}
    assert 0.0 <= sequence["recall_at_100p"] <= sequence["recall"]["1"] <= 1.0
    assert "NetVLAD, sequence of 4" in capsys.readouterr().out


def test_same_images_in_order_give_perfect_sequences(small_pair, tiny_checkpoint, tmp_path):
    embedder = load_embedder(tiny_checkpoint, backend="torch")
    folder = small_pair / "day_right"
    metrics = run_eval(folder, folder, tmp_path, embedder=embedder, tolerance=0,
                       sequence=EngineConfig(sequence_length=3, sequence_warmup_length=1))
    assert metrics["sequence"]["recall"]["1"] == 1.0 and metrics["sequence"]["recall_at_100p"] == 1.0


def test_bad_sequence_length_is_refused_before_any_work(small_pair, tmp_path):
    assert main(["eval", "--db", str(small_pair / "day_right"), "--query",
                 str(small_pair / "night_right"), "--sequence-length", "-1",
                 "--out", str(tmp_path)]) == 2


def test_unreadable_image_in_a_folder_is_named(small_pair, tiny_checkpoint, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(small_pair / "day_right", db)
    (db / "Image999.jpg").write_bytes(b"garbage")
    code = main(["eval", "--db", str(db), "--query", str(small_pair / "night_right"),
                 "--model", str(tiny_checkpoint), "--out", str(tmp_path / "o")])
    assert code == 2
    with pytest.raises(ValueError, match="Image999.jpg"):
        run_eval(db, small_pair / "night_right", tmp_path / "o",
                 embedder=load_embedder(tiny_checkpoint, backend="torch"))


def test_every_embedding_command_offers_the_same_backends(small_pair):
    from vpr_ros.cli import build_parser

    for command in ("demo", "eval", "build-map", "localize"):
        sub = build_parser(command)._subparsers._group_actions[0].choices[command]
        backend = next(a for a in sub._actions if a.dest == "backend")
        assert (tuple(backend.choices), backend.default) == (
            ("auto", "tensorrt", "onnxruntime", "torch"), "auto"), command
    with pytest.raises(SystemExit):
        main(["eval", "--db", str(small_pair / "day_right"), "--query",
              str(small_pair / "night_right"), "--backend", "onnx", "--out", "unused"])


@pytest.fixture
def tiny_offtheshelf(monkeypatch):
    """eval without --model clusters the TINY model (the default one takes a minute here)."""
    import vpr_ros.model.clustering as clustering

    built = []

    def build(images, config=None):
        built.append(True)
        return build_offtheshelf_model(images, TINY)

    monkeypatch.setattr(clustering, "build_offtheshelf_model", build)
    return built


def test_eval_with_an_unavailable_backend_fails_before_clustering(small_pair, tmp_path, caplog,
                                                                  tiny_offtheshelf):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here; the unavailable case needs a machine without it")
    assert main(["eval", "--db", str(small_pair / "day_right"), "--query",
                 str(small_pair / "night_right"), "--backend", "tensorrt",
                 "--out", str(tmp_path / "o")]) == 2
    assert "backend tensorrt is not available here" in caplog.text
    assert not tiny_offtheshelf, "refused before the off-the-shelf model was clustered"
    assert not (tmp_path / "o").exists()


def test_eval_onnxruntime_without_a_model_exports_the_offtheshelf_one(small_pair, tmp_path,
                                                                      tiny_offtheshelf):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "o"
    assert main(["eval", "--db", str(small_pair / "day_right"), "--query",
                 str(small_pair / "night_right"), "--backend", "onnxruntime",
                 "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["backend"] == "onnxruntime"
    assert sorted(p.name for p in out.iterdir()) == ["matches.png", "metrics.json", "pr_curve.png"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_eval(tmp_path / "nowhere", tmp_path / "nowhere", tmp_path / "o")


def test_positives_by_tolerance():
    assert positives_by_tolerance(4, 4, 1) == [{0, 1}, {0, 1, 2}, {1, 2, 3}, {2, 3}]


def test_positives_by_frame_number_count_original_frames():
    """Every 2nd frame kept: ±2 frames is the same frame and its two neighbours, not ±4."""
    db = [f"Image{k:03d}.jpg" for k in range(0, 20, 2)]
    assert positives_by_frame_number(db, ["Image008.jpg", "Image009.jpg"], 2) == [
        {3, 4, 5}, {4, 5}]
    assert positives_by_frame_number(db, ["night.jpg"], 2) is None, "no number: use positions"
    assert positives_by_frame_number(["a1.jpg", "b1.jpg"], ["a1.jpg"], 2) is None, "not unique"


def test_eval_ground_truth_follows_the_frame_numbers_and_says_so(small_pair, tiny_checkpoint,
                                                                 tmp_path, capsys):
    embedder = load_embedder(tiny_checkpoint, backend="torch")
    day, night = small_pair / "day_right", small_pair / "night_right"
    metrics = run_eval(day, night, tmp_path / "named", embedder=embedder, tolerance=2)
    assert metrics["ground_truth"] == "±2 frames by the frame numbers in the file names"
    renamed = {}
    for name in ("day_right", "night_right"):
        renamed[name] = tmp_path / name
        renamed[name].mkdir()
        for k, path in enumerate(list_images(small_pair / name)):
            shutil.copy(path, renamed[name] / f"{'abcdefghijklmnop'[k]}.jpg")
    by_position = run_eval(renamed["day_right"], renamed["night_right"], tmp_path / "unnamed",
                           embedder=embedder, tolerance=2)
    assert by_position["ground_truth"].startswith("±2 positions in the folders")
    assert by_position["recall"]["1"] >= metrics["recall"]["1"], "±2 positions = ±4 frames here"
    assert main(["eval", "--db", str(day), "--query", str(night), "--model", str(tiny_checkpoint),
                 "--backend", "torch", "--out", str(tmp_path / "cli")]) == 0
    assert "ground truth ±2 frames by the frame numbers" in capsys.readouterr().out


def test_positives_from_gardens_point_csv(gardens_point):
    db = list_images(gardens_point / "day_right")
    queries = list_images(gardens_point / "night_right")
    positives = positives_from_csv(gardens_point / "ground_truth.csv", db, queries)
    assert positives[0] == {0, 1, 2}
    assert positives[100] == set(range(98, 103))
    assert positives == positives_by_tolerance(200, 200, 2)


def test_positives_from_generic_csv(tmp_path):
    db = [tmp_path / f"d{i}.jpg" for i in range(3)]
    queries = [tmp_path / f"q{i}.jpg" for i in range(2)]
    csv = tmp_path / "gt.csv"
    csv.write_text("query,positives\nq0.jpg,d1.jpg;d2.jpg\nq1.jpg,d0.jpg\n")
    assert positives_from_csv(csv, db, queries) == [{1, 2}, {0}]
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="query,positives"):
        positives_from_csv(csv, db, queries)


def test_raw_pixel_baseline_is_unit_norm():
    from vpr_ros.evaluation.baseline import raw_pixel_descriptors
    rng = np.random.default_rng(0)
    out = raw_pixel_descriptors([rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)])
    assert out.shape == (1, 2048)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
