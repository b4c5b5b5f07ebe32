"""One entry point for every frame source: image folder, video file or rosbag2, detected from the path."""
from pathlib import Path
from typing import Iterator, Optional, Union

from vpr_ros.io.folder import read_folder_frames
from vpr_ros.io.frames import Frame
from vpr_ros.io.images import list_images
from vpr_ros.io.rosbag import BAG_SUFFIXES, count_bag_frames, is_bag, read_bag_frames
from vpr_ros.io.trajectory import read_times
from vpr_ros.io.video import VIDEO_SUFFIXES, count_video_frames, read_video_frames

SUPPORTED_SOURCES = (f"an image folder, a video file ({' '.join(VIDEO_SUFFIXES)}), or a rosbag2 "
                     f"directory or storage file ({' '.join(BAG_SUFFIXES)})")


def source_kind(source: Union[str, Path]) -> str:
    """'rosbag2', 'video' or 'folder' for an existing path; errors name what is supported."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"frame source not found: {path}")
    if is_bag(path):
        return "rosbag2"
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    raise ValueError(f"cannot read frames from {path}: supported sources are {SUPPORTED_SOURCES}")


def _check_topic(kind: str, topic: Optional[str]) -> None:
    if topic is not None and kind != "rosbag2":
        raise ValueError(f"topic '{topic}' given but the source is a {kind}; topics apply to rosbag2 only")


def open_source(source: Union[str, Path], topic: Optional[str] = None, *, rate_hz: float = 1.0,
                times: Optional[Union[str, Path]] = None, frame_id: str = "camera") -> Iterator[Frame]:
    """Frames from `source`, whatever kind it is.

    `topic` picks the image topic of a bag (needed only when it has several). Folders have no
    time, so their frames are stamped from the `times` file (one stamp per line per image) or
    at `rate_hz`; `frame_id` names the camera for folders and videos (bags carry their own).
    Path, topic and times errors are raised here, not on first frame.
    """
    kind = source_kind(source)
    _check_topic(kind, topic)
    if times is not None and kind != "folder":
        raise ValueError(f"a times file was given but the source is a {kind}, which has its own "
                         f"stamps; times files apply to image folders only")
    if kind == "rosbag2":
        return read_bag_frames(source, topic)
    if kind == "video":
        return read_video_frames(source, frame_id=frame_id)
    stamps = read_times(times) if times is not None else None
    return read_folder_frames(source, rate_hz=rate_hz, frame_id=frame_id, stamps=stamps)


def count_frames(source: Union[str, Path], topic: Optional[str] = None) -> int:
    """How many frames `open_source` will offer (before skips), cheaply; for progress totals."""
    kind = source_kind(source)
    _check_topic(kind, topic)
    if kind == "rosbag2":
        return count_bag_frames(source, topic)
    if kind == "video":
        return count_video_frames(source)
    return len(list_images(source))
