"""Command-line options shared by build-map and localize: frame stamps and where poses come from."""
import argparse
from typing import Iterable, Iterator, Optional, Tuple

from vpr_ros.io.frames import Frame
from vpr_ros.io.sources import count_frames, open_source, source_kind
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


class CountedFrames:
    """The frames of a source, passed through unchanged and counted as they go.

    `total` is how many frames the source holds at the kept indices (for progress bars);
    `exact` is False for videos, whose count is a header estimate and whose reader stops at the
    first frame it cannot decode. Once iterated, `unreadable` is how many of the `total` frames
    the reader skipped because they could not be decoded (0 when the total is an estimate).
    """

    def __init__(self, frames: Iterable[Frame], total: int, exact: bool):
        self._frames = frames
        self.total = total
        self.exact = exact
        self.read = 0

    def __iter__(self) -> Iterator[Frame]:
        for frame in self._frames:
            self.read += 1
            yield frame

    @property
    def unreadable(self) -> int:
        return self.total - self.read if self.exact else 0


def open_frames(args, every: int = 1) -> Tuple[Iterator[Frame], CountedFrames, Optional[PoseAttacher]]:
    """Every `every`-th frame of `args.source` by source index, with poses when a pose option was given.

    Returns the frames, their CountedFrames (the progress total and, after the run, how many
    frames could not be decoded) and the PoseAttacher that counts frames with and without a
    pose (None when no pose option was given). Option and pose-source errors are raised here.
    Frames are kept by index, so an undecodable file does not shift which frames are kept.
    """
    kind = source_kind(args.source)
    if args.rate is not None and kind != "folder":
        raise ValueError(f"--rate stamps image folders, but {args.source} is a {kind} with its own stamps")
    if not args.max_pose_gap > 0.0:
        raise ValueError(f"--max-pose-gap must be positive, got {args.max_pose_gap}")
    source = open_source(args.source, args.topic, rate_hz=args.rate or 1.0, times=args.times)
    counted = CountedFrames((f for f in source if f.index % every == 0),
                            total=len(range(0, count_frames(args.source, args.topic), every)),
                            exact=kind != "video")
    trajectory = _trajectory(args, kind)
    if trajectory is None:
        return iter(counted), counted, None
    attacher = PoseAttacher(trajectory, args.max_pose_gap)
    return attacher.attach(counted), counted, attacher
