"""How the keyframe map scales on real descriptors: bytes per keyframe, single-query latency and
recall@1 of real night revisits relative to exact search, for maps of 1e4..1e6 keyframes and each
index kind, plus sequence matching on the compressed map, in one run.

Descriptors: the default model fitted (local PCA + NetVLAD) on the map-side images of every
shared dataset (Gardens Point day_right and day_left, Nordland summer: 1400 real keyframes),
as `vpr-ros build-map` users fit it on their map. The map holds those 1400 real keyframes plus
perturbed copies up to the size: copy = unit(x + g), x a random real keyframe and g drawn from
the Gaussian of the real keyframes' covariance, so a copy differs from its source about as much
as two real places do (the median cosine to its source is printed) and shares their uneven
spectrum, the hard case for product quantization.

Queries are real revisits: Gardens Point night_right (right = within ±2 frames of the same place
in day_right or day_left) and the lit Nordland winter frames (±1 of summer), 200 of each at most.
recall@1 = share whose top-1 is right; exact search (brute force over the float32 descriptors)
sets the reference and every kind reports its ratio to it, and "top10" the share of queries
whose exact top-1 keyframe (right or not) is among the map's top 10, the shortlist an IVF-PQ map
rescores: 1.0 says the codes find the keyframe and only the final order is the codes'. Latency:
one query at a time, --threads FAISS threads.

Memory: every map is saved to a temporary directory and loaded back in a fresh Python process;
"disk MB" is the whole map directory (index, keyframe records, manifest), "RSS MB" the resident
memory (VmRSS) `KeyframeMap.load` adds once faiss, numpy and vpr_ros are imported, and "idx RSS"
the same for `faiss.read_index` of the index file alone (the column "MB" is the serialized index).
The 1e6 verdict holds the index to the budget on disk and in memory and prints the whole map's.

Sequence: the night_right queries streamed through the engine's SequenceMatcher (defaults,
shortlists from the map itself, stored descriptors decoded from the codes for ivfpq), on the
flat and the compressed map of each size: R@1 and R@100P of the end keyframe.

Tuning (--tuning): index parameters (--pca-dim, --pq-m, --nlist, --nprobe) are chosen on other
queries than the reported ones: the even night_right frames and the lit winter frames the
reported set leaves out (no sequence columns: every other frame is not a drive).

    python bench/map_scaling.py                                  # 1e4 and 1e5, ~10 min here
    python bench/map_scaling.py --sizes 100000,1000000 --kinds ivfpq --cache /tmp/real.npz
    python bench/map_scaling.py --sizes 100000 --kinds ivfpq --tuning --pca-dim 1536 --pq-m 96

--cache keeps the real descriptors between runs (embedding takes ~2 min).
"""
import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import faiss
import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_ros.evaluation.metrics import precision_recall, recall_at_precision  # noqa: E402
from vpr_ros.evaluation.run import embed_folder  # noqa: E402
from vpr_ros.io.atomic import atomic_write_text  # noqa: E402
from vpr_ros.io.images import list_images, read_image  # noqa: E402
from vpr_ros.localization import EngineConfig  # noqa: E402
from vpr_ros.localization.sequence import SequenceMatcher  # noqa: E402
from vpr_ros.mapping import IndexSpec, Keyframe, KeyframeMap  # noqa: E402
from vpr_ros.mapping.index import RESCORE_SHORTLIST  # noqa: E402
from vpr_ros.model.clustering import build_offtheshelf_model  # noqa: E402
from vpr_ros.runtime.embedder import load_embedder  # noqa: E402

MAP_SIDE = ("gardens_point/day_right", "gardens_point/day_left", "nordland_tiny/summer")
QUERY_SIDE = ("gardens_point/night_right", "nordland_tiny/winter")
BUDGET_MB, BUDGET_P99_MS, BUDGET_RATIO = 128.0, 10.0, 0.95
ADD_CHUNK = 50_000
REPO = Path(__file__).resolve().parents[1]
RSS_PROBE = """
import sys
import faiss, numpy
from vpr_ros.mapping import KeyframeMap

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))

before = rss()
loaded = KeyframeMap.load(sys.argv[1]) if sys.argv[2] == "map" else faiss.read_index(sys.argv[1])
print(rss() - before)
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("VPR_ROS_DATASETS", "../shared/datasets")))
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated map sizes (keyframes)")
    parser.add_argument("--kinds", default="flat,sq8,ivfpq", help="index kinds to build")
    parser.add_argument("--max-flat-gb", type=float, default=2.0,
                        help="skip flat maps larger than this (exact R@1 is computed regardless)")
    parser.add_argument("--nlist", type=int, default=IndexSpec.nlist, help="IVF lists (0: the map default of the kind)")
    parser.add_argument("--nprobe", type=int, default=IndexSpec.nprobe,
                        help="IVF lists visited per query (map default)")
    parser.add_argument("--pca-dim", type=int, default=IndexSpec.pca_dim,
                        help="principal axes kept before IVF-PQ (0: the map default, 15/32 of dim; dim: none)")
    parser.add_argument("--pq-m", type=int, default=IndexSpec.pq_m,
                        help="PQ bytes per keyframe (0: the map default, pca-dim/10)")
    parser.add_argument("--latency-queries", type=int, default=200, help="single queries timed")
    parser.add_argument("--threads", type=int, default=1, help="FAISS threads")
    parser.add_argument("--tuning", action="store_true",
                        help="query the tuning set (even night_right frames, the lit winter frames "
                             "the reported set leaves out) instead of the reported queries")
    parser.add_argument("--cache", type=Path, help=".npz keeping the real descriptors between runs")
    parser.add_argument("--out", type=Path, default=Path("out/bench_map_scaling"))
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def real_descriptors(datasets: Path, cache) -> Dict[str, np.ndarray]:
    """{traversal: (N, dim)} from the default model fitted on the map-side images."""
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            return {name: data[name] for name in data.files}
    map_images = [p for name in MAP_SIDE for p in list_images(datasets / name)]
    torch.set_num_threads(1)
    model = build_offtheshelf_model(read_image(p) for p in map_images[:: max(1, len(map_images) // 500)])
    embedder = load_embedder(model=model, backend="torch")
    out = {name: embed_folder(embedder, list_images(datasets / name), f"embed {name}")[0]
           for name in MAP_SIDE + QUERY_SIDE}
    if cache is not None:
        np.savez(cache, **out)
    return out


def revisit_queries(real: Dict[str, np.ndarray], datasets: Path, limit: int = 200, tuning: bool = False):
    """(queries, positives: list of sets of real keyframe ids) and the GP night_right count.

    The reported queries: the first `limit` night_right frames and `limit` evenly spaced lit
    Nordland winter frames. `tuning`: a set to choose index parameters on instead, the even
    night_right frames and every lit winter frame the reported set leaves out."""
    offsets, start = {}, 0
    for name in MAP_SIDE:
        offsets[name] = start
        start += len(real[name])
    frames = range(min(limit, len(real["gardens_point/night_right"])))
    frames = frames[::2] if tuning else frames
    night = real["gardens_point/night_right"][list(frames)]
    positives = [{offsets[side] + j for side in MAP_SIDE[:2]
                  for j in range(max(0, i - 2), min(len(real[side]), i + 3))}
                 for i in frames]
    with open(datasets / "nordland_tiny" / "ground_truth.csv") as handle:
        lit = [i for i, row in enumerate(csv.DictReader(handle)) if row["dark_or_tunnel"] == "0"]
    reported = lit[:: max(1, len(lit) // limit)][:limit]
    chosen = sorted(set(lit) - set(reported)) if tuning else reported
    summer = offsets["nordland_tiny/summer"]
    positives += [{summer + j for j in range(max(0, i - 1), min(1000, i + 2))} for i in chosen]
    queries = np.concatenate([night, real["nordland_tiny/winter"][chosen]])
    return np.ascontiguousarray(queries, np.float32), positives, len(night)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def grow(base: np.ndarray, size: int, rng) -> (np.ndarray, float):
    """`base` plus perturbed copies up to `size` rows, and the copies' median cosine to their source."""
    centred = base - base.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    scale = (singular / np.sqrt(len(base) - 1))[:, None] * vt            # Gaussian of the real ones
    out = np.empty((size, base.shape[1]), np.float32)
    out[: len(base)] = base
    cosines = []
    for start in tqdm(range(len(base), size, 100_000), desc=f"copies to {size}", unit="chunk", leave=False):
        stop = min(size, start + 100_000)
        source = base[rng.integers(0, len(base), stop - start)]
        noise = rng.standard_normal((stop - start, len(scale)), dtype=np.float32) @ scale
        out[start:stop] = unit(source + noise)
        cosines.append(np.median(np.sum(out[start:stop] * source, axis=1)))
    return out, float(np.median(cosines)) if cosines else float("nan")


def build(kind: str, vectors: np.ndarray, records: List[Keyframe], args) -> KeyframeMap:
    """A map grown 50,000 keyframes at a time, as a robot's map grows (IVF-PQ trains once)."""
    kf_map = KeyframeMap.create(vectors.shape[1], "bench", index=kind, nlist=args.nlist,
                                pq_m=args.pq_m, nprobe=args.nprobe, pca_dim=args.pca_dim)
    for start in tqdm(range(0, len(vectors), ADD_CHUNK), desc=f"build {kind}", unit="chunk", leave=False):
        kf_map.add(vectors[start:start + ADD_CHUNK], records[start:start + ADD_CHUNK])
    return kf_map


def exact_top1(vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact nearest keyframe of each query by brute force (the reference; no map needed)."""
    best = np.full(len(queries), -np.inf)
    ids = np.zeros(len(queries), np.int64)
    for start in range(0, len(vectors), ADD_CHUNK):
        scores = vectors[start:start + ADD_CHUNK] @ queries.T
        top = scores.argmax(0)
        better = scores[top, np.arange(len(queries))] > best
        best[better] = scores[top, np.arange(len(queries))][better]
        ids[better] = start + top[better]
    return ids


def session_records(real: Dict[str, np.ndarray], size: int) -> List[Keyframe]:
    """One session per real traversal (stamp = frame number) and one for the copies."""
    counts = [(name.split("/")[-1], len(real[name])) for name in MAP_SIDE]
    counts.append(("copies", size - sum(n for _, n in counts)))
    return [Keyframe(session, float(t)) for session, n in counts for t in range(n)]


def recall_at_1(ids: np.ndarray, positives) -> float:
    return float(np.mean([i in pos for i, pos in zip(ids, positives)]))


def sequence_recall(kf_map: KeyframeMap, queries: np.ndarray, positives) -> (float, float):
    """R@1 and R@100P (confidence = the matcher's evidence, as the engine and
    `sequence_ranking` use it) of the end keyframe for `queries` streamed in order, one per s."""
    config = EngineConfig()
    matcher = SequenceMatcher(kf_map, config.sequence_settings())
    scores, ids = kf_map.search(queries, config.top_k)
    evidence, right = np.empty(len(queries)), np.zeros(len(queries), bool)
    for i, query in enumerate(queries):
        result = matcher.update(float(i), query, ids[i], scores[i])
        evidence[i] = result.evidence
        right[i] = bool(result.ranked) and result.ranked[0].keyframe_id in positives[i]
    decided = np.isfinite(evidence)
    precision, recall, _ = precision_recall(evidence[decided], right[decided], len(queries))
    return float(right.mean()), recall_at_precision(precision, recall, 1.0)


def loaded_rss_mb(path: Path, what: str) -> float:
    """Resident MB that loading `path` ("map": KeyframeMap.load, "index": faiss.read_index) adds
    in a fresh process, after its imports."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", RSS_PROBE, str(path), what], env=env,
                          capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1]) / 2 ** 20


def saved_footprint(kf_map: KeyframeMap) -> (float, float, float):
    """(disk MB of the whole saved map, RSS MB of loading it, RSS MB of loading its index alone)."""
    with tempfile.TemporaryDirectory(prefix="map_scaling_") as tmp:
        directory = Path(tmp) / "map"
        kf_map.save(directory)
        disk = sum(f.stat().st_size for f in directory.iterdir()) / 2 ** 20
        return disk, loaded_rss_mb(directory, "map"), loaded_rss_mb(directory / "index.faiss", "index")


def measure(kind: str, vectors, records, queries, positives, night: int, exact_ids, args) -> Dict:
    tic = time.perf_counter()
    kf_map = build(kind, vectors, records, args)
    build_s = time.perf_counter() - tic
    latencies = []
    for query in queries[: args.latency_queries]:
        tic = time.perf_counter()
        kf_map.search(query[None], 1)
        latencies.append(1000.0 * (time.perf_counter() - tic))
    _, ids = kf_map.search(queries, RESCORE_SHORTLIST)
    seq_r1, seq_r100 = (float("nan"), float("nan")) if args.tuning else sequence_recall(
        kf_map, queries[:night], positives[:night])   # the tuning set skips every other frame
    disk_mb, rss_mb, index_rss_mb = saved_footprint(kf_map)
    return {"keyframes": len(vectors), "kind": kind, "index": kf_map.index_summary(),
            "bytes_per_kf": kf_map.index_bytes() / len(vectors), "mb": kf_map.index_bytes() / 2 ** 20,
            "disk_mb": disk_mb, "rss_mb": rss_mb, "index_rss_mb": index_rss_mb,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "build_s": build_s, "R@1": recall_at_1(ids[:, 0], positives),
            "exact in top": float(np.mean([e in row for e, row in zip(exact_ids, ids)])),
            "seq R@1": seq_r1, "seq R@100P": seq_r100}


def main(argv=None) -> int:
    args = parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    if not (args.datasets / "gardens_point" / "night_right").is_dir():
        print(f"Gardens Point not found in {args.datasets}; set --datasets or $VPR_ROS_DATASETS")
        return 2
    real = real_descriptors(args.datasets, args.cache)
    base = np.concatenate([real[name] for name in MAP_SIDE]).astype(np.float32)
    queries, positives, night = revisit_queries(real, args.datasets, tuning=args.tuning)
    kinds = [k.strip() for k in args.kinds.split(",")]
    rng = np.random.default_rng(args.seed)
    print(f"real map-side keyframes {len(base)} of dim {base.shape[1]}; queries: {night} Gardens "
          f"Point night_right, {len(queries) - night} Nordland winter ({'tuning' if args.tuning else 'reported'} "
          f"set); {args.threads} FAISS thread(s)")
    print(f"{'keyframes':>10} {'kind':>6} {'B/kf':>8} {'MB':>8} {'disk MB':>8} {'RSS MB':>7} "
          f"{'idx RSS':>7} {'p50 ms':>7} {'p99 ms':>7} {'build s':>8} {'R@1':>6} {'/exact':>7} "
          f"{f'top{RESCORE_SHORTLIST}':>6} {'seq R@1':>8} {'seq R@100P':>10}  index")
    rows = []
    for size in (int(float(s)) for s in args.sizes.split(",")):
        vectors, copy_cos = grow(base, size, rng)
        records = session_records(real, size)
        exact_ids = exact_top1(vectors, queries)
        exact = recall_at_1(exact_ids, positives)
        print(f"  {size}: perturbed copies have median cosine {copy_cos:.3f} to their source; "
              f"exact search R@1 {exact:.3f}")
        for kind in kinds:
            if kind == "flat" and vectors.nbytes / 1e9 > args.max_flat_gb:
                print(f"  skip flat at {size}: {vectors.nbytes / 1e9:.1f} GB > --max-flat-gb")
                continue
            row = measure(kind, vectors, records, queries, positives, night, exact_ids, args)
            row["ratio"] = row["R@1"] / max(exact, 1e-9)
            row["copy_cos"] = copy_cos
            rows.append(row)
            print(f"{size:>10} {kind:>6} {row['bytes_per_kf']:>8.1f} {row['mb']:>8.1f} "
                  f"{row['disk_mb']:>8.1f} {row['rss_mb']:>7.1f} {row['index_rss_mb']:>7.1f} "
                  f"{row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['build_s']:>8.1f} "
                  f"{row['R@1']:>6.3f} {row['ratio']:>7.3f} {row['exact in top']:>6.3f} {row['seq R@1']:>8.3f} "
                  f"{row['seq R@100P']:>10.3f}  {row['index']}", flush=True)
        del vectors
    for row in rows:
        if row["keyframes"] >= 1_000_000 and row["kind"] != "flat":
            met = (max(row["mb"], row["index_rss_mb"]) <= BUDGET_MB and row["p99_ms"] <= BUDGET_P99_MS
                   and row["ratio"] >= BUDGET_RATIO)
            print(f"1e6 {row['kind']}: index {'meets' if met else 'misses'} <= {BUDGET_MB:.0f} MB "
                  f"(file and resident), <= {BUDGET_P99_MS:.0f} ms p99, >= {BUDGET_RATIO} of exact "
                  f"R@1; whole map {row['disk_mb']:.0f} MB on disk, {row['rss_mb']:.0f} MB resident")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"map_scaling_{'_'.join(args.sizes.split(','))}{'_tuning' if args.tuning else ''}.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
