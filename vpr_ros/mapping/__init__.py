"""Keyframe map: FAISS index of descriptors + keyframe records, saved atomically as a directory."""
from vpr_ros.mapping.errors import MapError, MapFormatError, MapMismatchError
from vpr_ros.mapping.index import INDEX_KINDS, IndexSpec, gpu_available
from vpr_ros.mapping.keyframe_map import KeyframeMap
from vpr_ros.mapping.records import Keyframe, LocalFeatures

__all__ = ["INDEX_KINDS", "IndexSpec", "Keyframe", "KeyframeMap", "LocalFeatures", "MapError",
           "MapFormatError", "MapMismatchError", "gpu_available"]
