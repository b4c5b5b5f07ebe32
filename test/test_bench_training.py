"""bench/train_gardens_point.py: the k-fold protocol keeps validation places out of training,
the choice is made on validation only, and the whole benchmark (`--quick`) runs end to end."""
import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_training_datasets import write_traversals
from training.config import load_config
from training.datasets import open_place_set

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_gardens_point.py"
RECIPE = Path(__file__).resolve().parents[1] / "training" / "configs" / "gardens_point_night.yaml"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("train_gardens_point", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH.parent))


def test_folds_cover_the_places_and_training_leaves_a_buffer_around_each(bench):
    folds = bench.fold_ranges(100, 4)
    assert folds == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert bench.training_ranges(100, (25, 50), 2) == [(0, 23), (52, 100)]
    assert bench.training_ranges(100, (0, 25), 2) == [(27, 100)]
    assert bench.fold_ranges(250, 4)[-1] == (188, 250)


def _fake_datasets(root: Path, places: int) -> Path:
    day, night = (0, 1.0), (1, 0.45)
    write_traversals(root / "gardens_point", places, 32,
                     {"day_left": (3, 1.0), "day_right": day, "night_right": night})
    write_traversals(root / "nordland_tiny", 16, 32, {"summer": day, "winter": (2, 0.6)})
    return root


def _tiny_recipe(path: Path) -> Path:
    """The shipped recipe with a tiny model and radii that fit 16 places."""
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"] = {"backbone": "efficientnet_lite0", "image_long_side": 32, "num_clusters": 4,
                       "reduce_dim": None, "backbone_kwargs": {"feature_block": 4}}
    for spec in recipe["data"]["train"]:
        spec.update(pos_radius=1, neg_radius=3)
    recipe.update(mining={"negatives_kept": 3, "cache_refresh_queries": 40}, cluster_images=24,
                  embed_batch_size=16)
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_validation_never_trains_on_a_place_it_scores(bench, tmp_path, monkeypatch):
    datasets = _fake_datasets(tmp_path / "data", 100)
    monkeypatch.setenv("VPR_ROS_DATASETS", str(datasets))
    config = bench.fold_config(_tiny_recipe(tmp_path / "r.yaml"), tmp_path, bench.FULL, 1,
                               "triplet", 2)
    train = open_place_set(config.data.train[0])                        # Gardens Point
    trained = {int(p.stem[-3:]) for p in train.db_images}
    val = open_place_set(config.data.val[0])                            # day_right -> night_right
    queried = {int(p.stem[-3:]) for p in val.query_images}
    assert queried == set(range(25, 50))
    assert min(abs(a - b) for a in trained for b in queried) == 3       # ±2 left out
    assert len(val.db_images) == 100                                    # a map of all places
    assert train.num_queries == len(trained) * 5                        # night + 2 renderings × 2 days
    assert config.data.train[1].places == [(0, 60), (127, 250)]         # Nordland fold 1 too
    assert config.seed == 1 and config.select_epoch == "last"


def test_the_choice_is_the_best_validation_candidate_with_paired_intervals(bench):
    protocol = bench.Protocol(places=20, folds=2, losses=("a", "b"), synthetic=(0,), epochs=2)
    rng = np.random.default_rng(0)
    base = rng.random((2, 20)) < 0.6
    hits = {bench.OFF_THE_SHELF: (base, np.zeros(5)), bench.START: (base, np.zeros(5))}
    for loss, gain in (("a", 0.0), ("b", 0.3)):
        for epoch in (1, 2):
            better = base | (rng.random((2, 20)) < gain)
            hits[(loss, 0, epoch)] = (better, np.zeros(5))
    hits[("b", 0, 2)] = hits[("b", 0, 1)]                              # a tie: fewer epochs win
    rows, chosen = bench.validation_rows(protocol, hits)
    assert chosen == ("b", 0, 1)
    by_name = {r["candidate"]: r for r in rows}
    best = by_name[bench._label(chosen)]
    assert best["chosen"] and best["minus_chosen"] == 0
    assert best["minus_chosen_low"] == best["minus_chosen_high"] == 0   # paired: no width
    shelf = by_name[bench.OFF_THE_SHELF]
    assert shelf["minus_chosen_high"] < 0 < best["gp_r1"] - shelf["gp_r1"]
    assert shelf["gp_r1_low"] < shelf["gp_r1"] < shelf["gp_r1_high"]


def test_quick_benchmark_runs_validation_then_test(bench, tmp_path, capsys, monkeypatch):
    datasets = _fake_datasets(tmp_path / "data", 112)
    monkeypatch.setenv("VPR_ROS_DATASETS", str(datasets))   # main() sets it; restored after
    recipe = _tiny_recipe(tmp_path / "recipe.yaml")
    out = tmp_path / "out"
    common = ["--quick", "--datasets", str(datasets), "--config", str(recipe), "--out", str(out)]
    assert bench.main(["validate", *common]) == 0
    choice = json.loads((out / "validate" / "choice.json").read_text())
    assert choice["loss"] == "sare_individual" and choice["epochs"] in (1, 2)
    rows = (out / "validate" / "validation.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 + 2 * 2                  # header, baselines, 2 configs × 2 epochs
    assert (out / "validate" / "validation.png").stat().st_size > 0
    with (out / "validate" / "effects.csv").open() as handle:
        effects = [row["contrast"] for row in csv.DictReader(handle)]
    assert len(effects) == 3 and effects[1].startswith("synthetic ") and "sare_individual" in effects[1]
    assert effects[2] == f"trained (every candidate) - {bench.START}, epochs 1-2"
    assert "<- chosen" in capsys.readouterr().out

    assert bench.main(["test", *common]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: the recipe" in printed            # the tiny recipe was not edited to the choice
    assert "recipe" in printed and "sequence matcher:" in printed
    summary = (out / "test" / "test_summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3 * 2                   # 3 models × 2 pairs
    stamp = (out / "test" / "seed0" / "model.pt").stat().st_mtime
    assert bench.main(["test", *common]) == 0          # rescored, not retrained
    assert (out / "test" / "seed0" / "model.pt").stat().st_mtime == stamp


def test_shipped_recipe_is_what_the_test_stage_trains(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("VPR_ROS_DATASETS", "/data")
    shipped = load_config(RECIPE)
    tested = bench.test_config(RECIPE, tmp_path, bench.FULL, shipped.seed)
    tested.output_dir = shipped.output_dir
    assert tested == shipped
