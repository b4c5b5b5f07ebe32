"""Benchmark: SARE vs triplet fine-tuning on Gardens Point, split by place.

Places 0–99 train: night_right images are the queries, all three traversals the database (so
positives are day images of the same place, from the other side of the path or the same side);
places 100–199 are held out. Reports Recall@1/5 on the
held-out places for day_right→night_right and day_left→night_right (database→query) before
training (off-the-shelf: ImageNet backbone + k-means NetVLAD), after training (best epoch by
validation R@5 on day_right→night_right, which is also a test pair, so it is optimistic) and at the
last epoch (no selection), for each loss. Writes loss curves to a PNG.

    python bench/train_gardens_point.py --long-side 192 --epochs 2 --clusters 32

Slow on 2 CPU cores (minutes per epoch); the image size and epochs are the knobs.
"""
import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.config import config_from_dict  # noqa: E402
from training.datasets import load_aligned_traversals  # noqa: E402
from training.distributed import DistContext  # noqa: E402
from training.evaluation import evaluate_recall  # noqa: E402
from training.train import Trainer  # noqa: E402
from vpr_ros.io.atomic import atomic_path, atomic_write_text  # noqa: E402
from vpr_ros.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

PAIRS = (("day_right", "night_right"), ("day_left", "night_right"))
TRAVERSALS = ["day_left", "day_right", "night_right"]


def run_config(root: Path, loss: str, args) -> dict:
    return {
        "output_dir": str(args.out / loss),
        "model": {"image_long_side": args.long_side, "num_clusters": args.clusters},
        "data": {
            "train": {"kind": "aligned", "root": str(root), "db_traversals": TRAVERSALS,
                      "query_traversals": args.query_traversals, "places": [0, 100]},
            "val": {"kind": "aligned", "root": str(root), "db_traversals": ["day_right"],
                    "query_traversals": ["night_right"], "places": [100, 200]},
        },
        "loss": {"name": loss, "kernel": "gaussian"},
        "optim": {"epochs": args.epochs, "trainable_blocks": args.trainable_blocks},
        "whitening_dim": None,
        "recall_ns": [1, 5, 10],
        "cluster_images": 100,
        "seed": args.seed,
    }


def held_out_recall(model, trainer: Trainer, root: Path) -> dict:
    """R@1/5 on places 100–199 for each database→query pair."""
    result = {}
    for db, query in PAIRS:
        places = load_aligned_traversals(root, [db], [query], (100, 200))
        recall = evaluate_recall(model, places, trainer.store, [1, 5], 8, DistContext())
        result[f"{db}->{query}"] = recall
    return result


def plot_losses(out: Path, losses) -> Path:
    """One panel per loss: per-step values and a 10-step moving average, epochs marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(losses), figsize=(5 * len(losses), 3.6), squeeze=False)
    for ax, loss in zip(axes[0], losses):
        with (out / loss / "steps.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        values = np.array([float(r["loss"]) for r in rows])
        epochs = np.array([int(r["epoch"]) for r in rows])
        window = min(10, len(values))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(values, alpha=0.3, label="per step")
        ax.plot(np.arange(window - 1, len(values)), smooth, label=f"mean of {window}")
        for boundary in np.flatnonzero(np.diff(epochs)) + 0.5:
            ax.axvline(boundary, color="grey", linestyle=":")
        ax.set_title(loss)
        ax.set_xlabel("step (4 tuples; dotted: new epoch)")
        ax.set_ylabel("training loss")
        ax.legend()
    fig.suptitle("Gardens Point places 0–99, training loss")
    path = out / "loss_curves.png"
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("VPR_ROS_DATASETS", REPO.parent / "shared" / "datasets")))
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench_train")
    parser.add_argument("--long-side", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--trainable-blocks", type=int, default=2)
    parser.add_argument("--query-traversals", nargs="+", default=["night_right"],
                        help="training queries (all three: 3x the steps per epoch)")
    parser.add_argument("--losses", nargs="+", default=["sare_individual", "triplet"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    root = args.datasets / "gardens_point"
    results = {}
    for loss in args.losses:
        config = config_from_dict(run_config(root, loss, args), source=f"bench {loss}")
        trainer = Trainer(config, DistContext())
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        save_checkpoint(Path(config.output_dir) / "init.pt", trainer.model)
        if "off-the-shelf" not in results:
            results["off-the-shelf"] = held_out_recall(trainer.model, trainer, root)
        trainer.fit()
        results[f"{loss} best"] = held_out_recall(
            load_checkpoint(Path(config.output_dir) / "best.pt"), trainer, root)
        results[f"{loss} last"] = held_out_recall(
            load_checkpoint(Path(config.output_dir) / "last.pt"), trainer, root)
    png = plot_losses(args.out, args.losses)
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    print(f"\nGardens Point held-out places 100-199, long side {args.long_side}, "
          f"{args.epochs} epochs, K={args.clusters}")
    print(f"{'model':<26}" + "".join(f"{p:>34}" for p in results["off-the-shelf"]))
    for name, by_pair in results.items():
        cells = "".join(f"{'R@1 %.3f  R@5 %.3f' % (r[1], r[5]):>34}" for r in by_pair.values())
        print(f"{name:<26}{cells}")
    base = results["off-the-shelf"]
    for name, by_pair in results.items():
        if name != "off-the-shelf":
            gains = ", ".join(f"{p}: R@1 ×{by_pair[p][1] / max(base[p][1], 1e-9):.2f}"
                              for p in by_pair)
            print(f"ratio {name} / off-the-shelf: {gains}")
    print(f"loss curves: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
