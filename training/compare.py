"""Did training help, and which of two runs is better, on the same validation queries?

Every run writes `val_queries.csv`: per epoch, the rank of each validation query's first correct
match. Comparing two models on the *same* queries (paired) cancels what the queries have in
common, so a difference is resolved far more tightly than by two separate intervals:

    python -m training.compare out/runs/night                 # its last epoch against epoch 0
    python -m training.compare out/runs/syn0 out/runs/syn2    # two runs, each at its last epoch
    python -m training.compare out/runs/syn0:2 out/runs/syn2:1 --recall-at 5

Epoch 0 is the start of training: the untrained model with its reduction and NetVLAD fitted on
the training images. The interval is a 95 % percentile bootstrap over blocks of `--block`
consecutive queries (neighbouring frames of a drive look alike, so they are resampled together),
with the same resampled queries for both runs. It holds the two trained models fixed: training
another seed moves recall too, so compare seeds before trusting a small gain.
"""
import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from vpr_ros.evaluation.metrics import hits_within

RESAMPLES = 10000


def block_bootstrap_means(values: np.ndarray, block: int, resamples: int = RESAMPLES,
                          seed: int = 0) -> np.ndarray:
    """(resamples, C) means of the rows of `values` (C, U) over resampled units.

    Units (columns, in route order) are drawn in blocks of `block` consecutive ones, with
    replacement, until there are as many as in the data; every row gets the same draw, so
    differences between rows are paired.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"values must be (candidates, units) with units > 0, got {values.shape}")
    units = values.shape[1]
    starts = np.arange(0, units, max(1, block))
    block_sums = np.add.reduceat(values, starts, axis=1)            # (C, blocks)
    lengths = np.diff(np.append(starts, units))
    draws = np.random.default_rng(seed).integers(0, len(starts), size=(resamples, len(starts)))
    return (block_sums[:, draws].sum(axis=2) / lengths[draws].sum(axis=1)).T


def interval(samples: np.ndarray, level: float = 0.95) -> Tuple[float, float]:
    """Percentile interval of bootstrap `samples`."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def read_val_queries(run: Path) -> Dict[int, Dict[Tuple[str, int], int]]:
    """{epoch: {(validation set name, query): rank of the first correct match (0: none)}}."""
    path = run / "val_queries.csv" if run.is_dir() else run
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: give a training run folder (output_dir) of a "
                                f"run with a validation set")
    epochs: Dict[int, Dict[Tuple[str, int], int]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            epochs.setdefault(int(row["epoch"]), {})[(row["name"], int(row["query"]))] = \
                int(row["first_match"])
    if not epochs:
        raise ValueError(f"{path} has no rows")
    return epochs


def _run_and_epoch(text: str) -> Tuple[Path, Optional[int]]:
    head, _, tail = text.rpartition(":")
    if head and tail.isdigit():
        return Path(head), int(tail)
    return Path(text), None


def compare(ranks_a: Dict[Tuple[str, int], int], ranks_b: Dict[Tuple[str, int], int],
            recall_at: int = 1, block: int = 5) -> Dict[str, float]:
    """Recall@N of A and B on their common queries, B − A and its paired 95 % interval."""
    common = sorted(set(ranks_a) & set(ranks_b))
    if not common:
        raise ValueError("the two runs share no validation query; validate both on the same set")
    hits = np.array([hits_within([ranks[q] for q in common], recall_at)
                     for ranks in (ranks_a, ranks_b)], dtype=np.float64)
    means = block_bootstrap_means(np.vstack([hits, hits[1] - hits[0]]), block)
    low, high = interval(means[:, 2])
    return {"queries": len(common), "a": float(hits[0].mean()), "b": float(hits[1].mean()),
            "difference": float(hits[1].mean() - hits[0].mean()), "low": low, "high": high}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.compare",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="one or two run folders, each optionally :EPOCH "
                        "(default: its last epoch; one run alone is compared with its epoch 0)")
    parser.add_argument("--recall-at", type=int, default=1, help="N of Recall@N (default 1)")
    parser.add_argument("--block", type=int, default=5,
                        help="consecutive queries resampled together (default 5)")
    args = parser.parse_args(argv)
    if len(args.runs) > 2:
        parser.error("give one or two runs")
    try:
        picked = []
        for text in args.runs:
            run, epoch = _run_and_epoch(text)
            epochs = read_val_queries(run)
            epoch = max(epochs) if epoch is None else epoch
            if epoch not in epochs:
                raise ValueError(f"{run} has no epoch {epoch}; it has {sorted(epochs)}")
            picked.append((f"{run}:{epoch}", epochs[epoch], epochs))
        if len(picked) == 1:
            name, _, epochs = picked[0]
            if 0 not in epochs:
                raise ValueError(f"{name} has no epoch 0 (the start of training, written when a "
                                 f"run starts from scratch); give a second run to compare with")
            picked.insert(0, (f"{name.rpartition(':')[0]}:0", epochs[0], epochs))
        result = compare(picked[0][1], picked[1][1], args.recall_at, args.block)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = args.recall_at
    print(f"{result['queries']} common validation queries, R@{n}:")
    print(f"  A {picked[0][0]}: {result['a']:.3f}")
    print(f"  B {picked[1][0]}: {result['b']:.3f}")
    print(f"  B - A: {result['difference']:+.3f}, 95 % interval [{result['low']:+.3f}, "
          f"{result['high']:+.3f}] (paired bootstrap, blocks of {args.block} queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
