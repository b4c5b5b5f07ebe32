"""How the decision defaults (sequence length, threshold, warm-up; score threshold) were chosen,
on validation data only.

Validation = Gardens Point places 0-99 (night_right queries 0-99 against day_right and day_left)
and Nordland summer -> winter; the test (all 200 places) is never read here. NetVLAD is
clustered on each db traversal, as `vpr-ros eval` does (map images, never queries).

- Genuine: queries 0-99 against a map of places 0-99; right = within ±2 frames.
- Impostors: queries 0-94 against a map of places 100-199, i.e. a robot driving where the map
  has never been, where every accepted frame is a false loop closure (95: the last queries sit
  next to place 100). A robot restarts its sequence after every gap or reset, so the impostor
  stream is started at queries 0, 20, 40 and 60: each warm-up length is tried four times.
- Threshold rule: the lowest evidence (the margin, discounted by sqrt(n / warm-up) while the
  sequence is shorter than its warm-up length) above every impostor's and every wrong genuine
  one of both Gardens Point pairs ("joint"), rounded up to 0.1. Nordland (64x32 frames scaled up) gives
  R@1 against L; its margins are too weak to set a threshold (its right matches have a median
  margin under 0.5).
- Score threshold (single-frame and chain decisions): the lowest cosine above every wrong
  single-frame top-1 match of both Gardens Point pairs on places 0-99, rounded up to 0.01.

    python bench/sequence_defaults.py                   # datasets from $VPR_ROS_DATASETS
    python bench/sequence_defaults.py --lengths 10,20 --warmups 1,5
"""
import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_ros.evaluation.run import embed_folder  # noqa: E402
from vpr_ros.evaluation.sequence_retrieval import sequence_ranking  # noqa: E402
from vpr_ros.io.images import list_images, read_image  # noqa: E402
from vpr_ros.localization import EngineConfig  # noqa: E402
from vpr_ros.model.clustering import build_offtheshelf_model  # noqa: E402
from vpr_ros.runtime.embedder import load_embedder  # noqa: E402

PLACES = 100
BORDER = 5
IMPOSTOR_STARTS = (0, 20, 40, 60)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("VPR_ROS_DATASETS", "../shared/datasets")))
    parser.add_argument("--lengths", default="5,10,15,20", help="sequence lengths L")
    parser.add_argument("--warmups", default="1,5,10",
                        help="warm-up lengths: below it, a sequence's margin counts sqrt(n / warm-up)")
    return parser.parse_args(argv)


def embed(db_dir: Path, query_dir: Path):
    """(db, query) descriptors with a default model clustered on the db images."""
    db = list_images(db_dir)
    model = build_offtheshelf_model(read_image(p) for p in db)
    embedder = load_embedder(model=model, backend="torch")
    return (embed_folder(embedder, db, f"embed {db_dir.name}")[0],
            embed_folder(embedder, list_images(query_dir), f"embed {query_dir.name}")[0])


def calibrate(pairs, length: int, warmup: int):
    """Joint threshold and, per pair: its own bar, the share of genuine queries accepted right at
    the joint one, the wrong ones accepted, and the share of ends within ±1 frame."""
    config = EngineConfig(sequence_length=length, sequence_warmup_length=min(warmup, length))
    settings = config.sequence_settings()
    rows, bars = [], []
    for name, (db, queries) in pairs.items():
        evidence, ranked = sequence_ranking(db[:PLACES], queries[:PLACES], settings, config.top_k)
        impostors = max(sequence_ranking(db[PLACES:2 * PLACES], queries[start:PLACES - BORDER],
                                         settings, config.top_k)[0].max()
                        for start in IMPOSTOR_STARTS)
        offsets = np.abs(ranked[:, 0] - np.arange(PLACES))
        right = offsets <= 2
        bar = max(impostors, evidence[~right].max() if (~right).any() else -np.inf)
        rows.append((name, evidence, right, bar, float(np.mean(offsets <= 1))))
        bars.append(bar)
    joint = math.ceil(max(bars) * 10) / 10
    return joint, [(name, bar, float(np.mean((evidence >= joint) & right)),
                    int(np.sum((evidence >= joint) & ~right)), within)
                   for name, evidence, right, bar, within in rows]


def score_threshold(pairs) -> float:
    """Lowest cosine above every wrong top-1 match on places 0-99 of every pair, up to 0.01."""
    wrong = []
    for db, queries in pairs.values():
        similarity = queries[:PLACES] @ db[:PLACES].T
        top = similarity.argmax(axis=1)
        off = np.abs(top - np.arange(PLACES)) > 2
        wrong.extend(similarity[np.arange(PLACES), top][off])
    return math.ceil(max(wrong, default=-1.0) * 100) / 100


def main(argv=None) -> int:
    args = parse_args(argv)
    gp, nordland = args.datasets / "gardens_point", args.datasets / "nordland_tiny"
    if not (gp / "night_right").is_dir() or not (nordland / "winter").is_dir():
        print(f"Gardens Point or Nordland not found in {args.datasets}; set --datasets")
        return 2
    pairs = {db: embed(gp / db, gp / "night_right") for db in ("day_right", "day_left")}
    summer, winter = embed(nordland / "summer", nordland / "winter")
    lengths = [int(v) for v in args.lengths.split(",")]
    print(f"\nscore threshold (single and chain decisions, places 0-99): {score_threshold(pairs):.2f}")
    print("\nGardens Point places 0-99 (validation): threshold with no false loop closure, the")
    print("share of night frames then accepted right (impostors: a map of places 100-199), and")
    print("the share of frames whose reported end is within ±1 frame")
    print(f"{'L':>3}{'warm-up':>8}{'joint thr':>10}  " + "  ".join(
        f"{name + ' thr / accepted / wrong / ±1':>41}" for name in pairs))
    for length in lengths:
        for warmup in sorted({min(int(v), length) for v in args.warmups.split(",")}):
            joint, rows = calibrate(pairs, length, warmup)
            print(f"{length:>3}{warmup:>8}{joint:>10.1f}  " + "  ".join(
                f"{bar:>16.2f} / {accepted:>8.2f} / {wrong:>5} / {within:>4.2f}"
                for _, bar, accepted, wrong, within in rows))
    print("\nNordland summer -> winter (1000 frames, ±1): sequence R@1 against L")
    for length in lengths:
        config = EngineConfig(sequence_length=length, sequence_warmup_length=1)
        _, ranked = sequence_ranking(summer, winter, config.sequence_settings(), config.top_k)
        print(f"  L={length:>2}: R@1 {np.mean(np.abs(ranked[:, 0] - np.arange(len(winter))) <= 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
