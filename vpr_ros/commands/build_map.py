"""`vpr-ros build-map`: embed every N-th frame of a folder, video or rosbag2 into a keyframe map.

An existing map directory is extended with a new session (a night drive added to a day map),
whose keyframes are then linked to the places the map already held where their sequences match
(so sequence matching counts both sessions of a place as one place); the map is saved
atomically once all frames are in. With a trajectory (TUM file, bag pose
topic or TF) each keyframe stores its pose, so the map can relocalize.
"""
import argparse
from pathlib import Path

from vpr_ros.commands import backend_option, pose_options
from vpr_ros.localization.session_links import link_session
from vpr_ros.localization.verification import FEATURE_TYPES, GeometricVerifier
from vpr_ros.mapping import INDEX_KINDS, KeyframeMap
from vpr_ros.mapping.builder import add_frames
from vpr_ros.mapping.storage import resolve_map_dir
from vpr_ros.runtime.embedder import load_embedder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="image folder, video file or rosbag2 directory")
    parser.add_argument("--topic", help="image topic (bags with several image topics)")
    parser.add_argument("--model", help="model checkpoint (.pt), or .onnx/.engine for those backends")
    backend_option.add_argument(parser)
    parser.add_argument("--session", help="session name stored with each keyframe (default: source name)")
    parser.add_argument("--condition", default="", help="condition tag, e.g. day, night, rain")
    parser.add_argument("--index", choices=INDEX_KINDS,
                        help="index of a new map (default auto: exact sq8, IVF-PQ codes of 1024 "
                             "lists from 50,000 keyframes on; ivfpq: 2048 lists from 79,872 on, "
                             "better recall for maps that pass 1e5); an extended map keeps its own")
    parser.add_argument("--every", type=int, default=1, help="use every N-th frame (default 1)")
    parser.add_argument("--verification", choices=("none",) + FEATURE_TYPES, default="none",
                        help="store local features for geometric verification at localization")
    parser.add_argument("--no-thumbnails", action="store_true", help="do not store keyframe thumbnails")
    parser.add_argument("--batch-size", type=int, default=8, help="frames embedded together (default 8)")
    parser.add_argument("--out", required=True, help="map directory (created, or extended when it exists)")
    pose_options.add_arguments(parser, "stored with each keyframe")


def open_or_create_map(out: Path, embedder, index_kind) -> KeyframeMap:
    """The map in `out` (must come from the same model), or a new one.

    The storage layer decides what is on disk, so a map left aside by a save that crashed
    between its two renames is extended, never replaced; an existing folder that is not a map
    (and not empty) is refused rather than overwritten.
    """
    try:
        root = resolve_map_dir(out)
    except FileNotFoundError:
        root = None
    if root is None or (root == out and out.is_dir() and not any(out.iterdir())):
        return KeyframeMap.create(embedder.dim, embedder.fingerprint, index=index_kind or "auto")
    kf_map = KeyframeMap.load(out, expected_fingerprint=embedder.fingerprint)
    if index_kind and index_kind != kf_map.index_spec.kind:
        raise ValueError(f"map {out} uses a {kf_map.index_spec.kind} index; extending it with "
                         f"--index {index_kind} is not possible (omit --index, or build a new map)")
    return kf_map


def run(args) -> int:
    if args.every < 1 or args.batch_size < 1:
        raise ValueError("--every and --batch-size must be at least 1")
    backend_option.check(args)
    out = Path(args.out)
    session = args.session or Path(args.source).name
    embedder = load_embedder(args.model, backend=args.backend)
    kf_map = open_or_create_map(out, embedder, args.index)
    if session in kf_map.sessions:
        raise ValueError(f"map {out} already has a session {session!r}; pick another --session")
    verifier = GeometricVerifier(args.verification) if args.verification != "none" else None
    frames, counted, poses = pose_options.open_frames(args, every=args.every)
    ids, unusable = add_frames(kf_map, embedder, frames, session, args.condition,
                               thumbnails=not args.no_thumbnails, verifier=verifier,
                               batch_size=args.batch_size, total=counted.total)
    skipped = unusable + counted.unreadable
    added = len(ids)
    if not added:
        raise ValueError(f"no usable frames in {args.source}; nothing was added to the map")
    linked = link_session(kf_map, ids)
    kf_map.save(out)
    print(f"map {out}: added {added} keyframes as session {session!r} ({skipped} frames skipped); "
          f"{len(kf_map)} keyframes in {len(kf_map.sessions)} sessions, index "
          f"{kf_map.index_summary()}")
    if min(ids) > 0:
        print(f"{linked} of {added} keyframes linked to places the map already held (sequence "
              f"decisions at the engine defaults)")
    if poses is not None:
        print(poses.summary())
    return 0
