"""Where along the route each traversal pair's appearance lines up: the diagonal offset that
best explains every stretch, on the validation places (0-99) and on the test places (100-199).

Why it exists: the sequence decision's day_left -> night_right ends are 3-5 places behind in a
few stretches of the test (docs/results.md) and almost never on validation, so no setting
chosen on validation can be tested against that failure. This bench shows the cause as a
property of the data, not of a matcher: for revisit frame k, the offset d (map keyframe k + d)
that maximizes the mean cosine similarity over the WINDOW frames centred on k along the
diagonal, i.e. a short stretch driven at the mapping speed, read off the whole similarity
matrix. A pair whose best offset leaves ±2 places in a stretch looks, in that stretch, more
like another part of the route than like the frames of the same index: a sequence matcher that
follows appearance is then "wrong" by the ±2-place ground truth however it steps. The same-light
pairs tell how well the frame indices of the two day traversals correspond at all.

No setting is chosen here; this reads the test places, as a property of the dataset only.
NetVLAD is clustered on each map traversal, as everywhere else in bench/.

    python bench/along_track_offset.py                   # datasets from $VPR_ROS_DATASETS
    python bench/along_track_offset.py --out out/offset  # also writes along_track_offset.png
"""
import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sequence_matching import embed_pairs, gardens_point  # noqa: E402
from vpr_ros.evaluation.plots import save_figure  # noqa: E402

PAIRS = (("day_left", "night_right"), ("day_right", "night_right"), ("night_right", "day_left"),
         ("day_left", "day_right"), ("day_right", "day_left"))
"""(map, revisit): both night revisits of a day map, the day_left revisit of the night map, and
the two same-light pairs."""
WINDOW = 7
MAX_OFFSET = 8
TOLERANCE = 2
SPLITS = (("validation", 0, 100), ("test", 100, 200))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("VPR_ROS_DATASETS", "../shared/datasets")))
    parser.add_argument("--out", type=Path, help="write along_track_offset.png here")
    return parser.parse_args(argv)


def best_offsets(db: np.ndarray, queries: np.ndarray, window: int = WINDOW,
                 max_offset: int = MAX_OFFSET) -> np.ndarray:
    """Per revisit frame k, the offset d in -max_offset..max_offset whose diagonal S[k+j, k+j+d]
    (j within the window centred on k, both indices on the route) has the highest mean."""
    similarity = queries @ db.T
    count = len(queries)
    frames = np.arange(count)
    offsets = np.arange(-max_offset, max_offset + 1)
    means = np.full((len(offsets), count), -np.inf)
    half = window // 2
    for row, d in enumerate(offsets):
        keyframes = frames + d
        on = (keyframes >= 0) & (keyframes < len(db))
        values = np.where(on, similarity[frames, np.clip(keyframes, 0, len(db) - 1)], 0.0)
        total = np.convolve(values, np.ones(window), mode="same")
        covered = np.convolve(on.astype(float), np.ones(window), mode="same")
        means[row] = np.where(covered > half, total / np.maximum(covered, 1), -np.inf)
    return offsets[np.argmax(means, axis=0)]


def strip(offsets: np.ndarray) -> str:
    """One character per frame: '.' within the tolerance, '-' behind, '+' ahead."""
    return "".join("." if abs(d) <= TOLERANCE else ("-" if d < 0 else "+") for d in offsets)


def plot(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4))
    for name, offsets in results.items():
        ax.plot(np.arange(len(offsets)), offsets, label=name, lw=1.2)
    ax.axhspan(-TOLERANCE, TOLERANCE, color="0.9", label=f"±{TOLERANCE} places")
    ax.axvline(SPLITS[1][1] - 0.5, color="k", lw=0.8, ls="--")
    ax.set(xlabel="revisit frame (place index): validation | test",
           ylabel="best diagonal offset (places)",
           title=f"Best diagonal offset over {WINDOW}-frame stretches, Gardens Point")
    ax.legend(fontsize=8, ncol=3)
    save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    gp = gardens_point(args.datasets)
    if gp is None:
        return 2
    results = {name: best_offsets(*pair) for name, pair in embed_pairs(gp, PAIRS).items()}
    print(f"\nBest diagonal offset over {WINDOW}-frame stretches ('.' within ±{TOLERANCE} places, "
          f"'-' map behind, '+' ahead); frames beyond ±{TOLERANCE}, per split")
    for name, offsets in results.items():
        counts = ", ".join(f"{split} {int(np.sum(np.abs(offsets[lo:hi]) > TOLERANCE))}/{hi - lo}"
                           for split, lo, hi in SPLITS)
        print(f"\n{name:<22} {counts}")
        for split, lo, hi in SPLITS:
            print(f"  {lo:>3}-{hi - 1:<3} {strip(offsets[lo:hi])}")
            far = np.flatnonzero(np.abs(offsets[lo:hi]) > TOLERANCE) + lo
            if len(far):
                print("          " + " ".join(f"{k}:{offsets[k]:+d}" for k in far))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        plot(results, args.out / "along_track_offset.png")
        print(f"\nwrote {args.out / 'along_track_offset.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
