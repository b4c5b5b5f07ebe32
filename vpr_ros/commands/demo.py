"""`vpr-ros demo`: map the bundled day sample, relocalize the night sample, show how it went.

The engine's three decision modes are compared on the same descriptors: single frame, a chain
of consecutive frames that agree on a stretch of the map, and sequence matching (the default):
what counts is how many correct loop closures each accepts at zero wrong ones.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vpr_ros.commands import backend_option
from vpr_ros.evaluation.loop_closure import (place_from_name, recall_at_full_precision,
                                             replay_descriptors, score_decisions,
                                             sweep_thresholds)
from vpr_ros.evaluation.metric import evaluate_positions
from vpr_ros.evaluation.plots import plot_along_track, plot_loop_closures
from vpr_ros.io.atomic import atomic_write_text
from vpr_ros.io.sources import open_source
from vpr_ros.localization import EngineConfig
from vpr_ros.mapping import KeyframeMap
from vpr_ros.mapping.builder import add_frames
from vpr_ros.runtime.embedder import load_embedder

TOLERANCE = 2            # Gardens Point frames, by the number in the file name
SWEEPS = {"score_threshold": np.round(np.arange(0.20, 0.80, 0.01), 2),
          "sequence_threshold": np.round(np.arange(0.0, 3.0, 0.05), 2)}


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
    backend_option.add_argument(parser)
    defaults = EngineConfig()
    parser.add_argument("--temporal", type=int, default=defaults.temporal_consecutive,
                        help=f"chain: consecutive frames that must agree "
                             f"(default {defaults.temporal_consecutive})")
    parser.add_argument("--threshold", type=float, default=defaults.score_threshold,
                        help=f"single frame and chain: score threshold "
                             f"(default {defaults.score_threshold})")
    parser.add_argument("--sequence-length", type=int, default=defaults.sequence_length,
                        help=f"sequence: frames per sequence (default {defaults.sequence_length})")
    parser.add_argument("--sequence-threshold", type=float, default=defaults.sequence_threshold,
                        help=f"sequence: margin threshold (default {defaults.sequence_threshold})")
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


def _relocalized(decisions, query_places):
    """(decision, true place) of the accepted frames that carry a pose."""
    return [(d, q) for d, q in zip(decisions, query_places) if d.accepted and d.pose is not None]


def along_track_report(decisions, query_places):
    """Error and 2-sigma coverage of the accepted relocalizations along the route (place index)."""
    accepted = _relocalized(decisions, query_places)
    return evaluate_positions([d.pose for d, _ in accepted], [(q, 0.0, 0.0) for _, q in accepted],
                              [d.covariance for d, _ in accepted], axes="x", unit="place")


def _along_track(decisions, query_places):
    """(true place, estimated place, sigma) arrays of the relocalizations, for the plot."""
    accepted = _relocalized(decisions, query_places)
    return (np.array([q for _, q in accepted], float), np.array([d.pose[0] for d, _ in accepted]),
            np.array([np.sqrt(d.covariance[0][0]) for d, _ in accepted]))


def _decision_modes(args):
    """(label, engine config, threshold swept for R@100%P) of each decision mode compared."""
    base = dict(mode="localization", score_threshold=args.threshold,
                temporal_consecutive=args.temporal, sequence_length=args.sequence_length,
                sequence_threshold=args.sequence_threshold)
    return [("single frame", EngineConfig(decision="single", **base), "score_threshold"),
            (f"chain ({args.temporal} frames)", EngineConfig(decision="chain", **base),
             "score_threshold"),
            (f"sequence ({args.sequence_length} frames)", EngineConfig(decision="sequence", **base),
             "sequence_threshold")]


def run(args) -> int:
    modes = _decision_modes(args)
    backend_option.check(args)
    sample = args.sample or default_sample()
    args.out.mkdir(parents=True, exist_ok=True)
    mapped = list(open_source(sample / args.db))
    for frame in mapped:        # Gardens Point has no metric truth: the place index is along-track
        frame.pose = (float(place_from_name(frame.name)), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    queries = list(open_source(sample / args.query))
    embedder = load_embedder(_model_path(args, mapped), backend=args.backend)

    kf_map = KeyframeMap.create(embedder.dim, embedder.fingerprint)
    ids, _ = add_frames(kf_map, embedder, mapped, session=args.db, total=len(mapped))
    kf_map.save(args.out / "map")
    keyframe_places = {i: place_from_name(f.name) for i, f in zip(ids, mapped)}
    descriptors, ms_embed = _embed(embedder, queries)
    stamps = [f.stamp for f in queries]
    query_places = [place_from_name(f.name) for f in queries]

    rows, runs, runs_decisions = [], {}, {}
    for label, config, swept in modes:
        tic = time.perf_counter()
        decisions = replay_descriptors(kf_map, descriptors, stamps, config)
        ms_engine = 1000.0 * (time.perf_counter() - tic) / len(queries)
        outcome = score_decisions(decisions, query_places, keyframe_places, TOLERANCE)
        sweep = sweep_thresholds(kf_map, descriptors, stamps, config, swept, SWEEPS[swept],
                                 query_places, keyframe_places, TOLERANCE)
        r100, t100 = recall_at_full_precision(sweep)
        rows.append((label, outcome, ms_embed + ms_engine, r100, t100,
                     along_track_report(decisions, query_places)))
        runs_decisions[label] = decisions
        matched = [keyframe_places[d.best.keyframe_id] if d.best else None for d in decisions]
        runs[label] = {"query_places": query_places, "matched_places": matched,
                       "accepted": [d.accepted for d in decisions],
                       "correct": [m is not None and abs(m - q) <= TOLERANCE
                                   for m, q in zip(matched, query_places)],
                       "sweep": sweep}

    plot_loop_closures(runs, args.out / "demo.png",
                       title=f"{args.db} map ({len(mapped)} keyframes) ← {args.query} queries, "
                             f"score threshold {args.threshold}, sequence threshold "
                             f"{args.sequence_threshold}")
    plot_along_track({label: _along_track(runs_decisions[label], query_places) for label, *_ in rows},
                     args.out / "demo_poses.png",
                     title="relocalizations along the route (place index, not metres)")
    summary = {label: {"frames": o.frames, "accepted": o.accepted, "correct": o.correct,
                       "wrong": o.wrong, "precision": o.precision, "recall": o.recall,
                       "ms_per_frame": ms, "recall_at_100p": r100, "threshold_at_100p": t100,
                       "along_track": report.to_dict()}
               for label, o, ms, r100, t100, report in rows}
    atomic_write_text(args.out / "demo.json", json.dumps(summary, indent=2) + "\n")
    print(f"\nmap: {len(kf_map)} {args.db} keyframes; {len(queries)} {args.query} frames relocalized "
          f"(right = within ±{TOLERANCE} frames); score threshold {args.threshold}, chain of "
          f"{args.temporal}, sequence of {args.sequence_length} at margin {args.sequence_threshold}")
    print(f"{'decision':<24}{'frames':>7}{'accepted':>9}{'correct':>8}{'wrong':>6}"
          f"{'ms/frame':>9}{'R@100%P':>9}{'median err':>11}{'2σ cover':>9}")
    for label, o, ms, r100, _, report in rows:
        err = "-" if report.median_error is None else f"{report.median_error:.2f}"
        cover = "-" if report.coverage_2sigma is None else f"{report.coverage_2sigma:.2f}"
        print(f"{label:<24}{o.frames:>7}{o.accepted:>9}{o.correct:>8}{o.wrong:>6}"
              f"{ms:>9.0f}{r100:>9.2f}{err:>11}{cover:>9}")
    print("median err, 2σ cover: relocalization error of the accepted frames in places (the frame "
          "index as an along-track place index, not metres) and the share inside 2 sigma")
    print(f"wrote {args.out / 'demo.png'}, {args.out / 'demo_poses.png'}, {args.out / 'demo.json'}, "
          f"map in {args.out / 'map'}")
    return 0
