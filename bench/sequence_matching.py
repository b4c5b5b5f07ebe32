"""What sequence matching buys and what it costs: R@1 and R@100P against the sequence length on
Gardens Point, and the time the matcher adds per frame on maps of 1e3..1e6 keyframes, in one run.

Recall: the default off-the-shelf model (NetVLAD clustered on each pair's db images, as
`vpr-ros eval` builds it), all 200 night_right queries against day_right and day_left, ±2
frames; each query's sequence is it and its L-1 predecessors (`vpr-ros eval --sequence-length L`
is the same code); confidence = the matcher's uniqueness margin, engine defaults otherwise.
L = 1 is one frame scored by the matcher (normalized similarity, margin); "cosine" is plain
single-image retrieval ranked by the cosine score.

Timing: synthetic unit vectors (a smooth 300-keyframe route inside a random map of N keyframes,
noisy revisits as queries), the real shortlist size (top_k); only `SequenceMatcher.update` is
timed, the FAISS search that makes the shortlist is not (bench/map_scaling.py measures that).
The matcher's work depends on L, the speeds and the descriptor dimension, not on N: sizes are run
at --dims (default 256, a compact descriptor, and the default model's dimension while a flat map
of it fits in --max-gb).

    python bench/sequence_matching.py                      # datasets from $VPR_ROS_DATASETS
    python bench/sequence_matching.py --lengths 1,5,10 --sizes 1000,100000 --out out/seq

Writes `sequence_matching.csv` and `sequence_matching.png` into --out.
"""
import argparse
import csv
import io
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_ros.evaluation.plots import save_figure  # noqa: E402
from vpr_ros.evaluation.ground_truth import positives_by_tolerance  # noqa: E402
from sequence_defaults import embed  # noqa: E402
from vpr_ros.evaluation.run import ranking_metrics, score_retrieval  # noqa: E402
from vpr_ros.evaluation.sequence_retrieval import sequence_ranking  # noqa: E402
from vpr_ros.io.atomic import atomic_write_text  # noqa: E402
from vpr_ros.localization import EngineConfig  # noqa: E402
from vpr_ros.localization.sequence import SequenceMatcher  # noqa: E402
from vpr_ros.mapping import Keyframe, KeyframeMap  # noqa: E402

ROUTE = 300
TIMED_FRAMES = 200


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("VPR_ROS_DATASETS", "../shared/datasets")))
    parser.add_argument("--lengths", default="1,3,5,10,20", help="sequence lengths L")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="map sizes to time")
    parser.add_argument("--dims", default="256,default", help="descriptor dims to time "
                        "('default': the default model's)")
    parser.add_argument("--max-gb", type=float, default=6.0, help="largest flat map to build")
    parser.add_argument("--out", type=Path, default=Path("out/bench_sequence"))
    return parser.parse_args(argv)


def embed_pairs(root: Path):
    """Descriptors of each db traversal and of night_right with a model clustered on that db."""
    pairs = {db: embed(root / db, root / "night_right") for db in ("day_right", "day_left")}
    return pairs, pairs["day_right"][0].shape[1]


def recall_rows(pairs, lengths):
    """(pair, method, L, R@1, R@100P) for plain cosine retrieval and each sequence length."""
    rows = []
    for name, (db, queries) in pairs.items():
        positives = positives_by_tolerance(len(queries), len(db), 2)
        single = score_retrieval(db, queries, positives)
        rows.append((name, "cosine", 1, single["recall"]["1"], single["recall_at_100p"]))
        for length in lengths:
            config = EngineConfig(sequence_length=length, sequence_warmup_length=min(
                length, EngineConfig().sequence_warmup_length))
            evidence, ranked = sequence_ranking(db, queries, config.sequence_settings(),
                                                config.top_k)
            seq = ranking_metrics(ranked, evidence, positives)
            rows.append((name, "sequence", length, seq["recall"]["1"], seq["recall_at_100p"]))
    return rows


def synthetic_map(size: int, dim: int, rng) -> KeyframeMap:
    """A flat map: keyframes 0..ROUTE-1 drift smoothly (a route), the rest are random places."""
    kf_map = KeyframeMap.create(dim, "synthetic")
    route = np.cumsum(rng.standard_normal((ROUTE, dim), dtype=np.float32), axis=0)
    route = route * 0.3 + rng.standard_normal((ROUTE, dim), dtype=np.float32)
    chunks = [route] + [rng.standard_normal((min(50_000, size - start), dim), dtype=np.float32)
                        for start in range(ROUTE, size, 50_000)]
    stamp = 0
    for chunk in tqdm(chunks, desc=f"map {size} x {dim}", unit="chunk", leave=False):
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        kf_map.add(chunk, [Keyframe("day", float(stamp + i)) for i in range(len(chunk))])
        stamp += len(chunk)
    return kf_map


def time_matcher(kf_map: KeyframeMap, length: int, rng) -> np.ndarray:
    """ms per `SequenceMatcher.update` over revisits of the route with realistic shortlists."""
    config = EngineConfig(sequence_length=length)
    matcher = SequenceMatcher(kf_map, config.sequence_settings())
    route = kf_map.descriptors(np.arange(ROUTE))
    pool = np.unique(np.concatenate([np.arange(ROUTE), rng.choice(len(kf_map), 2000)]))
    pool_vectors = kf_map.descriptors(pool)
    times = []
    for i in range(TIMED_FRAMES):
        place = 20 + i % (ROUTE - 40)
        query = route[place] + 1.2 * rng.standard_normal(kf_map.dim).astype(np.float32) / np.sqrt(kf_map.dim)
        query /= np.linalg.norm(query)
        scores = pool_vectors @ query
        top = np.argsort(-scores)[:config.top_k]
        tic = time.perf_counter()
        matcher.update(float(i), query, pool[top], scores[top])
        times.append(1000.0 * (time.perf_counter() - tic))
    return np.asarray(times[length:])


def timing_rows(sizes, dims, length, max_gb):
    rows = []
    rng = np.random.default_rng(0)
    for dim in dims:
        for size in sizes:
            if size * dim * 4 / 1e9 > max_gb:
                print(f"skip {size} x {dim}: a flat map needs {size * dim * 4 / 1e9:.1f} GB > --max-gb")
                continue
            kf_map = synthetic_map(size, dim, rng)
            ms = time_matcher(kf_map, length, rng)
            rows.append((dim, size, float(np.median(ms)), float(np.percentile(ms, 99))))
            del kf_map
    return rows


def plot(recalls, timings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r[0] for r in recalls):
        seq = [r for r in recalls if r[0] == name and r[1] == "sequence"]
        cosine = next(r for r in recalls if r[0] == name and r[1] == "cosine")
        line = left.plot([r[2] for r in seq], [r[4] for r in seq], marker="o",
                         label=f"{name} → night_right, R@100P")[0]
        left.plot([r[2] for r in seq], [r[3] for r in seq], marker=".", ls="--",
                  color=line.get_color(), label=f"{name} → night_right, R@1")
        left.axhline(cosine[4], color=line.get_color(), ls=":", lw=1)
    left.set(xlabel="sequence length L (frames)", ylabel="recall", ylim=(0, 1.02),
             title="Gardens Point, ±2 frames (dotted: single-image R@100P)")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    for dim in dict.fromkeys(r[0] for r in timings):
        rows = [r for r in timings if r[0] == dim]
        right.plot([r[1] for r in rows], [r[2] for r in rows], marker="o", label=f"{dim}-D, p50")
        right.plot([r[1] for r in rows], [r[3] for r in rows], marker=".", ls="--", label=f"{dim}-D, p99")
    right.set(xscale="log", xlabel="map size (keyframes)", ylabel="ms per frame",
              title="time the sequence matcher adds (synthetic)")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    faiss.omp_set_num_threads(1)
    root = args.datasets / "gardens_point"
    if not (root / "night_right").is_dir():
        print(f"Gardens Point not found in {args.datasets}; set --datasets or $VPR_ROS_DATASETS")
        return 2
    lengths = [int(v) for v in args.lengths.split(",")]
    pairs, default_dim = embed_pairs(root)
    recalls = recall_rows(pairs, lengths)
    dims = [default_dim if d == "default" else int(d) for d in args.dims.split(",")]
    length = EngineConfig().sequence_length
    timings = timing_rows([int(v) for v in args.sizes.split(",")], dims, length, args.max_gb)

    print("\nGardens Point → night_right, ±2 frames, 200 queries (engine defaults, L varies)")
    print(f"{'db':<11}{'method':<10}{'L':>4}{'R@1':>8}{'R@100P':>9}")
    for name, method, n, r1, r100 in recalls:
        print(f"{name:<11}{method:<10}{n:>4}{r1:>8.3f}{r100:>9.3f}")
    print(f"\nsequence matcher, L = {length}, ms per frame (synthetic, shortlist search not included)")
    print(f"{'dim':>6}{'keyframes':>11}{'p50':>8}{'p99':>8}")
    for dim, size, p50, p99 in timings:
        print(f"{dim:>6}{size:>11}{p50:>8.2f}{p99:>8.2f}")
    if len(timings) > 1:
        print(f"ratio of p50 at the largest to the smallest map ({timings[0][0]}-D): "
              f"{[t for t in timings if t[0] == timings[0][0]][-1][2] / timings[0][2]:.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["kind", "db_or_dim", "method_or_keyframes", "L", "R@1_or_p50_ms", "R@100P_or_p99_ms"])
    writer.writerows(("recall", name, method, n, r1, r100) for name, method, n, r1, r100 in recalls)
    writer.writerows(("timing", dim, size, length, p50, p99) for dim, size, p50, p99 in timings)
    atomic_write_text(args.out / "sequence_matching.csv", text.getvalue())
    plot(recalls, timings, args.out / "sequence_matching.png")
    print(f"wrote {args.out / 'sequence_matching.csv'} and {args.out / 'sequence_matching.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
