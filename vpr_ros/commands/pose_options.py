"""Command-line options shared by build-map and localize: frame stamps and where poses come from."""
import argparse
from itertools import islice
from typing import Iterator, Optional, Tuple

from vpr_ros.io.frames import Frame
from vpr_ros.io.sources import open_source, source_kind
from vpr_ros.io.trajectory import PoseAttacher, Trajectory, read_tum

DEFAULT_MAX_POSE_GAP_S = 0.5


def add_arguments(parser: argparse.ArgumentParser, purpose: str) -> None:
    """--trajectory | --pose-topic | --tf-frames, --max-pose-gap, and --times | --rate for folders."""
    group = parser.add_argument_group("poses", f"where the robot was at each frame ({purpose})")
    which = group.add_mutually_exclusive_group()
    which.add_argument("--trajectory", metavar="FILE",
                       help="TUM trajectory file: 'timestamp tx ty tz qx qy qz qw' per line")
    which.add_argument("--pose-topic", metavar="TOPIC",
                       help="pose topic of the source bag (nav_msgs/Odometry, geometry_msgs/PoseStamped "
                            "or PoseWithCovarianceStamped)")
    which.add_argument("--tf-frames", nargs=2, metavar=("PARENT", "CHILD"),
                       help="pose of CHILD in PARENT from the source bag's /tf and /tf_static, "
                            "e.g. map base_link")
    group.add_argument("--max-pose-gap", type=float, default=DEFAULT_MAX_POSE_GAP_S, metavar="S",
                       help="a frame between two poses further apart than this gets no pose "
                            f"(default {DEFAULT_MAX_POSE_GAP_S} s)")
    stamps = group.add_mutually_exclusive_group()
    stamps.add_argument("--times", metavar="FILE",
                        help="image folders: stamps in seconds, one line per image in file order")
    stamps.add_argument("--rate", type=float, metavar="HZ",
                        help="image folders: file k is stamped k / HZ seconds (default 1)")


def _trajectory(args, kind: str) -> Optional[Trajectory]:
    if args.trajectory:
        return read_tum(args.trajectory)
    if not (args.pose_topic or args.tf_frames):
        return None
    if kind != "rosbag2":
        option = "--pose-topic" if args.pose_topic else "--tf-frames"
        raise ValueError(f"{option} reads poses from a rosbag2 source, but {args.source} is a {kind}; "
                         f"give a TUM file with --trajectory instead")
    from vpr_ros.io.rosbag_poses import read_pose_topic, read_tf_chain  # rosbags only when asked

    if args.pose_topic:
        return read_pose_topic(args.source, args.pose_topic)
    return read_tf_chain(args.source, *args.tf_frames, max_gap_s=args.max_pose_gap)


def open_frames(args, every: int = 1) -> Tuple[Iterator[Frame], Optional[PoseAttacher]]:
    """Every `every`-th frame of `args.source`, with poses when a pose option was given.

    Returns the frames and the PoseAttacher that counts frames with and without a pose (None
    when no pose option was given). Option and pose-source errors are raised here.
    """
    kind = source_kind(args.source)
    if args.rate is not None and kind != "folder":
        raise ValueError(f"--rate stamps image folders, but {args.source} is a {kind} with its own stamps")
    if not args.max_pose_gap > 0.0:
        raise ValueError(f"--max-pose-gap must be positive, got {args.max_pose_gap}")
    frames = islice(open_source(args.source, args.topic, rate_hz=args.rate or 1.0, times=args.times),
                    0, None, every)
    trajectory = _trajectory(args, kind)
    if trajectory is None:
        return frames, None
    attacher = PoseAttacher(trajectory, args.max_pose_gap)
    return attacher.attach(frames), attacher
