"""Sequence decisions on the test: revisits at other speeds, with jitter, drops and a stop, or a
change of speed half-way; robot-side replays of the night bag; and the matcher's cost on maps of
1e3..1e6 keyframes, in one run.

Test (the engine defaults, chosen by `bench/sequence_defaults.py` on other data): Gardens Point
places 100-199 only, one single-session map per day traversal (keyframe j = place j, 1 s apart;
NetVLAD clustered on that traversal's images, as `vpr-ros eval` does), night_right driven again
(`vpr_ros.evaluation.revisits`) at 0.5, 0.75, 1, 1.5 and 2 times the mapping speed, cleanly and
roughly (stamps jittered by up to a fifth of a step, one frame in ten lost, a stop of 30 frames
half-way), and changing speed half-way (0.5 -> 1, 1 -> 0.5, 1 -> 2, 2 -> 1). Right = the
reported end within ±2 places; R@100P = share of the stream's frames
accepted before the first wrong one when frames are ranked by evidence; accepted / wrong at the
default `sequence_threshold`.

Bags (`--bags`, what a user runs): `vpr-ros build-map` of day_right stamped at --rate 1, 2 and
4 (the 2 Hz night bag then revisits at 2, 1 and 0.5 times the mapping speed), and a map of
day_right and day_left as two sessions (the second linked to the first), then `vpr-ros
localize` of the night_right `.mcap` bag at the engine defaults; wrong = reported keyframe more
than 2 frames from the frame (both sessions' keyframe k shows place k).

Timing: synthetic unit vectors (a smooth 300-keyframe route inside a random map of N keyframes,
noisy revisits as queries), the real shortlist size (top_k); only `SequenceMatcher.update` is
timed, the FAISS search that makes the shortlist is not (bench/map_scaling.py measures that).

    python bench/sequence_matching.py                      # datasets from $VPR_ROS_DATASETS
    python bench/sequence_matching.py --bags --sizes 1000,100000 --out out/seq

Writes `sequence_matching.csv` and `sequence_matching.png` into --out.
"""
import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import faiss
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_ros.evaluation.metrics import precision_recall, recall_at_precision  # noqa: E402
from vpr_ros.evaluation.plots import save_figure  # noqa: E402
from vpr_ros.evaluation.revisits import (  # noqa: E402
    RATIOS, speed_changes, steady_revisits, stream_revisit)
from vpr_ros.evaluation.run import embed_folder  # noqa: E402
from vpr_ros.io.atomic import atomic_write_text  # noqa: E402
from vpr_ros.io.images import list_images, read_image  # noqa: E402
from vpr_ros.localization import EngineConfig  # noqa: E402
from vpr_ros.localization.sequence import SequenceMatcher  # noqa: E402
from vpr_ros.mapping import Keyframe, KeyframeMap  # noqa: E402
from vpr_ros.model.checkpoint import save_checkpoint  # noqa: E402
from vpr_ros.model.clustering import build_offtheshelf_model  # noqa: E402
from vpr_ros.runtime.embedder import load_embedder  # noqa: E402

TEST = np.arange(100, 200)
ROUTE = 300
TIMED_FRAMES = 200
BAG = "gardens_point_bags/night_right_compressed_mcap"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("VPR_ROS_DATASETS", "../shared/datasets")))
    parser.add_argument("--bags", action="store_true", help="also build maps and localize the bag")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000", help="map sizes to time")
    parser.add_argument("--dims", default="256,default", help="descriptor dims to time "
                        "('default': the default model's)")
    parser.add_argument("--max-gb", type=float, default=6.0, help="largest flat map to build")
    parser.add_argument("--out", type=Path, default=Path("out/bench_sequence"))
    return parser.parse_args(argv)


def embed(db_dir: Path, query_dir: Path):
    """(db, query) descriptors with the off-the-shelf model clustered on the db images."""
    (pair,) = embed_pairs(db_dir.parent, [(db_dir.name, query_dir.name)]).values()
    return pair


def embed_pairs(root: Path, pairs, embedders: Optional[dict] = None) -> dict:
    """{"map>revisit": (db, query) descriptors} of each (map, revisit) traversal pair under
    `root`, with the off-the-shelf model clustered on the map's images, as `vpr-ros eval` builds
    it. Each map traversal is clustered and embedded once, however many pairs share it;
    `embedders` (map name -> embedder), when given, receives the models for further embedding."""
    embedders = {} if embedders is None else embedders
    maps, out = {}, {}
    for db, query in pairs:
        if db not in maps:
            paths = list_images(root / db)
            model = build_offtheshelf_model(read_image(p) for p in paths)
            embedders[db] = load_embedder(model=model, backend="torch")
            maps[db] = embed_folder(embedders[db], paths, f"embed {db}")[0]
        queries = embed_folder(embedders[db], list_images(root / query), f"embed {query}")[0]
        out[f"{db}>{query}"] = (maps[db], queries)
    return out


def gardens_point(datasets: Path) -> Optional[Path]:
    """The Gardens Point folder under `datasets`, or None after saying where it was looked for."""
    gp = datasets / "gardens_point"
    if (gp / "night_right").is_dir():
        return gp
    print(f"Gardens Point not found in {datasets}; set --datasets or $VPR_ROS_DATASETS")
    return None


def revisit_rows(pairs, config: EngineConfig):
    """(pair, revisit, frames, R@1, R@100P, accepted, wrong) on the test places."""
    rows = []
    revisits, settings = steady_revisits() + speed_changes(), config.sequence_settings()
    for name, (db, queries) in pairs.items():
        for revisit in revisits:
            shown, evidence, reported = stream_revisit(db, queries, revisit, settings, places=TEST,
                                                       mapped=TEST, shortlist=config.top_k)
            right = np.abs(reported - shown) <= 2
            precision, recall, _ = precision_recall(evidence, right)
            accepted = evidence >= config.sequence_threshold
            rows.append((name, revisit.name, len(shown), float(right.mean()),
                         recall_at_precision(precision, recall, 1.0), int(accepted.sum()),
                         int((accepted & ~right).sum())))
    return rows


def bag_rows(root: Path, work: Path):
    """(map, accepted, frames, wrong) of `vpr-ros localize` on the night bag at the defaults."""
    from vpr_ros.cli import main as vpr_ros

    gp, model = root / "gardens_point", work / "model.pt"
    save_checkpoint(model, build_offtheshelf_model(read_image(p) for p in list_images(gp / "day_right")))
    maps = {f"day_right --rate {rate}": ([("day_right", rate)], rate) for rate in (1, 2, 4)}
    maps["day_right + day_left sessions"] = ([("day_right", 1), ("day_left", 1)], 1)
    rows = []
    for name, (sessions, rate) in maps.items():
        map_dir, events = work / name.replace(" ", "_"), work / (name.replace(" ", "_") + ".jsonl")
        for traversal, session_rate in sessions:
            if vpr_ros(["build-map", "--source", str(gp / traversal), "--rate", str(session_rate),
                        "--session", traversal, "--model", str(model), "--out", str(map_dir)]):
                raise RuntimeError(f"build-map of {traversal} failed")
        if vpr_ros(["localize", "--map", str(map_dir), "--source", str(root / BAG), "--model",
                    str(model), "--out", str(events)]):
            raise RuntimeError(f"localize against {name} failed")
        decisions = [json.loads(line) for line in events.read_text().splitlines()]
        accepted = [e for e in decisions if e["status"] == "accepted"]
        wrong = [e for e in accepted if abs(round(e["best"]["stamp"] * rate) - e["frame_index"]) > 2]
        rows.append((name, len(accepted), len(decisions), len(wrong)))
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


def time_matcher(kf_map: KeyframeMap, config: EngineConfig, rng) -> np.ndarray:
    """ms per `SequenceMatcher.update` over revisits of the route with realistic shortlists."""
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
    return np.asarray(times[config.sequence_length:])


def timing_rows(sizes, dims, config: EngineConfig, max_gb: float):
    rows = []
    rng = np.random.default_rng(0)
    for dim in dims:
        for size in sizes:
            if size * dim * 4 / 1e9 > max_gb:
                print(f"skip {size} x {dim}: a flat map needs {size * dim * 4 / 1e9:.1f} GB > --max-gb")
                continue
            kf_map = synthetic_map(size, dim, rng)
            ms = time_matcher(kf_map, config, rng)
            rows.append((dim, size, float(np.median(ms)), float(np.percentile(ms, 99))))
            del kf_map
    return rows


def plot(revisits, timings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in dict.fromkeys(r[0] for r in revisits):
        for rough, style in ((False, "-"), (True, "--")):
            rows = [r for r in revisits if r[0] == name and "->" not in r[1]
                    and ("jitter" in r[1]) == rough]
            left.plot(RATIOS, [r[4] for r in rows], marker="o", ls=style,
                      label=f"{name} → night_right{', jitter/drops/stop' if rough else ''}")
    left.axhline(0.95, color="grey", ls=":", lw=1)
    left.minorticks_off()
    left.set(xscale="log", xticks=RATIOS, xticklabels=[f"{r:g}" for r in RATIOS],
             xlabel="revisit speed / mapping speed", ylabel="sequence R@100P", ylim=(0, 1.02),
             title="Gardens Point places 100-199 (test), ±2 places")
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower left")
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
    root = gardens_point(args.datasets)
    if root is None:
        return 2
    config = EngineConfig()
    pairs = {db: embed(root / db, root / "night_right") for db in ("day_right", "day_left")}
    revisits = revisit_rows(pairs, config)
    default_dim = pairs["day_right"][0].shape[1]
    dims = [default_dim if d == "default" else int(d) for d in args.dims.split(",")]
    timings = timing_rows([int(v) for v in args.sizes.split(",")], dims, config, args.max_gb)
    with tempfile.TemporaryDirectory() as work:
        bags = bag_rows(args.datasets, Path(work)) if args.bags else []

    print(f"\nGardens Point places 100-199 (test), night_right revisits, engine defaults "
          f"(L {config.sequence_length}, threshold {config.sequence_threshold:g})")
    print(f"{'map':<11}{'revisit':<26}{'frames':>7}{'R@1':>7}{'R@100P':>8}{'accepted':>10}{'wrong':>7}")
    for name, revisit, frames, r1, r100, accepted, wrong in revisits:
        print(f"{name:<11}{revisit:<26}{frames:>7}{r1:>7.3f}{r100:>8.3f}{accepted:>10}{wrong:>7}")
    for name, accepted, frames, wrong in bags:
        print(f"bag night_right.mcap against {name}: {accepted}/{frames} accepted "
              f"({accepted / frames:.0%}), {wrong} wrong")
    print(f"\nsequence matcher, L = {config.sequence_length}, ms per frame (synthetic, shortlist "
          f"search not included)")
    print(f"{'dim':>6}{'keyframes':>11}{'p50':>8}{'p99':>8}")
    for dim, size, p50, p99 in timings:
        print(f"{dim:>6}{size:>11}{p50:>8.2f}{p99:>8.2f}")
    if len(timings) > 1:
        first = [t for t in timings if t[0] == timings[0][0]]
        print(f"ratio of p50 at the largest to the smallest map ({timings[0][0]}-D): "
              f"{first[-1][2] / first[0][2]:.2f}")

    args.out.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["kind", "map_or_dim", "revisit_or_keyframes", "frames", "R@1_or_p50_ms",
                     "R@100P_or_p99_ms", "accepted", "wrong"])
    writer.writerows(("revisit",) + row for row in revisits)
    writer.writerows(("bag", name, "night_right.mcap", frames, "", "", accepted, wrong)
                     for name, accepted, frames, wrong in bags)
    writer.writerows(("timing", dim, size, "", p50, p99, "", "") for dim, size, p50, p99 in timings)
    atomic_write_text(args.out / "sequence_matching.csv", text.getvalue())
    plot(revisits, timings, args.out / "sequence_matching.png")
    print(f"wrote {args.out / 'sequence_matching.csv'} and {args.out / 'sequence_matching.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
