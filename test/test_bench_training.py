"""bench/train_gardens_point.py's bookkeeping: the configuration is chosen on validation only,
seeds give a range, and a finished run of the same config is recognized (not trained again)."""
import importlib.util
import sys
from pathlib import Path

import pytest

from test_training_train import tiny_config
from test_training_datasets import write_traversals
from training.config import config_from_dict
from training.distributed import DistContext
from training.train import Trainer

BENCH = Path(__file__).resolve().parents[1] / "bench" / "train_gardens_point.py"
PAIRS = ("day_right->night_right", "day_left->night_right")


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("train_gardens_point", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(loss, seed, val, tests, synthetic=2):
    return {"loss": loss, "synthetic": synthetic, "seed": seed, "val_r1": val,
            **{f"test {p} R@1": t for p, t in zip(PAIRS, tests)},
            "start_val_r1": 0.7 + seed / 100, **{f"start test {p} R@1": 0.5 for p in PAIRS}}


def test_summary_picks_by_validation_and_reports_the_seed_range(bench):
    baseline = [{"seed": s, "val_r1": 0.8, **{f"test {p} R@1": 0.7 for p in PAIRS}} for s in (0, 1)]
    runs = [_run("triplet", 0, 0.90, (0.60, 0.50)), _run("triplet", 1, 0.86, (0.62, 0.52)),
            _run("sare_joint", 0, 0.85, (0.99, 0.99)), _run("sare_joint", 1, 0.85, (0.97, 0.95))]
    rows = bench.summarize(runs, baseline)
    assert [r["config"] for r in rows] == ["off-the-shelf (map-fitted)", bench.START,
                                           "triplet, synthetic 2", "sare_joint, synthetic 2"]
    chosen = [r["config"] for r in rows if r["chosen"]]
    assert chosen == ["triplet, synthetic 2"]            # higher validation, whatever the test says
    start = rows[1]                                      # one start per seed, not one per run
    assert start["seeds"] == 2 and start["val_r1"] == pytest.approx(0.705)
    triplet = rows[2]
    assert triplet["val_r1"] == pytest.approx(0.88)
    assert (triplet["test day_right->night_right R@1 min"],
            triplet["test day_right->night_right R@1 max"]) == (0.60, 0.62)


def test_a_finished_run_of_the_same_config_is_recognized(bench, tmp_path):
    walk = write_traversals(tmp_path / "walk", places=12, size=64)
    config = config_from_dict(tiny_config(walk, tmp_path / "run"))
    assert not bench.finished(tmp_path / "run", config)
    Trainer(config, DistContext()).fit()
    assert bench.finished(tmp_path / "run", config)
    longer = config_from_dict(tiny_config(walk, tmp_path / "run", **{"optim.epochs": 2}))
    assert not bench.finished(tmp_path / "run", longer)
