"""Keyframe records and their columnar, pickle-free on-disk form (one `.npz` of plain arrays)."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vpr_ros.mapping.errors import MapFormatError

Pose = Tuple[float, float, float, float, float, float, float]
"""Pose in the map frame: x, y, z (metres), qx, qy, qz, qw (unit quaternion)."""


@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """Local features of a keyframe for geometric verification (OpenCV keypoints + descriptors).

    `keypoints` is (n, 2) float32 pixel coordinates; `descriptors` is (n, d): uint8 for binary
    features (ORB) or float32 for SIFT. `image_size` is (width, height) of the image they came from.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    image_size: Tuple[int, int]

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    def __eq__(self, other) -> bool:
        return (isinstance(other, LocalFeatures) and tuple(self.image_size) == tuple(other.image_size)
                and np.array_equal(self.keypoints, other.keypoints)
                and self.descriptors.dtype == other.descriptors.dtype
                and np.array_equal(self.descriptors, other.descriptors))


@dataclass(frozen=True, slots=True)
class Keyframe:
    """One keyframe of the map. `id` is assigned by the map when the keyframe is added.

    Slotted: a map holds one per keyframe, and without a `__dict__` each costs roughly 30 %
    less memory (`python bench/map_scaling.py` prints the RSS of a loaded map)."""

    session: str
    stamp: float
    frame_id: str = ""
    pose: Optional[Pose] = None
    condition: str = ""
    thumbnail: Optional[bytes] = None
    features: Optional[LocalFeatures] = None
    id: int = -1


def check_pose(pose) -> Optional[Pose]:
    """A pose as a 7-tuple of finite floats, or None; raises ValueError naming the problem."""
    if pose is None:
        return None
    values = np.asarray(pose, dtype=np.float64).reshape(-1)
    if values.shape != (7,) or not np.all(np.isfinite(values)):
        raise ValueError(f"pose must be 7 finite numbers (x, y, z, qx, qy, qz, qw), got {pose!r}")
    norm = float(np.linalg.norm(values[3:]))
    if abs(norm - 1.0) > 1e-3:
        raise ValueError(f"pose quaternion must have unit norm, got norm {norm:.4f}")
    return tuple(float(v) for v in values)


def _ragged(chunks: Sequence[np.ndarray], width: int, dtype) -> Tuple[np.ndarray, np.ndarray]:
    """Concatenate variable-length row blocks; return (offsets (N+1,), rows (total, width))."""
    lengths = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    blocks = [np.asarray(c, dtype=dtype).reshape(-1, width) for c in chunks if len(c)]
    rows = np.concatenate(blocks) if blocks else np.zeros((0, width), dtype=dtype)
    return offsets, rows


def _feature_layout(keyframes: Sequence[Keyframe]) -> Tuple[int, np.dtype]:
    """Descriptor width and dtype shared by every keyframe with features (0, uint8 when none)."""
    layouts = {(f.descriptors.shape[1], f.descriptors.dtype.str)
               for f in (k.features for k in keyframes) if f is not None and len(f)}
    if len(layouts) > 1:
        raise ValueError(f"keyframes mix local feature types {sorted(layouts)}; use one detector per map")
    if not layouts:
        return 0, np.dtype(np.uint8)
    width, dtype = layouts.pop()
    return width, np.dtype(dtype)


def records_to_arrays(keyframes: Sequence[Keyframe], sessions: Sequence[str]) -> Dict[str, np.ndarray]:
    """Columns of plain arrays (no Python objects) describing `keyframes`, for `np.savez`."""
    session_code = {name: i for i, name in enumerate(sessions)}
    poses = np.full((len(keyframes), 7), np.nan, dtype=np.float64)
    for row, kf in enumerate(keyframes):
        if kf.pose is not None:
            poses[row] = kf.pose
    thumbs = [np.frombuffer(k.thumbnail or b"", dtype=np.uint8) for k in keyframes]
    thumb_offsets, thumb_bytes = _ragged(thumbs, 1, np.uint8)
    width, dtype = _feature_layout(keyframes)
    feats = [k.features for k in keyframes]
    empty = np.zeros((0, 2), np.float32)
    kp_offsets, keypoints = _ragged([f.keypoints if f else empty for f in feats], 2, np.float32)
    _, descriptors = _ragged(
        [f.descriptors if f is not None and len(f) else np.zeros((0, width), dtype) for f in feats],
        width, dtype)
    return {
        "id": np.array([k.id for k in keyframes], dtype=np.int64),
        "session": np.array([session_code[k.session] for k in keyframes], dtype=np.int32),
        "stamp": np.array([k.stamp for k in keyframes], dtype=np.float64),
        "frame_id": np.array([k.frame_id for k in keyframes], dtype=np.str_),
        "condition": np.array([k.condition for k in keyframes], dtype=np.str_),
        "pose": poses,
        "thumbnail_offsets": thumb_offsets,
        "thumbnail_bytes": thumb_bytes.reshape(-1),
        "has_features": np.array([f is not None for f in feats], dtype=bool),
        "feature_image_size": np.array([f.image_size if f else (0, 0) for f in feats],
                                       dtype=np.int32).reshape(-1, 2),
        "feature_offsets": kp_offsets,
        "feature_keypoints": keypoints,
        "feature_descriptors": descriptors,
    }


REQUIRED_COLUMNS = (
    "id", "session", "stamp", "frame_id", "condition", "pose", "thumbnail_offsets",
    "thumbnail_bytes", "has_features", "feature_image_size", "feature_offsets",
    "feature_keypoints", "feature_descriptors",
)


def _check_offsets(name: str, offsets: np.ndarray, count: int, total: int) -> None:
    if offsets.shape != (count + 1,) or offsets[0] != 0 or offsets[-1] != total \
            or np.any(np.diff(offsets) < 0):
        raise MapFormatError(f"keyframe records are corrupt: column {name!r} does not index its data")


def records_from_arrays(columns: Dict[str, np.ndarray], sessions: Sequence[str]) -> List[Keyframe]:
    """Inverse of `records_to_arrays`; raises MapFormatError when columns are missing or disagree."""
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise MapFormatError(f"keyframe records are missing columns {missing}")
    count = len(columns["id"])
    for name in ("session", "stamp", "frame_id", "condition", "pose", "has_features",
                 "feature_image_size"):
        if len(columns[name]) != count:
            raise MapFormatError(f"keyframe records are corrupt: column {name!r} has "
                                 f"{len(columns[name])} rows, expected {count}")
    if not np.array_equal(columns["id"], np.arange(count)):
        raise MapFormatError("keyframe records are corrupt: ids are not 0..N-1 in order")
    codes = columns["session"]
    if count and (codes.min() < 0 or codes.max() >= len(sessions)):
        raise MapFormatError("keyframe records name a session that the manifest does not list")
    _check_offsets("thumbnail_offsets", columns["thumbnail_offsets"], count,
                   len(columns["thumbnail_bytes"]))
    _check_offsets("feature_offsets", columns["feature_offsets"], count,
                   len(columns["feature_keypoints"]))
    if len(columns["feature_descriptors"]) != len(columns["feature_keypoints"]):
        raise MapFormatError("keyframe records are corrupt: feature keypoints and descriptors differ in count")
    thumbs, feat_offsets = columns["thumbnail_offsets"], columns["feature_offsets"]
    keyframes = []
    for row in range(count):
        pose = columns["pose"][row]
        thumbnail = columns["thumbnail_bytes"][thumbs[row]:thumbs[row + 1]].tobytes()
        features = None
        if columns["has_features"][row]:
            lo, hi = feat_offsets[row], feat_offsets[row + 1]
            width, height = (int(v) for v in columns["feature_image_size"][row])
            features = LocalFeatures(columns["feature_keypoints"][lo:hi],
                                     columns["feature_descriptors"][lo:hi], (width, height))
        keyframes.append(Keyframe(
            session=sessions[int(codes[row])], stamp=float(columns["stamp"][row]),
            frame_id=str(columns["frame_id"][row]),
            pose=None if np.isnan(pose).any() else tuple(float(v) for v in pose),
            condition=str(columns["condition"][row]), thumbnail=thumbnail or None,
            features=features, id=row))
    return keyframes
