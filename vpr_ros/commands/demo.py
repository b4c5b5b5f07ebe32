"""`vpr-ros demo`: map the bundled day sample, relocalize the night sample, show how it went.

Single-frame decisions are compared with temporal consistency (several consecutive frames must
agree on a stretch of the map): the point of the temporal check is more correct loop closures
at zero wrong ones.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vpr_ros.evaluation.loop_closure import (place_from_name, recall_at_full_precision,
                                             replay_descriptors, score_decisions,
                                             sweep_thresholds)
from vpr_ros.evaluation.plots import plot_loop_closures
from vpr_ros.io.atomic import atomic_write_text
from vpr_ros.io.sources import open_source
from vpr_ros.localization import EngineConfig
from vpr_ros.mapping import KeyframeMap
from vpr_ros.mapping.builder import add_frames
from vpr_ros.runtime.embedder import load_embedder

TOLERANCE = 2            # Gardens Point frames, by the number in the file name
THRESHOLDS = np.round(np.arange(0.20, 0.80, 0.01), 2)


def default_sample() -> Path:
    """The bundled sample: in the source tree, else where setup.py installed it."""
    candidates = [Path(__file__).resolve().parents[2] / "data" / "sample",
                  Path(sys.prefix) / "share" / "vpr_ros" / "data" / "sample"]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory("vpr_ros")) / "data" / "sample")
    except (ImportError, LookupError):
        pass
    for path in candidates:
        if (path / "day_right").is_dir():
            return path
    raise FileNotFoundError("bundled sample not found (looked in " +
                            ", ".join(str(p) for p in candidates) + "); pass --sample DIR")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", type=Path, help="folder of aligned traversals, e.g. the full "
                        "Gardens Point (default: the bundled sample with day_right/, night_right/)")
    parser.add_argument("--db", default="day_right", help="map traversal folder inside the "
                        "sample (default day_right)")
    parser.add_argument("--query", default="night_right", help="query traversal folder inside "
                        "the sample (default night_right)")
    parser.add_argument("--model", help="checkpoint; default: off-the-shelf model clustered on "
                        "the map images, kept as OUT/model.pt and reused")
    parser.add_argument("--backend", default="auto", help="embedding backend (default auto)")
    parser.add_argument("--temporal", type=int, default=3,
                        help="consecutive frames that must agree (default 3)")
    parser.add_argument("--threshold", type=float, default=0.4,
                        help="score threshold of the headline table (default 0.4)")
    parser.add_argument("--out", type=Path, default=Path("vpr_demo"),
                        help="output folder (default ./vpr_demo)")


def _model_path(args, map_frames) -> str:
    if args.model:
        return args.model
    path = args.out / "model.pt"
    if not path.is_file():
        from vpr_ros.model import ModelConfig
        from vpr_ros.model.checkpoint import save_checkpoint
        from vpr_ros.model.clustering import build_offtheshelf_model

        config = ModelConfig()
        print(f"building the off-the-shelf model (ImageNet {config.backbone} "
              f"{config.backbone_kwargs} + NetVLAD clustered on the map images)")
        save_checkpoint(path, build_offtheshelf_model((f.image for f in map_frames), config),
                        extra={"built_from": "demo map images"})
    return str(path)


def _embed(embedder, frames):
    descriptors, seconds = [], 0.0
    for start in tqdm(range(0, len(frames), 8), desc="embed queries", unit="batch"):
        tic = time.perf_counter()
        descriptors.append(embedder.embed([f.image for f in frames[start:start + 8]]))
        seconds += time.perf_counter() - tic
    return np.concatenate(descriptors), 1000.0 * seconds / len(frames)


def run(args) -> int:
    sample = args.sample or default_sample()
    args.out.mkdir(parents=True, exist_ok=True)
    mapped = list(open_source(sample / args.db))
    queries = list(open_source(sample / args.query))
    embedder = load_embedder(_model_path(args, mapped), backend=args.backend)

    kf_map = KeyframeMap.create(embedder.dim, embedder.fingerprint)
    ids, _ = add_frames(kf_map, embedder, mapped, session=args.db, total=len(mapped))
    kf_map.save(args.out / "map")
    keyframe_places = {i: place_from_name(f.name) for i, f in zip(ids, mapped)}
    descriptors, ms_embed = _embed(embedder, queries)
    stamps = [f.stamp for f in queries]
    query_places = [place_from_name(f.name) for f in queries]

    rows, runs = [], {}
    for label, consecutive in (("single frame", 1), (f"temporal ({args.temporal} frames)",
                                                     args.temporal)):
        config = EngineConfig(mode="localization", temporal_consecutive=consecutive,
                              score_threshold=args.threshold)
        tic = time.perf_counter()
        decisions = replay_descriptors(kf_map, descriptors, stamps, config)
        ms_engine = 1000.0 * (time.perf_counter() - tic) / len(queries)
        outcome = score_decisions(decisions, query_places, keyframe_places, TOLERANCE)
        sweep = sweep_thresholds(kf_map, descriptors, stamps, config, THRESHOLDS, query_places,
                                 keyframe_places, TOLERANCE)
        r100, t100 = recall_at_full_precision(sweep)
        rows.append((label, outcome, ms_embed + ms_engine, r100, t100))
        matched = [keyframe_places[d.best.keyframe_id] if d.best else None for d in decisions]
        runs[label] = {"query_places": query_places, "matched_places": matched,
                       "accepted": [d.accepted for d in decisions],
                       "correct": [m is not None and abs(m - q) <= TOLERANCE
                                   for m, q in zip(matched, query_places)],
                       "sweep": sweep}

    plot_loop_closures(runs, args.out / "demo.png",
                       title=f"{args.db} map ({len(mapped)} keyframes) ← {args.query} queries, "
                             f"threshold {args.threshold}")
    summary = {label: {"frames": o.frames, "accepted": o.accepted, "correct": o.correct,
                       "wrong": o.wrong, "precision": o.precision, "recall": o.recall,
                       "ms_per_frame": ms, "recall_at_100p": r100, "threshold_at_100p": t100}
               for label, o, ms, r100, t100 in rows}
    atomic_write_text(args.out / "demo.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nmap: {len(kf_map)} {args.db} keyframes; {len(queries)} {args.query} frames relocalized "
          f"(right = within ±{TOLERANCE} frames), threshold {args.threshold}")
    print(f"{'decision':<22}{'frames':>7}{'accepted':>9}{'correct':>8}{'wrong':>6}"
          f"{'ms/frame':>9}{'R@100%P':>9}")
    for label, o, ms, r100, _ in rows:
        print(f"{label:<22}{o.frames:>7}{o.accepted:>9}{o.correct:>8}{o.wrong:>6}"
              f"{ms:>9.0f}{r100:>9.2f}")
    print(f"wrote {args.out / 'demo.png'}, {args.out / 'demo.json'}, map in {args.out / 'map'}")
    return 0
