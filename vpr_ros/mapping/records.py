"""Keyframe records: the `Keyframe` users build and read, and the `KeyframeTable` a map keeps them in.

A map holds its records as numpy columns and builds a `Keyframe` only when one is asked for:
at 1e6 keyframes the columns hold about 102 bytes per keyframe resident, `Keyframe` objects
171 (492 with poses). The columns are the on-disk form too: one pickle-free `.npz` of plain arrays.
"""
import math
import operator
from collections import OrderedDict
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

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

    `link` is the id of an older keyframe that shows the same place (an accepted loop closure, or
    the alignment of a session with the map), -1 when none is known: sequence matching counts
    linked keyframes of other sessions, or of an earlier pass, as one place, not as rivals.

    A map does not keep these: it holds columns (`KeyframeTable`) and builds one per `record(id)`."""

    session: str
    stamp: float
    frame_id: str = ""
    pose: Optional[Pose] = None
    condition: str = ""
    thumbnail: Optional[bytes] = None
    features: Optional[LocalFeatures] = None
    link: int = -1
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


class _Rows:
    """A numpy array grown at the end with spare capacity (doubled when full), so appending one
    row at a time is amortized O(1); the spare rows are never written, so they are not resident."""

    __slots__ = ("data", "size")

    def __init__(self, data: np.ndarray):
        self.data = data
        self.size = len(data)

    @property
    def rows(self) -> np.ndarray:
        return self.data[:self.size]

    def extend(self, rows: np.ndarray) -> None:
        end = self.size + len(rows)
        if end > len(self.data):
            grown = np.empty((max(end, 2 * len(self.data), 16),) + self.data.shape[1:], self.data.dtype)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        self.data[self.size:end] = rows
        self.size = end


class _Strings:
    """The distinct strings of a column, each with its code (position in `values`)."""

    def __init__(self, values: Iterable[str] = ()):
        self.values: List[str] = [str(v) for v in values]
        self._codes = {value: code for code, value in enumerate(self.values)}

    def keep_used(self, codes: np.ndarray) -> None:
        """Forget the strings after the highest of `codes` (codes are given in order of first use)."""
        used = int(codes.max()) + 1 if len(codes) else 0
        for value in self.values[used:]:
            del self._codes[value]
        del self.values[used:]

    def code(self, value: str) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self.values)
            self.values.append(value)
        return code


REQUIRED_COLUMNS = (
    "id", "session", "stamp", "frame_id", "condition", "pose", "thumbnail_offsets",
    "thumbnail_bytes", "has_features", "feature_image_size", "feature_offsets",
    "feature_keypoints", "feature_descriptors",
)


def _corrupt(problem: str) -> MapFormatError:
    return MapFormatError(f"keyframe records are corrupt: {problem}")


def _check_offsets(name: str, offsets: np.ndarray, count: int, total: int) -> None:
    if offsets.shape != (count + 1,) or offsets[0] != 0 or offsets[-1] != total \
            or np.any(np.diff(offsets) < 0):
        raise _corrupt(f"column {name!r} does not index its data")


class KeyframeTable(SequenceABC):
    """The keyframe records of a map as numpy columns; `table[i]` builds the `Keyframe` with id i.

    Session, frame_id and condition are codes into small tables of distinct strings, a missing
    pose is a row of NaN, thumbnails and local features are ragged (offsets into one array of
    rows). `extend` appends in amortized O(1) per keyframe. `columns()` / `from_columns` are the
    on-disk form, where session codes index the map's session list (`session_names`, in order of
    first appearance).
    """

    def __init__(self) -> None:
        self._sessions = _Strings()
        self._frame_ids, self._conditions = _Strings(), _Strings()
        self._session = _Rows(np.zeros(0, np.int32))
        self._stamp = _Rows(np.zeros(0, np.float64))
        self._pose = _Rows(np.zeros((0, 7), np.float64))
        self._frame_id = _Rows(np.zeros(0, np.int32))
        self._condition = _Rows(np.zeros(0, np.int32))
        self._thumbnail_offsets = _Rows(np.zeros(1, np.int64))
        self._thumbnail_bytes = _Rows(np.zeros(0, np.uint8))
        self._has_features = _Rows(np.zeros(0, bool))
        self._image_size = _Rows(np.zeros((0, 2), np.int32))
        self._feature_offsets = _Rows(np.zeros(1, np.int64))
        self._keypoints = _Rows(np.zeros((0, 2), np.float32))
        self._descriptors = _Rows(np.zeros((0, 0), np.uint8))   # width and dtype set by the first features
        self._link = _Rows(np.zeros(0, np.int64))
        self._prev_similarity = _Rows(np.zeros(0, np.float16))
        self.links_revision = 0
        """Counts `set_links` calls, so readers of `links` know when to look again."""

    def __len__(self) -> int:
        return self._stamp.size

    def __getitem__(self, key):
        if isinstance(key, slice):
            return tuple(self[row] for row in range(*key.indices(len(self))))
        row = operator.index(key)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(f"keyframe id {key} is not in 0..{len(self) - 1}")
        pose = self._pose.data[row].tolist()
        lo, hi = self._thumbnail_offsets.data[row:row + 2]
        features = None
        if self._has_features.data[row]:
            start, stop = self._feature_offsets.data[row:row + 2]
            width, height = self._image_size.data[row].tolist()
            features = LocalFeatures(self._keypoints.data[start:stop], self._descriptors.data[start:stop],
                                     (width, height))
        return Keyframe(
            session=self._sessions.values[self._session.data[row]],
            stamp=float(self._stamp.data[row]),
            frame_id=self._frame_ids.values[self._frame_id.data[row]],
            pose=None if any(map(math.isnan, pose)) else tuple(pose),
            condition=self._conditions.values[self._condition.data[row]],
            thumbnail=self._thumbnail_bytes.data[lo:hi].tobytes() or None,
            features=features, link=int(self._link.data[row]), id=row)

    def __eq__(self, other) -> bool:
        if not isinstance(other, SequenceABC):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None

    def __repr__(self) -> str:
        return f"KeyframeTable({len(self)} keyframes, {len(self._sessions.values)} sessions)"

    @property
    def session_names(self) -> List[str]:
        """Session names in order of first appearance; `session_codes` index this list."""
        return list(self._sessions.values)

    @property
    def session_codes(self) -> np.ndarray:
        """(N,) int32 session of each keyframe, as a position in `session_names`."""
        return _read_only(self._session.rows)

    @property
    def stamps(self) -> np.ndarray:
        """(N,) float64 stamps (s)."""
        return _read_only(self._stamp.rows)

    @property
    def poses(self) -> np.ndarray:
        """(N, 7) float64 poses, NaN rows where a keyframe has none."""
        return _read_only(self._pose.rows)

    @property
    def prev_similarities(self) -> np.ndarray:
        """(N,) float16 cosine of each keyframe with the keyframe added before it in its session
        (NaN for a session's first, and in maps saved before it was kept): about 1 where the
        robot stood still while mapping."""
        return _read_only(self._prev_similarity.rows)

    @property
    def links(self) -> np.ndarray:
        """(N,) int64 id of an older keyframe showing the same place, -1 where none is known."""
        return _read_only(self._link.rows)

    def set_links(self, ids: np.ndarray, targets: np.ndarray) -> None:
        """Link keyframes `ids` to the older keyframes `targets` (-1: unlink); ValueError when a
        target is not older than its keyframe, so links never form a cycle."""
        ids, targets = np.asarray(ids, np.int64).reshape(-1), np.asarray(targets, np.int64).reshape(-1)
        if ids.shape != targets.shape:
            raise ValueError(f"got {len(ids)} keyframe ids but {len(targets)} link targets")
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"keyframe ids must be in 0..{len(self) - 1}")
        if _bad_links(targets, ids):
            raise ValueError("a keyframe can only be linked to an older keyframe (a smaller id) or -1")
        self._link.data[ids] = targets
        self.links_revision += 1

    def has_features(self) -> bool:
        """Whether any keyframe has local features (for geometric verification)."""
        return bool(self._has_features.rows.any())

    def sessions(self) -> Dict[str, dict]:
        """Per session, in order of first appearance: keyframe count and condition tags."""
        names, codes = self._sessions.values, self._session.rows
        counts = np.bincount(codes, minlength=len(names))
        summary: Dict[str, dict] = OrderedDict(
            (name, {"keyframes": int(count), "conditions": []}) for name, count in zip(names, counts))
        kinds = max(len(self._conditions.values), 1)
        pairs, first = np.unique(codes.astype(np.int64) * kinds + self._condition.rows, return_index=True)
        for pair in pairs[np.argsort(first)].tolist():
            session, condition = divmod(pair, kinds)
            summary[names[session]]["conditions"].append(self._conditions.values[condition])
        return summary

    def extend(self, keyframes: Sequence[Keyframe],
               prev_similarities: Optional[Sequence[float]] = None) -> None:
        """Append keyframes as ids len(self), len(self) + 1, ...; all are checked before any is
        added (session name, finite stamp, `check_pose`, one local feature type per map).
        `prev_similarities`: see the property (NaN when not given)."""
        checked = [_checked(kf) for kf in keyframes]
        similarity = np.full(len(checked), np.nan, np.float16) if prev_similarities is None else \
            np.asarray(prev_similarities, np.float16).reshape(-1)
        if similarity.shape != (len(checked),):
            raise ValueError(f"got {len(checked)} keyframes but {similarity.size} previous similarities")
        features = [kf.features for kf in checked]
        filled = [f for f in features if f is not None and len(f)]
        layouts = {(f.descriptors.shape[1], f.descriptors.dtype.str) for f in filled}
        if self._descriptors.size:
            layouts.add((self._descriptors.data.shape[1], self._descriptors.data.dtype.str))
        if len(layouts) > 1:
            raise ValueError(f"keyframes mix local feature types {sorted(layouts)}; use one detector per map")
        if filled and not self._descriptors.size:
            self._descriptors = _Rows(np.zeros((0,) + filled[0].descriptors.shape[1:],
                                               filled[0].descriptors.dtype))
        links = _checked_links(checked, len(self))
        self._session.extend(np.array([self._sessions.code(kf.session) for kf in checked], np.int32))
        self._stamp.extend(np.array([kf.stamp for kf in checked], np.float64))
        self._frame_id.extend(np.array([self._frame_ids.code(kf.frame_id) for kf in checked], np.int32))
        self._pose.extend(np.array([kf.pose or NO_POSE for kf in checked], np.float64).reshape(-1, 7))
        self._condition.extend(np.array([self._conditions.code(kf.condition) for kf in checked], np.int32))
        _extend_ragged(self._thumbnail_offsets, self._thumbnail_bytes,
                       [np.frombuffer(kf.thumbnail or b"", np.uint8) for kf in checked])
        self._link.extend(links)
        self._prev_similarity.extend(similarity)
        self._has_features.extend(np.array([f is not None for f in features], bool))
        self._image_size.extend(np.array([f.image_size if f is not None else (0, 0) for f in features],
                                         np.int32).reshape(-1, 2))
        _extend_ragged(self._feature_offsets, self._keypoints,
                       [f.keypoints if f is not None else NO_KEYPOINTS for f in features])
        if filled:
            self._descriptors.extend(np.concatenate([f.descriptors for f in filled]))

    def truncate(self, count: int) -> None:
        """Keep the first `count` keyframes (undoes an `extend` whose descriptors the index refused)."""
        for column in (self._session, self._stamp, self._pose, self._frame_id, self._condition,
                       self._has_features, self._image_size, self._link, self._prev_similarity):
            column.size = count
        for strings, codes in ((self._sessions, self._session), (self._frame_ids, self._frame_id),
                               (self._conditions, self._condition)):
            strings.keep_used(codes.rows)
        for offsets, rows in ((self._thumbnail_offsets, self._thumbnail_bytes),
                              (self._feature_offsets, self._keypoints)):
            offsets.size = count + 1
            rows.size = int(offsets.data[count])
        self._descriptors.size = self._keypoints.size

    def columns(self) -> Dict[str, np.ndarray]:
        """The records as plain arrays (no Python objects), the columns of `keyframes.npz`."""
        return {
            "id": np.arange(len(self), dtype=np.int64),
            "session": self._session.rows,
            "stamp": self._stamp.rows,
            "frame_id": np.array(self._frame_ids.values, dtype=np.str_)[self._frame_id.rows],
            "condition": np.array(self._conditions.values, dtype=np.str_)[self._condition.rows],
            "pose": self._pose.rows,
            "thumbnail_offsets": self._thumbnail_offsets.rows,
            "thumbnail_bytes": self._thumbnail_bytes.rows,
            "has_features": self._has_features.rows,
            "feature_image_size": self._image_size.rows,
            "feature_offsets": self._feature_offsets.rows,
            "feature_keypoints": self._keypoints.rows,
            "feature_descriptors": self._descriptors.rows,
            "link": self._link.rows,
            "prev_similarity": self._prev_similarity.rows,
        }

    @classmethod
    def from_columns(cls, columns: Dict[str, np.ndarray], sessions: Sequence[str]) -> "KeyframeTable":
        """Inverse of `columns()` (session codes index `sessions`); raises MapFormatError when
        columns are missing or disagree. Maps saved before links and previous similarities were
        kept load unlinked, with NaN similarities."""
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise MapFormatError(f"keyframe records are missing columns {missing}")
        count = len(columns["id"])
        shapes = {"session": (count,), "stamp": (count,), "frame_id": (count,), "condition": (count,),
                  "pose": (count, 7), "has_features": (count,), "feature_image_size": (count, 2)}
        for name, shape in shapes.items():
            if columns[name].shape != shape:
                raise _corrupt(f"column {name!r} has shape {columns[name].shape}, expected {shape}")
        if not np.array_equal(columns["id"], np.arange(count)):
            raise _corrupt("ids are not 0..N-1 in order")
        links = columns.get("link", np.full(count, -1, np.int64))
        if links.shape != (count,) or _bad_links(links, np.arange(count)):
            raise _corrupt("column 'link' must hold, per keyframe, an older keyframe id or -1")
        similarity = columns.get("prev_similarity", np.full(count, np.nan, np.float16))
        if similarity.shape != (count,):
            raise _corrupt(f"column 'prev_similarity' has shape {similarity.shape}, expected {(count,)}")
        codes = columns["session"]
        if count and (codes.min() < 0 or codes.max() >= len(sessions)):
            raise MapFormatError("keyframe records name a session that the manifest does not list")
        _check_offsets("thumbnail_offsets", columns["thumbnail_offsets"], count,
                       len(columns["thumbnail_bytes"]))
        _check_offsets("feature_offsets", columns["feature_offsets"], count,
                       len(columns["feature_keypoints"]))
        if len(columns["feature_descriptors"]) != len(columns["feature_keypoints"]):
            raise _corrupt("feature keypoints and descriptors differ in count")
        table = cls()
        table._sessions = _Strings(sessions)
        table._frame_ids, table._frame_id = _coded(columns["frame_id"])
        table._conditions, table._condition = _coded(columns["condition"])
        table._session = _Rows(codes.astype(np.int32, copy=False))
        table._stamp = _Rows(columns["stamp"].astype(np.float64, copy=False))
        table._pose = _Rows(columns["pose"].astype(np.float64, copy=False))
        table._thumbnail_offsets = _Rows(columns["thumbnail_offsets"].astype(np.int64, copy=False))
        table._thumbnail_bytes = _Rows(columns["thumbnail_bytes"].astype(np.uint8, copy=False))
        table._has_features = _Rows(columns["has_features"].astype(bool, copy=False))
        table._image_size = _Rows(columns["feature_image_size"].astype(np.int32, copy=False))
        table._feature_offsets = _Rows(columns["feature_offsets"].astype(np.int64, copy=False))
        table._keypoints = _Rows(columns["feature_keypoints"].astype(np.float32, copy=False))
        table._descriptors = _Rows(columns["feature_descriptors"])
        table._link = _Rows(links.astype(np.int64, copy=False))
        table._prev_similarity = _Rows(similarity.astype(np.float16, copy=False))
        return table


NO_POSE = (np.nan,) * 7
NO_KEYPOINTS = np.zeros((0, 2), np.float32)


def _coded(column: np.ndarray) -> Tuple[_Strings, _Rows]:
    """The distinct strings of a string column and its codes into them."""
    values, codes = np.unique(column, return_inverse=True)
    return _Strings(values.tolist()), _Rows(codes.reshape(-1).astype(np.int32))


def _read_only(rows: np.ndarray) -> np.ndarray:
    rows.flags.writeable = False
    return rows


def _checked(kf: Keyframe) -> Keyframe:
    """`kf` with its fields as the table stores them, or ValueError naming what is wrong."""
    if not kf.session:
        raise ValueError("every keyframe needs a session name")
    if not np.isfinite(kf.stamp):
        raise ValueError(f"keyframe stamp must be finite, got {kf.stamp}")
    features = kf.features
    if features is not None:
        keypoints = np.asarray(features.keypoints, np.float32).reshape(-1, 2)
        descriptors = np.asarray(features.descriptors)
        if len(keypoints) and (descriptors.ndim != 2 or len(descriptors) != len(keypoints)):
            raise ValueError(f"local features need one descriptor row per keypoint, got {len(keypoints)} "
                             f"keypoints and descriptors of shape {descriptors.shape}")
        features = LocalFeatures(keypoints, descriptors, tuple(int(v) for v in features.image_size))
    return Keyframe(str(kf.session), float(kf.stamp), str(kf.frame_id), check_pose(kf.pose),
                    str(kf.condition), kf.thumbnail, features, int(kf.link))


def _bad_links(links: np.ndarray, ids: np.ndarray) -> bool:
    """Whether any link is neither -1 nor an older keyframe (a smaller id) than its keyframe's."""
    return bool(np.any((links < -1) | (links >= ids)))


def _checked_links(keyframes: Sequence[Keyframe], first_id: int) -> np.ndarray:
    """The `link` of keyframes about to get ids first_id, first_id + 1, ...; each must be -1 or
    an older keyframe (ValueError otherwise)."""
    links = np.array([kf.link for kf in keyframes], np.int64)
    if _bad_links(links, first_id + np.arange(len(links))):
        raise ValueError("a keyframe's link must be an older keyframe id (in the map already) or -1")
    return links


def _extend_ragged(offsets: _Rows, rows: _Rows, chunks: List[np.ndarray]) -> None:
    """Append one block of rows per keyframe (possibly empty) and the offset where each ends."""
    end = offsets.data[offsets.size - 1]
    offsets.extend(end + np.cumsum([len(c) for c in chunks], dtype=np.int64))
    filled = [c for c in chunks if len(c)]
    if filled:
        rows.extend(np.concatenate(filled))
