"""The keyframe map: a FAISS index of descriptors keyed by keyframe id, plus keyframe records.

On disk a map is a directory:
- `manifest.yaml`: format name and version, model fingerprint, descriptor dim, index spec, counts,
  sessions, and the size and SHA-256 of every other file (so truncation or corruption is caught);
- `index.faiss`: the FAISS index (ids = keyframe ids);
- `keyframes.npz`: the keyframe records as plain arrays, zip-deflated (columns such as frame ids,
  conditions and empty offsets repeat: 104 → 2.8 MiB for 1e6 keyframes without poses), loaded with
  `allow_pickle=False`; maps saved uncompressed before load the same.

In memory the records stay those columns (`KeyframeTable`, about 100 bytes per keyframe); a
`Keyframe` is built only when one is asked for (`record(id)`).
"""
import logging
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import yaml

from vpr_ros.mapping.errors import MapFormatError, MapMismatchError
from vpr_ros.mapping.index import IndexSpec, VectorIndex
from vpr_ros.mapping.records import Keyframe, KeyframeTable
from vpr_ros.mapping.storage import replace_directory, resolve_map_dir, sha256_of

LOG = logging.getLogger(__name__)

FORMAT_NAME = "vpr_ros-keyframe-map"
FORMAT_VERSION = 1
MANIFEST = "manifest.yaml"
INDEX_FILE = "index.faiss"
RECORDS_FILE = "keyframes.npz"
NORM_TOLERANCE = 1e-2


def _as_descriptors(descriptors: np.ndarray, dim: int) -> np.ndarray:
    """(N, dim) contiguous float32, L2-normalized rows; ValueError naming what is wrong otherwise."""
    array = np.asarray(descriptors)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"descriptors must have shape (N, {dim}), got {np.shape(descriptors)}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError("descriptors contain NaN or infinity")
    norms = np.linalg.norm(array, axis=1)
    if array.shape[0] and np.any(np.abs(norms - 1.0) > NORM_TOLERANCE):
        raise ValueError(f"descriptors must be L2-normalized (row norms range {norms.min():.3f}.."
                         f"{norms.max():.3f}); the Embedder contract returns unit rows")
    return array


class KeyframeMap:
    """Keyframe map of one model (identified by its fingerprint), any number of sessions."""

    def __init__(self, dim: int, fingerprint: str, index: VectorIndex,
                 records: Optional[KeyframeTable] = None):
        self.dim = int(dim)
        self.fingerprint = str(fingerprint)
        self._index = index
        self._records = records if records is not None else KeyframeTable()

    @classmethod
    def create(cls, dim: int, fingerprint: str, index: str = "flat", *, nlist: int = IndexSpec.nlist,
               pq_m: int = IndexSpec.pq_m, nprobe: int = IndexSpec.nprobe,
               pca_dim: int = IndexSpec.pca_dim, use_gpu: bool = False) -> "KeyframeMap":
        """An empty map for descriptors of `dim` from the model with `fingerprint`.

        `index`: "flat" (exact), "fp16", "ivfpq" or "auto" (see `vpr_ros.mapping.index`). `use_gpu` mirrors
        the index on GPU 0 for search (needs faiss-gpu and a GPU).
        """
        if dim < 1:
            raise ValueError(f"descriptor dimension must be positive, got {dim}")
        if not fingerprint:
            raise ValueError("a map needs the model fingerprint (Embedder.fingerprint)")
        spec = IndexSpec(index, nlist, pq_m, nprobe, pca_dim)
        return cls(dim, fingerprint, VectorIndex(dim, spec, use_gpu=use_gpu))

    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> KeyframeTable:
        """The keyframe records (live, not a copy; add keyframes with `add`): `records[id]` is the
        keyframe with that id (ids are 0..N-1), slices give tuples of keyframes."""
        return self._records

    def record(self, keyframe_id: int) -> Keyframe:
        """The keyframe with `keyframe_id`, built from the record columns."""
        return self._records[keyframe_id]

    def has_features(self) -> bool:
        """Whether any keyframe has local features (needed for geometric verification)."""
        return self._records.has_features()

    @property
    def index_spec(self) -> IndexSpec:
        return self._index.spec

    def index_summary(self) -> str:
        """What the index holds now, e.g. 'auto: exact fp16 until 50000 keyframes'."""
        return self._index.describe()

    def index_bytes(self) -> int:
        """Bytes of the FAISS index (descriptors, codes and ids) as saved."""
        return self._index.serialized_bytes()

    @property
    def sessions(self) -> Dict[str, dict]:
        """Per session, in order of first appearance: keyframe count and condition tags."""
        return self._records.sessions()

    def add(self, descriptors: np.ndarray, records: Sequence[Keyframe]) -> np.ndarray:
        """Add (N, dim) L2-normalized descriptors with their N records; returns the new ids (N,)."""
        vectors = _as_descriptors(descriptors, self.dim)
        if len(records) != vectors.shape[0]:
            raise ValueError(f"got {vectors.shape[0]} descriptors but {len(records)} records")
        first = len(self._records)
        ids = np.arange(first, first + len(records), dtype=np.int64)
        similarity = self._similarity_to_previous(vectors, records)
        self._records.extend(records, similarity)   # checks every record first: a bad one adds nothing
        try:
            self._index.add(vectors, ids)
        except BaseException:
            self._records.truncate(first)  # descriptors the index refuses leave no records behind
            raise
        return ids

    def _similarity_to_previous(self, vectors: np.ndarray, records: Sequence[Keyframe]) -> np.ndarray:
        """Cosine of each new keyframe with the one added before it in its session (the stored,
        decoded descriptor for the first of a batch; NaN for a session's first keyframe)."""
        similarity = np.full(len(records), np.nan, np.float32)
        names, codes = self._records.session_names, self._records.session_codes
        previous: Dict[str, np.ndarray] = {}
        for row, record in enumerate(records):
            before = previous.get(record.session)
            if before is None and record.session in names:
                last = np.flatnonzero(codes == names.index(record.session))[-1:]
                before = self.descriptors(last)[0]
            if before is not None:
                similarity[row] = float(vectors[row] @ before)
            previous[record.session] = vectors[row]
        return similarity

    def link(self, keyframe_ids, targets) -> None:
        """Record that keyframes `keyframe_ids` show the places of the older keyframes `targets`
        (-1: no longer known); see `Keyframe.link`."""
        self._records.set_links(keyframe_ids, targets)

    def descriptors(self, keyframe_ids) -> np.ndarray:
        """(n, dim) float32 stored descriptors of `keyframe_ids` (for re-scoring; decoded, so
        approximate, once an ivfpq/auto map is compressed)."""
        ids = np.asarray(keyframe_ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"keyframe ids must be in 0..{len(self) - 1}")
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return self._index.reconstruct(ids).astype(np.float32, copy=False)

    def search(self, descriptors: np.ndarray, k: int, exclude_ids: Optional[Sequence[int]] = None,
               before_id: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k keyframes per query: (scores (M, k) float32 cosine, ids (M, k) int64).

        Missing results (map smaller than k) have id -1 and score -inf. `exclude_ids` are skipped
        (e.g. the robot's most recent keyframes) and the next best fill their places.
        `before_id`: only keyframes older than this id (e.g. the sessions before the one being
        linked to them).
        """
        queries = _as_descriptors(descriptors, self.dim)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        excluded = np.unique(np.asarray(exclude_ids if exclude_ids is not None else [], dtype=np.int64))
        fetch = min(k + len(excluded), max(len(self), 1))
        scores, ids = self._index.search(queries, fetch, before_id)
        if len(excluded):
            keep = ~np.isin(ids, excluded)
            order = np.argsort(~keep, axis=1, kind="stable")
            ids = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(ids, order, 1), -1)
            scores = np.where(ids >= 0, np.take_along_axis(scores, order, 1), -np.inf)
        pad = k - ids.shape[1]
        if pad > 0:
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return scores[:, :k].astype(np.float32), ids[:, :k].astype(np.int64)

    def manifest(self) -> dict:
        """The manifest as written to `manifest.yaml` (without the file checksums)."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "index": dict(self._index.spec.to_dict(), trained=self._index.trained),
            "counts": {"keyframes": len(self), "indexed": self._index.ntotal},
            "sessions": [dict(name=name, **info) for name, info in self.sessions.items()],
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, directory) -> None:
        """Write the map to `directory` atomically: a crash leaves the previous map loadable."""
        manifest = self.manifest()

        def write_files(staging: Path) -> None:
            self._index.write(str(staging / INDEX_FILE))
            with open(staging / RECORDS_FILE, "wb") as handle:
                np.savez_compressed(handle, **self._records.columns())
            manifest["files"] = {name: {"bytes": (staging / name).stat().st_size,
                                        "sha256": sha256_of(staging / name)}
                                 for name in (INDEX_FILE, RECORDS_FILE)}
            with open(staging / MANIFEST, "w", encoding="utf-8") as handle:
                yaml.safe_dump(manifest, handle, sort_keys=False)

        replace_directory(Path(directory), write_files)
        LOG.info("saved map %s: %d keyframes, %d sessions", directory, len(self), len(manifest["sessions"]))

    @classmethod
    def load(cls, directory, expected_fingerprint: Optional[str] = None,
             use_gpu: bool = False) -> "KeyframeMap":
        """Read a map; refuse another model's map, unknown format versions and corrupt files."""
        root = resolve_map_dir(Path(directory))
        manifest = read_manifest(root)
        if expected_fingerprint is not None:
            _check_model(directory, manifest, expected_fingerprint)
        for name, expected in manifest["files"].items():
            path = root / name
            if not path.is_file():
                raise MapFormatError(f"map {directory} is partial: {name} is missing")
            if path.stat().st_size != expected["bytes"] or sha256_of(path) != expected["sha256"]:
                raise MapFormatError(f"map {directory} is corrupt: {name} differs from the manifest "
                                     f"(truncated or modified); restore it from a backup or rebuild")
        spec_fields = dict(manifest["index"])
        trained = bool(spec_fields.pop("trained", False))
        spec = IndexSpec.from_manifest(spec_fields, manifest["dim"])
        index = VectorIndex.read(str(root / INDEX_FILE), manifest["dim"], spec, trained, use_gpu)
        sessions = [s["name"] for s in manifest["sessions"]]
        with np.load(root / RECORDS_FILE, allow_pickle=False) as data:
            records = KeyframeTable.from_columns({name: data[name] for name in data.files}, sessions)
        counts = manifest["counts"]
        if not counts["keyframes"] == counts["indexed"] == len(records) == index.ntotal:
            raise MapFormatError(
                f"map {directory} is inconsistent: manifest counts {counts}, {len(records)} records, "
                f"{index.ntotal} indexed descriptors")
        return cls(manifest["dim"], manifest["fingerprint"], index, records)


    @staticmethod
    def check_model(directory, fingerprint: str) -> None:
        """Refuse a model that did not build the map in `directory`, reading only its manifest
        (cheap: callers check before starting a backend that would export or build files)."""
        _check_model(directory, read_manifest(resolve_map_dir(Path(directory))), fingerprint)


def _check_model(directory, manifest: dict, fingerprint: str) -> None:
    if manifest["fingerprint"] != fingerprint:
        raise MapMismatchError(
            f"map {directory} was built with model {manifest['fingerprint']}, but the loaded model is "
            f"{fingerprint}; rebuild the map with this model or load the model that made it")


def read_manifest(root: Path) -> dict:
    """The parsed manifest of the map in `root`, checked for format name, version and fields."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise MapFormatError(f"{root} is not a keyframe map (no {MANIFEST}); build one with `vpr-ros build-map`")
    try:
        manifest = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise MapFormatError(f"map manifest {path} is not valid YAML: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise MapFormatError(f"{path} is not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise MapFormatError(f"map format version {version!r} is not supported (this vpr_ros reads "
                             f"version {FORMAT_VERSION}); rebuild the map or upgrade vpr_ros")
    missing = [key for key in ("fingerprint", "dim", "index", "counts", "sessions", "files")
               if key not in manifest]
    if missing:
        raise MapFormatError(f"map manifest {path} lacks {missing}")
    return manifest
