"""`vpr-ros extract-drive`: a recorded drive (rosbag2, video or image folder, with poses) as
training data: every N-th frame as a JPEG and a `path,x,y,traversal` CSV that `vpr-train` reads
(`kind: csv`, docs/training.md).

Positions are the pose's x, y in whatever frame the trajectory gives; drives meant to be matched
against each other must share that frame (one SLAM map, or GNSS in one UTM zone). Frames without
a pose within `--max-pose-gap` are skipped and counted. The CSV is written atomically at the end,
so an interrupted extraction never leaves a half CSV that training would read.
"""
import argparse
import csv
import io
from pathlib import Path

import cv2
from tqdm import tqdm

from vpr_ros.commands import pose_options
from vpr_ros.io.atomic import atomic_write_bytes, atomic_write_text

JPEG_QUALITY = 95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="rosbag2 directory, video file or image folder")
    parser.add_argument("--topic", help="image topic (bags with several image topics)")
    parser.add_argument("--traversal", required=True,
                        help="name of this drive, e.g. day_2026_05_01 or night_1 (CSV column and "
                             "image sub-folder)")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th frame (default 1)")
    parser.add_argument("--out", required=True, help="training data folder (created if missing)")
    pose_options.add_arguments(parser, "the position of each training image")


def run(args) -> int:
    if args.every < 1:
        raise ValueError("--every must be at least 1")
    if not (args.trajectory or args.pose_topic or args.tf_frames):
        raise ValueError("training needs where each frame was taken: give --trajectory FILE.tum, "
                         "--pose-topic TOPIC or --tf-frames PARENT CHILD")
    name = args.traversal.strip()
    if not name or any(c in name for c in "/\\,"):
        raise ValueError(f"--traversal {args.traversal!r} must be a non-empty name without "
                         f"'/', '\\' or ','")
    out = Path(args.out)
    csv_path = out / f"{name}.csv"
    if csv_path.exists():
        raise ValueError(f"{csv_path} exists; pick another --traversal or remove it first")
    images = out / "images" / name
    images.mkdir(parents=True, exist_ok=True)
    frames, counted, poses = pose_options.open_frames(args, every=args.every)
    rows = []
    for frame in tqdm(frames, total=counted.total, desc=name, unit="frame"):
        if frame.pose is None:
            continue
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"OpenCV could not JPEG-encode frame {frame.index} of {args.source}")
        relative = Path("images") / name / f"{frame.index:06d}.jpg"
        atomic_write_bytes(out / relative, jpeg.tobytes())
        rows.append((relative.as_posix(), f"{frame.pose[0]:.3f}", f"{frame.pose[1]:.3f}", name))
    if not rows:
        raise ValueError(f"no frame of {args.source} has a pose within --max-pose-gap "
                         f"{args.max_pose_gap:g} s of {poses.trajectory.source}; check that the "
                         f"poses cover the drive's time span")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "x", "y", "traversal"))
    writer.writerows(rows)
    atomic_write_text(csv_path, buffer.getvalue())
    print(f"{csv_path}: {len(rows)} images with positions; {poses.without_pose} frames "
          f"skipped without a pose, {counted.unreadable} undecodable")
    return 0
