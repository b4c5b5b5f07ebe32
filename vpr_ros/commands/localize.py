"""`vpr-ros localize`: replay a folder, video or rosbag2 against a fixed map; one JSON event per frame.

When the queries come with a trajectory (TUM file, bag pose topic or TF), the accepted
relocalizations are scored against it: translation error and 2-sigma coverage of the
published covariance (`vpr_ros.evaluation.metric`), printed and written as JSON.
"""
import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vpr_ros.commands import backend_option, pose_options
from vpr_ros.evaluation.metric import AXES, UNITS, evaluate_positions
from vpr_ros.io.atomic import atomic_path, atomic_write_text
from vpr_ros.localization import EngineConfig, LocalizationEngine, replay
from vpr_ros.localization.config import DECISIONS
from vpr_ros.mapping import KeyframeMap
from vpr_ros.runtime.embedder import load_embedder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", required=True, help="map directory made by `vpr-ros build-map`")
    parser.add_argument("--source", required=True, help="image folder, video file or rosbag2 directory")
    parser.add_argument("--topic", help="image topic (bags with several image topics)")
    parser.add_argument("--model", help="model checkpoint the map was built with")
    backend_option.add_argument(parser)
    parser.add_argument("--config", help="engine YAML (EngineConfig fields, optionally under `engine:`)")
    parser.add_argument("--decision", choices=DECISIONS, help="override the config's decision mode")
    parser.add_argument("--threshold", type=float, help="override score_threshold (single, chain)")
    parser.add_argument("--sequence-length", type=int, help="override sequence_length")
    parser.add_argument("--sequence-threshold", type=float, help="override sequence_threshold")
    parser.add_argument("--batch-size", type=int, default=8, help="frames embedded together (default 8)")
    parser.add_argument("--out", required=True, help="events file (JSON lines, written atomically)")
    pose_options.add_arguments(parser, "the true poses the relocalizations are scored against")
    parser.add_argument("--metrics", help="metric report (JSON) when the queries have poses "
                                          "(default: beside --out, <name>.metric.json)")
    parser.add_argument("--pose-unit", choices=tuple(UNITS), default="m",
                        help="unit of the trajectory coordinates in the report: m, or place (an "
                             "along-track place index, e.g. the frame number)")
    parser.add_argument("--error-axes", choices=tuple(AXES), default="xyz",
                        help="position axes the error and coverage are computed on (default xyz)")


def load_config(args) -> EngineConfig:
    """The engine config for a fixed map: defaults, then the YAML, then the flags; mode localization."""
    flags = {name: value for name, value in (
        ("decision", args.decision), ("score_threshold", args.threshold),
        ("sequence_length", args.sequence_length), ("sequence_threshold", args.sequence_threshold))
        if value is not None}
    if args.config:
        return EngineConfig.from_yaml(args.config, mode="localization", **flags)
    return EngineConfig(mode="localization", **flags)


def describe(config: EngineConfig) -> str:
    """The settings that decide what is accepted, for the summary."""
    if config.decision == "sequence":
        warmup = config.sequence_settings().warmup
        return (f"decision sequence: {config.sequence_length} frames, speeds "
                f"{config.sequence_speed_min:g}-{config.sequence_speed_max:g}, margin >= "
                f"{config.sequence_threshold:g} (x sqrt({warmup}/n) for n < {warmup} frames), "
                f"top_k {config.top_k}")
    chain = f", {config.temporal_consecutive} consecutive" if config.decision == "chain" else ""
    return f"decision {config.decision}: score >= {config.score_threshold:g}{chain}, top_k {config.top_k}"


def summarize(events, unreadable: int = 0) -> str:
    """Counts of accepted/rejected frames by reason, the mean latency, and the frames skipped
    because they could not be decoded (they have no event)."""
    reasons = Counter(e["reason"] or e["status"] for e in events)
    latency = np.mean([e["latency_ms"] for e in events]) if events else 0.0
    parts = ", ".join(f"{name} {count}" for name, count in reasons.most_common())
    skipped = f" ({unreadable} undecodable frames skipped)" if unreadable else ""
    return f"{len(events)} frames: {parts}; mean {latency:.1f} ms/frame{skipped}"


def check_model(args) -> None:
    """Refuse a checkpoint that did not build the map before any backend starts: `auto` would
    otherwise export it to ONNX (or build a TensorRT engine) beside the checkpoint first.

    ONNX and engine files carry their fingerprint and are checked when the map loads.
    """
    if args.model and Path(args.model).suffix.lower() not in (".onnx", ".engine"):
        from vpr_ros.model.checkpoint import read_checkpoint   # torch only when a .pt is given

        KeyframeMap.check_model(args.map, read_checkpoint(args.model)["fingerprint"])


def run(args) -> int:
    config = load_config(args)
    backend_option.check(args)
    check_model(args)
    embedder = load_embedder(args.model, backend=args.backend)
    kf_map = KeyframeMap.load(args.map, expected_fingerprint=embedder.fingerprint)
    if config.verify and not kf_map.has_features():
        raise ValueError(f"the engine config asks for verification but map {args.map} has no local "
                         f"features; rebuild it with `vpr-ros build-map --verification orb`")
    engine = LocalizationEngine(kf_map, embedder, config)
    frames, counted, poses = pose_options.open_frames(args)
    truth = {}
    events = []
    with atomic_path(Path(args.out)) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        progress = tqdm(replay(engine, _remember_poses(frames, truth), args.batch_size),
                        total=counted.total, desc="localize", unit="frame")
        for decision in progress:
            event = decision.to_dict()
            handle.write(json.dumps(event) + "\n")
            events.append({k: event.get(k) for k in ("status", "reason", "latency_ms", "frame_index",
                                                      "pose", "covariance")})
        if not events:       # raised inside the block: no empty events file is left behind
            raise ValueError(f"no usable frames in {args.source} (none could be decoded); "
                             f"nothing to localize, {args.out} not written")
    print(describe(config))
    print(summarize(events, counted.unreadable))
    print(f"wrote {args.out}")
    if poses is not None:
        print(poses.summary())
        report = metric_report(events, truth, args.pose_unit, args.error_axes)
        print(report["summary"])
        metrics = Path(args.metrics) if args.metrics else Path(args.out).with_suffix(".metric.json")
        atomic_write_text(metrics, json.dumps(report, indent=2) + "\n")
        print(f"wrote {metrics}")
    return 0


def _remember_poses(frames, truth: dict):
    """The frames unchanged; `truth[frame.index]` keeps each one's true pose (or None)."""
    for frame in frames:
        truth[frame.index] = frame.pose
        yield frame


def metric_report(events, truth: dict, unit: str, axes: str) -> dict:
    """Translation error and 2-sigma coverage of the accepted events against the true poses."""
    accepted = [e for e in events if e["status"] == "accepted" and e["pose"] is not None]
    scored = [e for e in accepted if truth.get(e["frame_index"]) is not None]
    report = evaluate_positions([e["pose"][:3] for e in scored],
                                [truth[e["frame_index"]][:3] for e in scored],
                                [e["covariance"] for e in scored], axes=axes, unit=unit)
    counts = {"frames": len(events), "frames_with_true_pose": sum(p is not None for p in truth.values()),
              "accepted_with_pose": len(accepted), "accepted_without_true_pose": len(accepted) - len(scored)}
    summary = report.summary()
    if counts["accepted_without_true_pose"]:
        summary += f" ({counts['accepted_without_true_pose']} accepted frames have no true pose, not scored)"
    return {**counts, **report.to_dict(), "summary": summary}
