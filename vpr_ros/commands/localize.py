"""`vpr-ros localize`: replay a folder, video or rosbag2 against a fixed map; one JSON event per frame."""
import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vpr_ros.io.atomic import atomic_path
from vpr_ros.io.sources import count_frames, open_source
from vpr_ros.localization import EngineConfig, LocalizationEngine, replay
from vpr_ros.mapping import KeyframeMap
from vpr_ros.runtime.embedder import load_embedder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--map", required=True, help="map directory made by `vpr-ros build-map`")
    parser.add_argument("--source", required=True, help="image folder, video file or rosbag2 directory")
    parser.add_argument("--topic", help="image topic (bags with several image topics)")
    parser.add_argument("--model", help="model checkpoint the map was built with")
    parser.add_argument("--backend", default="auto", help="embedding backend: auto, torch, onnxruntime, tensorrt")
    parser.add_argument("--config", help="engine YAML (EngineConfig fields, optionally under `engine:`)")
    parser.add_argument("--batch-size", type=int, default=8, help="frames embedded together (default 8)")
    parser.add_argument("--out", required=True, help="events file (JSON lines, written atomically)")


def load_config(path) -> EngineConfig:
    """The engine config for a fixed map: the YAML's values, with mode forced to localization."""
    if path:
        return EngineConfig.from_yaml(path, mode="localization")
    return EngineConfig(mode="localization")


def summarize(events) -> str:
    """Counts of accepted/rejected frames by reason and the mean latency."""
    reasons = Counter(e["reason"] or e["status"] for e in events)
    latency = np.mean([e["latency_ms"] for e in events]) if events else 0.0
    parts = ", ".join(f"{name} {count}" for name, count in reasons.most_common())
    return f"{len(events)} frames: {parts}; mean {latency:.1f} ms/frame"


def run(args) -> int:
    config = load_config(args.config)
    embedder = load_embedder(args.model, backend=args.backend)
    kf_map = KeyframeMap.load(args.map, expected_fingerprint=embedder.fingerprint)
    if config.verify and not any(kf.features is not None for kf in kf_map.records):
        raise ValueError(f"the engine config asks for verification but map {args.map} has no local "
                         f"features; rebuild it with `vpr-ros build-map --verification orb`")
    engine = LocalizationEngine(kf_map, embedder, config)
    frames = open_source(args.source, args.topic)
    events = []
    with atomic_path(Path(args.out)) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        progress = tqdm(replay(engine, frames, args.batch_size), total=count_frames(args.source, args.topic),
                        desc="localize", unit="frame")
        for decision in progress:
            event = decision.to_dict()
            handle.write(json.dumps(event) + "\n")
            events.append({k: event[k] for k in ("status", "reason", "latency_ms")})
    print(summarize(events))
    print(f"wrote {args.out}")
    return 0
