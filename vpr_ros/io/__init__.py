"""Frame sources: image folders, videos, rosbag2, and ROS image message conversions.

`open_source(path)` is the usual entry point; it yields `Frame`s whatever the source kind.
"""
from vpr_ros.io.frames import Frame
from vpr_ros.io.sources import count_frames, open_source, source_kind

__all__ = ["Frame", "count_frames", "open_source", "source_kind"]
