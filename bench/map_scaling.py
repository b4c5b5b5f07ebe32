"""How the keyframe map scales: bytes per keyframe, single-query latency, build time and recall@1
relative to exact search, for maps of 1e3..1e6 keyframes and each index type, in one run.

Usage: python bench/map_scaling.py [--sizes 1000,10000,100000,1000000] [--descriptors real.npy]

Descriptors: without --descriptors, random unit vectors at --dim (256). That is the right model for
the deployed descriptors: PCA-whitening makes their covariance the identity, and whitened,
L2-normalized vectors are spread over the sphere like isotropic Gaussians. With --descriptors
(an (N, D) .npy of real descriptors), they are reduced by PCA to --dim (without whitening) and
synthetic descriptors are drawn from a Gaussian with their mean and covariance, which keeps their
uneven spectrum (the hard case for product quantization).

Queries: recall "relative to exact" must be measured on real revisits. A random query has no
true match: its exact nearest neighbour is an arbitrary vector barely closer than thousands of
others, and whether an approximate index returns that same vector is noise. So each query is a
stored keyframe plus noise scaled to cosine --revisit-cos (default 0.7, a same-place pair across
conditions) with its keyframe; recall@1 = fraction of queries whose top-1 is that keyframe. Exact
(flat) search sets the reference; other indexes report recall@1 and the ratio to flat.
"""
import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_ros.mapping import Keyframe, KeyframeMap  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="comma-separated map sizes (keyframes)")
    parser.add_argument("--kinds", default="flat,fp16,ivfpq", help="index types to compare")
    parser.add_argument("--dim", type=int, default=256, help="descriptor dimension after PCA-whitening")
    parser.add_argument("--descriptors", help=".npy of real descriptors to derive the synthetic ones from")
    parser.add_argument("--queries", type=int, default=200, help="revisit queries for recall@1")
    parser.add_argument("--latency-queries", type=int, default=100, help="single queries timed")
    parser.add_argument("--revisit-cos", type=float, default=0.7, help="cosine of a query with its keyframe")
    parser.add_argument("--nlist", type=int, default=256, help="IVF lists (map default 256)")
    parser.add_argument("--nprobe", type=int, default=96, help="IVF lists visited per query (map default 96)")
    parser.add_argument("--pq-m", type=int, default=0, help="4-bit PQ sub-vectors (0: dim/4, i.e. dim/8 bytes)")
    parser.add_argument("--threads", type=int, default=2, help="FAISS threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class DescriptorSource:
    """Unit descriptors: isotropic (whitened) or drawn from the Gaussian fitted to real ones."""

    def __init__(self, dim: int, real_path=None, seed: int = 0):
        self.dim = dim
        self.rng = np.random.default_rng(seed)
        self.mean = np.zeros(dim, np.float32)
        self.basis = np.eye(dim, dtype=np.float32)
        if real_path:
            real = np.load(real_path).astype(np.float64)
            if real.ndim != 2 or real.shape[0] < 2:
                raise ValueError(f"{real_path} must hold an (N, D) array of N >= 2 descriptors")
            centred = real - real.mean(0)
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            reduced = centred @ vt[:dim].T
            reduced /= np.linalg.norm(reduced, axis=1, keepdims=True)
            self.mean = reduced.mean(0).astype(np.float32)
            cov = np.cov(reduced - self.mean, rowvar=False) + 1e-6 * np.eye(reduced.shape[1])
            self.basis = np.linalg.cholesky(cov).T.astype(np.float32)
            self.dim = reduced.shape[1]

    def draw(self, count: int) -> np.ndarray:
        rows = self.rng.standard_normal((count, self.dim), dtype=np.float32) @ self.basis + self.mean
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def revisits(self, stored: np.ndarray, cosine: float) -> np.ndarray:
        """Noisy copies of `stored` rows whose cosine with their source is about `cosine`."""
        noise = self.rng.standard_normal(stored.shape, dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        scale = np.sqrt(1.0 / cosine ** 2 - 1.0)
        rows = stored + scale * noise
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def measure(kind: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, args) -> dict:
    size = len(vectors)
    start = time.perf_counter()
    kf_map = KeyframeMap.create(vectors.shape[1], "bench", index=kind, nlist=args.nlist,
                                pq_m=args.pq_m, nprobe=args.nprobe)
    kf_map.add(vectors, [Keyframe("bench", float(i)) for i in range(size)])
    build_s = time.perf_counter() - start
    index_bytes = kf_map.index_bytes()
    latencies = []
    for query in queries[: args.latency_queries]:
        tic = time.perf_counter()
        kf_map.search(query[None], 1)
        latencies.append(1000.0 * (time.perf_counter() - tic))
    _, ids = kf_map.search(queries, 1)
    trained = kf_map.manifest()["index"]["trained"]
    label = kind if kind != "ivfpq" or trained else "ivfpq*"
    return {"size": size, "kind": label, "bytes_per_kf": index_bytes / size,
            "index_mb": index_bytes / 2 ** 20, "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "build_s": build_s,
            "recall1": float((ids[:, 0] == truth).mean())}


def main(argv=None) -> int:
    args = parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    kinds = [k.strip() for k in args.kinds.split(",")]
    if "flat" not in kinds:
        kinds.insert(0, "flat")
    source = DescriptorSource(args.dim, args.descriptors, args.seed)
    origin = f"Gaussian fitted to {args.descriptors}" if args.descriptors else "isotropic random unit vectors"
    code_bytes = (args.pq_m or source.dim // 4) // 2
    print(f"descriptors: {origin}, dim {source.dim}; queries: {args.queries} revisits at cosine "
          f"{args.revisit_cos} with their keyframe; {args.threads} FAISS threads; ivfpq: {code_bytes}-byte "
          f"fast-scan PQ codes, nlist {args.nlist}, nprobe {args.nprobe}")
    header = (f"{'keyframes':>10} {'index':>7} {'B/kf':>8} {'MB':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'build s':>8} {'R@1':>6} {'R@1/flat':>9} {'B/kf vs flat':>13} {'p50 vs flat':>12}")
    print(header)
    rows = []
    for size in sizes:
        vectors = source.draw(size)
        truth = source.rng.choice(size, size=min(args.queries, size), replace=False)
        queries = source.revisits(vectors[truth], args.revisit_cos)
        flat = None
        for kind in kinds:
            row = measure(kind, vectors, queries, truth, args)
            flat = flat or row
            rows.append(row)
            print(f"{size:>10} {row['kind']:>7} {row['bytes_per_kf']:>8.1f} {row['index_mb']:>8.1f} "
                  f"{row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['build_s']:>8.1f} {row['recall1']:>6.3f} "
                  f"{row['recall1'] / max(flat['recall1'], 1e-9):>9.3f} "
                  f"{row['bytes_per_kf'] / flat['bytes_per_kf']:>13.3f} {row['p50_ms'] / flat['p50_ms']:>12.3f}",
                  flush=True)
        del vectors
    print("ivfpq* = below the training minimum, still the exact flat buffer. Target at 1e6: "
          "<= 128 MB, < 10 ms/query, R@1/flat >= 0.95.")
    big = [r for r in rows if r["size"] >= 1_000_000 and r["kind"] == "ivfpq"]
    for row in big:
        ok = row["index_mb"] <= 128 and row["p50_ms"] < 10 and row["recall1"] / max(
            next(r for r in rows if r["size"] == row["size"] and r["kind"] == "flat")["recall1"], 1e-9) >= 0.95
        print(f"1e6 ivfpq target {'met' if ok else 'NOT met'}: {row['index_mb']:.1f} MB, "
              f"p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
