"""rosbag2 recordings (.db3 or .mcap) as frames, read with the pure-Python `rosbags` library."""
import functools
import logging
from pathlib import Path
from typing import Iterator, List, Optional, Union

from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from vpr_ros.io.frames import Frame
from vpr_ros.io.messages import message_to_rgb, stamp_to_seconds

LOG = logging.getLogger(__name__)

IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
BAG_SUFFIXES = (".db3", ".mcap")


@functools.lru_cache(maxsize=1)
def message_typestore():
    """Message definitions for CDR decoding; the image, pose and TF types are the same in every ROS 2 distro."""
    return get_typestore(Stores.ROS2_HUMBLE)


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (has metadata.yaml) or a single .db3/.mcap storage file."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_SUFFIXES


def _image_connections(reader: Reader, topic: Optional[str], bag: Path) -> list:
    """Connections of the image topic to read: `topic`, or the bag's only image topic."""
    image_topics = sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_MSGTYPES})
    if topic is None:
        if not image_topics:
            all_topics = ", ".join(sorted(reader.topics)) or "none"
            raise ValueError(f"bag {bag} has no sensor_msgs/Image or CompressedImage topic "
                             f"(topics: {all_topics})")
        if len(image_topics) > 1:
            raise ValueError(f"bag {bag} has several image topics ({', '.join(image_topics)}); "
                             f"choose one with topic=")
        topic = image_topics[0]
    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        raise ValueError(f"topic '{topic}' is not in bag {bag}; image topics: "
                         f"{', '.join(image_topics) or 'none'}")
    wrong = [c.msgtype for c in connections if c.msgtype not in IMAGE_MSGTYPES]
    if wrong:
        raise ValueError(f"topic '{topic}' in bag {bag} carries {wrong[0]}, not one of "
                         f"{', '.join(IMAGE_MSGTYPES)}")
    return connections


def open_reader(path: Path) -> Reader:
    """A `rosbags` reader of the bag at `path` (use it as a context manager)."""
    if not path.exists():
        raise FileNotFoundError(f"rosbag2 not found: {path}")
    return Reader(path)


def list_image_topics(path: Union[str, Path]) -> List[str]:
    """Image topics in the bag at `path`, sorted."""
    with open_reader(Path(path)) as reader:
        return sorted({c.topic for c in reader.connections if c.msgtype in IMAGE_MSGTYPES})


def count_bag_frames(path: Union[str, Path], topic: Optional[str] = None) -> int:
    """Messages on the image topic, from the bag's index (no decoding)."""
    path = Path(path)
    with open_reader(path) as reader:
        return sum(c.msgcount for c in _image_connections(reader, topic, path))


def read_bag_frames(path: Union[str, Path], topic: Optional[str] = None) -> Iterator[Frame]:
    """Frames of one Image/CompressedImage topic, in recording order.

    The topic is checked now (clear error when missing or ambiguous). Stamps come from
    `header.stamp`, or the recording time when a driver left the header stamp at zero.
    A message that cannot be decoded is skipped with a warning and keeps its index.
    """
    path = Path(path)
    with open_reader(path) as reader:
        resolved_topic = _image_connections(reader, topic, path)[0].topic
    return _frames(path, resolved_topic)


def _frames(path: Path, topic: str) -> Iterator[Frame]:
    typestore = message_typestore()
    skipped = 0
    with open_reader(path) as reader:
        connections = _image_connections(reader, topic, path)
        for index, (connection, recorded_ns, raw) in enumerate(reader.messages(connections=connections)):
            name = f"{topic}#{index}"
            try:
                msg = typestore.deserialize_cdr(raw, connection.msgtype)
                image = message_to_rgb(msg)
            except Exception as err:  # rosbags raises assorted errors on truncated CDR
                skipped += 1
                LOG.warning("skipping %s in %s: %s", name, path, err)
                continue
            stamp = stamp_to_seconds(msg.header.stamp) or recorded_ns * 1e-9
            yield Frame(image=image, stamp=stamp, frame_id=msg.header.frame_id, index=index, name=name)
    if skipped:
        LOG.warning("%d message(s) on %s in %s could not be decoded and were skipped", skipped, topic, path)
