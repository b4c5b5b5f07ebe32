"""Frame sources: image folders, videos, rosbag2, and ROS image message conversions.

`open_source(path)` is the usual entry point; it yields `Frame`s whatever the source kind.
Names are resolved on first use, so `import vpr_ros.io.atomic` (or the ROS node importing
`vpr_ros.io.messages`) does not pull in OpenCV video or the `rosbags` reader.
"""
import importlib

_EXPORTS = {
    "Frame": "vpr_ros.io.frames",
    "count_frames": "vpr_ros.io.sources",
    "open_source": "vpr_ros.io.sources",
    "source_kind": "vpr_ros.io.sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'vpr_ros.io' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
