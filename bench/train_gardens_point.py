"""Benchmark: does fine-tuning help from day to night? SARE-joint, SARE-ind and triplet, several
seeds, with and without synthetic night, every choice made on validation places.

Every run is `training/configs/gardens_point_night.yaml` with its loss, seed and number of
synthetic renderings set. Splits by place (Gardens Point, ±2 frames):
- train: places 0–69. Database day_left + day_right, queries the real night_right images plus
  `--synthetic` night renderings of every day image (`training.augment`); and Nordland
  places 0–199, summer (database) / winter (queries), a second condition pair;
- validation: places 70–99, day_right → night_right and day_left → night_right; it picks the
  epoch of every run (mean R@1 of both pairs) and the configuration (mean over seeds);
- test: places 100–199, both pairs, 100 queries each, reported once for every configuration.

The baseline is the off-the-shelf default as `vpr-ros eval` builds it: local PCA and NetVLAD
fitted on the map (database) images of the split it is scored on, one k-means seed per training
seed. Each run also scores its own starting point (the same fit on the training images).

    python bench/train_gardens_point.py                 # the reported run (~50 min, 1 thread)
    python bench/train_gardens_point.py --epochs 1 --seeds 0 --losses triplet --no-ablation

Runs: every loss with `--synthetic` renderings, for every seed; then the loss that validation
prefers again without synthetic night (the ablation that says whether the renderings help).

Writes `runs.csv` (one row per run), `epochs.csv` (validation R@1 per epoch), `results.json`,
`val_curves.png` and `test_recall.png` into `--out`.
"""
import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backbones import write_csv  # noqa: E402
from training.config import TrainConfig, load_config, to_dict  # noqa: E402
from training.datasets import load_aligned_traversals  # noqa: E402
from training.distributed import DistContext  # noqa: E402
from training.evaluation import evaluate_recall  # noqa: E402
from training.images import ImageStore  # noqa: E402
from training.train import Trainer  # noqa: E402
from vpr_ros.evaluation.plots import save_figure  # noqa: E402
from vpr_ros.io.atomic import atomic_write_text  # noqa: E402
from vpr_ros.io.images import read_image  # noqa: E402
from vpr_ros.model import ModelConfig  # noqa: E402
from vpr_ros.model.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from vpr_ros.model.clustering import build_offtheshelf_model  # noqa: E402
from vpr_ros.runtime.preprocess import target_size  # noqa: E402

PAIRS = (("day_right", "night_right"), ("day_left", "night_right"))
TRAIN, VAL, TEST = (0, 70), (70, 100), (100, 200)
NS = (1, 5)
PAIR_NAMES = tuple(f"{db}->{q}" for db, q in PAIRS)
START = "start of training (fitted on training images)"
RECIPE = REPO / "training" / "configs" / "gardens_point_night.yaml"


def run_config(args, loss: str, synthetic: int, seed: int) -> TrainConfig:
    """The recipe (`--config`) with this run's loss, seed and synthetic renderings."""
    config = load_config(args.config, {
        "output_dir": str(args.out / f"{loss}_syn{synthetic}_seed{seed}"), "seed": seed,
        "loss": {"name": loss}, "optim": {"epochs": args.epochs, "lr_step_epochs": args.epochs}})
    config.data.train[0].synthetic_night = synthetic
    return config


def pair_sets(datasets: Path, places: Tuple[int, int]):
    return {f"{db}->{q}": load_aligned_traversals(datasets / "gardens_point", [db], [q], places)
            for db, q in PAIRS}


def score(model, sets, store: ImageStore) -> Dict[str, Dict[int, float]]:
    """Recall@1/5 per pair, full network on images (the deployed computation, no cached layers)."""
    return {name: evaluate_recall(model, places, store, NS, 8, DistContext())
            for name, places in sets.items()}


def offtheshelf(sets, store: ImageStore, seed: int) -> Dict[str, Dict[int, float]]:
    """The default model fitted on each pair's own database images, as `vpr-ros eval` does."""
    result = {}
    for name, places in sets.items():
        model = build_offtheshelf_model((read_image(p) for p in places.db_images), seed=seed)
        result[name] = evaluate_recall(model, places, store, NS, 8, DistContext())
    return result


def train_and_score(args, loss: str, synthetic: int, seed: int, features: dict, test_sets,
                    store: ImageStore) -> dict:
    """One training run; its best epoch by validation is scored on the test places. A run that
    already finished with this very config (an earlier, interrupted bench) is scored, not
    trained again."""
    config = run_config(args, loss, synthetic, seed)
    run_dir = Path(config.output_dir)
    done = finished(run_dir, config)
    if not done:
        for stale in ("epochs.csv", "steps.csv"):          # the trainer appends to these
            (run_dir / stale).unlink(missing_ok=True)
    trainer = Trainer(config, DistContext(), feature_cache=features)
    start_test = score(trainer.model, test_sets, store)
    if not done:
        trainer.fit()
    model, extra = load_checkpoint(run_dir / "best.pt", with_extra=True)
    test = score(model, test_sets, store)
    curve = read_epochs(run_dir)
    return {"loss": loss, "synthetic": synthetic, "seed": seed, "best_epoch": int(extra["epoch"]),
            "val_r1": max(curve[1:]), "start_val_r1": curve[0],
            **{f"start test {p} R@1": r[1] for p, r in start_test.items()},
            **{f"test {p} R@{n}": r[n] for p, r in test.items() for n in NS},
            "val_curve": curve}


def finished(run_dir: Path, config: TrainConfig) -> bool:
    """True when `run_dir` holds a run of `config` that trained all its epochs."""
    state = run_dir / "last.pt"
    if not (state.is_file() and (run_dir / "best.pt").is_file() and (run_dir / "epochs.csv").is_file()):
        return False
    extra = read_checkpoint(state)["extra"]
    return extra.get("next_epoch") == config.optim.epochs and extra.get("train_config") == to_dict(config)


def mean_r1(by_pair: Dict[str, Dict[int, float]]) -> float:
    return float(np.mean([r[1] for r in by_pair.values()]))


def read_epochs(run_dir: Path) -> List[float]:
    """Validation mean R@1 per epoch (epoch 0 = before training) from the run's epochs.csv."""
    with (run_dir / "epochs.csv").open() as handle:
        return [float(row["recall@1"]) for row in csv.DictReader(handle)]


def summarize(runs: List[dict], baseline: List[dict]) -> List[dict]:
    """One row per configuration: mean and range over seeds of validation and test R@1."""
    starts = {run["seed"]: {"val_r1": run["start_val_r1"],
                            **{f"test {p} R@1": run[f"start test {p} R@1"] for p in PAIR_NAMES}}
              for run in reversed(runs)}                 # a seed's start is the same in every run
    groups: Dict[str, List[dict]] = {"off-the-shelf (map-fitted)": baseline,
                                     START: list(starts.values())}
    for run in runs:
        groups.setdefault(f"{run['loss']}, synthetic {run['synthetic']}", []).append(run)
    rows = []
    for name, members in groups.items():
        row = {"config": name, "seeds": len(members),
               "val_r1": float(np.mean([m["val_r1"] for m in members]))}
        for pair in PAIR_NAMES:
            values = np.array([m[f"test {pair} R@1"] for m in members])
            row[f"test {pair} R@1 mean"] = float(values.mean())
            row[f"test {pair} R@1 min"] = float(values.min())
            row[f"test {pair} R@1 max"] = float(values.max())
        rows.append(row)
    trained = [r for r in rows if r["config"] not in ("off-the-shelf (map-fitted)", START)]
    if trained:
        best = max(trained, key=lambda r: r["val_r1"])
        for row in rows:
            row["chosen"] = row is best
    return rows


def plot(runs: List[dict], rows: List[dict], baseline_val: float, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    colours = {}
    for run in runs:
        name = f"{run['loss']}, synthetic {run['synthetic']}"
        colour = colours.setdefault(name, f"C{len(colours)}")
        ax.plot(run["val_curve"], color=colour, alpha=0.7,
                label=name if run["seed"] == runs[0]["seed"] else None)
    ax.axhline(baseline_val, color="k", linestyle=":", label="off-the-shelf (map-fitted)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0 = start: fitted on training images)")
    ax.set_ylabel("validation mean R@1 (places 70-99)")
    ax.set_title("Gardens Point validation, one line per seed")
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, out / "val_curves.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 1.5), sharey=True)
    for ax, pair in zip(axes, ("day_right->night_right", "day_left->night_right")):
        for i, row in enumerate(rows):
            mean = row[f"test {pair} R@1 mean"]
            low, high = row[f"test {pair} R@1 min"], row[f"test {pair} R@1 max"]
            ax.errorbar(mean, i, xerr=[[mean - low], [high - mean]], fmt="o",
                        color="C3" if row.get("chosen") else "C0")
        ax.set_title(f"test {pair} (places 100-199)")
        ax.set_xlabel("R@1 (dot: mean over seeds, bar: range)")
    axes[0].set_yticks(range(len(rows)), [r["config"] + (" [chosen]" if r.get("chosen") else "")
                                          for r in rows])
    axes[0].invert_yaxis()
    save_figure(fig, out / "test_recall.png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get(
        "VPR_ROS_DATASETS", REPO.parent / "shared" / "datasets")))
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench_train")
    parser.add_argument("--losses", nargs="+", default=["sare_joint", "sare_individual", "triplet"])
    parser.add_argument("--synthetic", type=int, default=2,
                        help="synthetic night renderings per training day image")
    parser.add_argument("--no-ablation", dest="ablation", action="store_false",
                        help="skip re-training the validation-chosen loss without synthetic night")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--config", type=Path, default=RECIPE,
                        help="training recipe; its first data.train entry gets the renderings")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["VPR_ROS_DATASETS"] = str(args.datasets)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    sample = read_image(args.datasets / "gardens_point" / "day_right" / "Image000.jpg")
    store = ImageStore(target_size(sample.shape[0], sample.shape[1], ModelConfig().image_long_side))
    val_sets, test_sets = pair_sets(args.datasets, VAL), pair_sets(args.datasets, TEST)
    baseline = []
    for seed in args.seeds:
        val, test = offtheshelf(val_sets, store, seed), offtheshelf(test_sets, store, seed)
        baseline.append({"seed": seed, "val_r1": mean_r1(val),
                         **{f"test {p} R@1": r[1] for p, r in test.items()}})
    features: dict = {}
    runs = []

    def train(loss: str, synthetic: int) -> None:
        for seed in args.seeds:
            runs.append(train_and_score(args, loss, synthetic, seed, features, test_sets, store))
            print(f"[{(time.monotonic() - started) / 60:.1f} min] {loss} synthetic {synthetic} "
                  f"seed {seed}: best epoch {runs[-1]['best_epoch']}, val R@1 "
                  f"{runs[-1]['val_r1']:.3f}", flush=True)

    for loss in args.losses:
        train(loss, args.synthetic)
    if args.ablation and args.synthetic:
        chosen = max(args.losses, key=lambda loss: np.mean(
            [r["val_r1"] for r in runs if r["loss"] == loss]))
        train(chosen, 0)
    rows = summarize(runs, baseline)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv([{k: v for k, v in r.items() if k != "val_curve"} for r in runs], args.out / "runs.csv")
    write_csv([{"loss": r["loss"], "synthetic": r["synthetic"], "seed": r["seed"],
                "epoch": e, "val_r1": v} for r in runs for e, v in enumerate(r["val_curve"])],
              args.out / "epochs.csv")
    atomic_write_text(args.out / "results.json", json.dumps(
        {"baseline": baseline, "runs": runs, "summary": rows}, indent=2) + "\n")
    plot(runs, rows, float(np.mean([b["val_r1"] for b in baseline])), args.out)
    print(f"\nGardens Point, test places 100-199 (100 queries per pair), {len(args.seeds)} seeds, "
          f"{args.epochs} epochs; epoch and configuration chosen on validation places 70-99")
    print(f"{'configuration':<34}{'val R@1':>9}{'R->N test R@1 mean [range]':>30}"
          f"{'L->N test R@1 mean [range]':>30}")
    for row in rows:
        cells = "".join(f"{'%.3f [%.2f-%.2f]' % (row[f'test {p} R@1 mean'], row[f'test {p} R@1 min'], row[f'test {p} R@1 max']):>30}"
                        for p in ("day_right->night_right", "day_left->night_right"))
        mark = " <- chosen on validation" if row.get("chosen") else ""
        print(f"{row['config']:<34}{row['val_r1']:>9.3f}{cells}{mark}")
    print(f"total {(time.monotonic() - started) / 60:.1f} min; figures in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
