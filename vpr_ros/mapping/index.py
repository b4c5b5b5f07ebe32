"""FAISS vector index of a keyframe map: inner product on L2-normalized descriptors (score = cosine).

Index kinds:
- `flat`: exact search, 4·dim bytes per keyframe (default; right up to ~1e5 keyframes).
- `fp16`: `IndexScalarQuantizer(QT_fp16)`, half the memory, scores within ~1e-3 of exact.
- `ivfpq`: IVF-PQ with fast-scan codes (`IndexIVFPQFastScan`: coarse k-means into `nlist` lists,
  residuals coded as `pq_m` sub-vectors of 4 bits, scanned with SIMD lookup tables; 32 bytes per
  keyframe at dim 256 with the default pq_m = dim/4), for maps of 1e5-1e6+ keyframes. Its codebooks
  need training data: until the map holds `IndexSpec.min_train_vectors` keyframes
  (39 x max(nlist, 16), FAISS's k-means minimum; 9,984 with the default nlist=256) it stays an
  exact flat index, then it is trained once on a random sample of what it holds (at most
  64 x nlist vectors, which bounds training time) and every vector is moved over.
  `nprobe` (lists visited per query) trades speed for recall: whitened descriptors are nearly
  isotropic, so a revisit often falls in another list than its keyframe; 96 of 256 lists keeps
  recall@1 within 1-3 % of exact search (bench/map_scaling.py).

Keyframe ids are stored in the index (IndexIDMap for flat/fp16, native ids for IVF). When
faiss-gpu and a GPU are present the index can be mirrored on the GPU for search; the CPU copy stays
the one that is saved.
"""
import logging
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import faiss
import numpy as np

from vpr_ros.mapping.errors import MapFormatError

LOG = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "fp16", "ivfpq")
KMEANS_POINTS_PER_CENTROID = 39
TRAIN_POINTS_PER_CENTROID = 64
PQ_BITS = 4


@dataclass(frozen=True)
class IndexSpec:
    """How a map indexes its descriptors. `pq_m=0` picks dim/4 sub-vectors (32 bytes for dim 256)."""

    kind: str = "flat"
    nlist: int = 256
    pq_m: int = 0
    nprobe: int = 96

    def validated(self, dim: int) -> "IndexSpec":
        """This spec with `pq_m` resolved for `dim`; ValueError naming the bad field otherwise."""
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index type {self.kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        if self.kind != "ivfpq":
            return self
        if self.nlist < 1 or self.nprobe < 1:
            raise ValueError(f"ivfpq needs nlist >= 1 and nprobe >= 1, got {self.nlist}, {self.nprobe}")
        pq_m = self.pq_m or max(1, dim // 4)
        if dim % pq_m or pq_m % 2:
            raise ValueError(f"ivfpq pq_m={pq_m} must be even and divide the descriptor dimension {dim}")
        return IndexSpec(self.kind, self.nlist, pq_m, self.nprobe)

    @property
    def min_train_vectors(self) -> int:
        """Keyframes needed before an ivfpq index is trained (k-means needs 39 points per centroid)."""
        return KMEANS_POINTS_PER_CENTROID * max(self.nlist, 2 ** PQ_BITS)

    def to_dict(self) -> dict:
        return asdict(self)


def _exact_index(dim: int, kind: str) -> faiss.Index:
    if kind == "fp16":
        inner = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap(inner)


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """A FAISS index of keyframe descriptors keyed by keyframe id, with the ivfpq training policy."""

    def __init__(self, dim: int, spec: IndexSpec, index: Optional[faiss.Index] = None,
                 use_gpu: bool = False):
        self.dim = dim
        self.spec = spec.validated(dim)
        self.index = index if index is not None else _exact_index(dim, "fp16" if spec.kind == "fp16" else "flat")
        if self.index.d != dim:
            raise MapFormatError(f"index dimension {self.index.d} differs from the manifest's {dim}")
        if use_gpu and not gpu_available():
            raise ValueError("a GPU index was requested but faiss has no GPU support or sees no GPU; "
                             "install faiss-gpu or pass use_gpu=False")
        self.use_gpu = use_gpu
        self._gpu_resources = None
        self._gpu_index = None
        self._apply_search_settings()

    @property
    def trained(self) -> bool:
        """True once an ivfpq index has switched from its exact buffer to trained IVF-PQ codes."""
        return faiss.try_extract_index_ivf(self.index) is not None

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add (N, dim) float32 vectors under int64 `ids`; trains ivfpq when it has enough data."""
        self.index.add_with_ids(vectors, ids.astype(np.int64))
        if self.spec.kind == "ivfpq" and not self.trained and self.ntotal >= self.spec.min_train_vectors:
            self._train_ivfpq()
        self._gpu_index = None

    def search(self, vectors: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (M, k); ids -1 and scores -inf where fewer than k keyframes exist."""
        index = self._search_index()
        scores, ids = index.search(vectors, k)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        return scores, ids

    @property
    def stores_vectors(self) -> bool:
        """True for the kinds that can give back every stored descriptor (flat, fp16).

        ivfpq keeps 4-bit fast-scan codes only, and FAISS 1.15 crashes decoding them from a
        loaded index, so it is not offered.
        """
        return self.spec.kind != "ivfpq"

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) stored descriptors of keyframe `ids` (keyframe k is at position k)."""
        if not self.stores_vectors:
            raise ValueError("an ivfpq map keeps compressed codes only and cannot give back stored "
                             "descriptors; use a flat or fp16 map")
        return self.index.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64))

    def _search_index(self) -> faiss.Index:
        if not self.use_gpu:
            return self.index
        if self._gpu_index is None:
            if self._gpu_resources is None:
                self._gpu_resources = faiss.StandardGpuResources()
            try:
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
            except RuntimeError as err:
                LOG.warning("FAISS cannot put this %s index on the GPU (%s); searching on the CPU",
                            self.spec.kind, err)
                self.use_gpu = False
                return self.index
        return self._gpu_index

    def serialized_bytes(self) -> int:
        """Size of the index as written to disk (≈ its memory footprint)."""
        return len(faiss.serialize_index(self.index))

    def _apply_search_settings(self) -> None:
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            ivf.nprobe = self.spec.nprobe

    def _train_ivfpq(self) -> None:
        """Train IVF-PQ on every vector held so far, move them over, and drop the exact buffer."""
        count = self.ntotal
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vectors = self.index.index.reconstruct_n(0, count)
        spec = self.spec
        sample_size = TRAIN_POINTS_PER_CENTROID * max(spec.nlist, 2 ** PQ_BITS)
        sample = vectors
        if count > sample_size:
            sample = vectors[np.random.default_rng(0).choice(count, sample_size, replace=False)]
        LOG.info("training IVF-PQ fast-scan (nlist=%d, %d x %d-bit codes) on %d of %d keyframes",
                 spec.nlist, spec.pq_m, PQ_BITS, len(sample), count)
        ivfpq = faiss.index_factory(self.dim, f"IVF{spec.nlist},PQ{spec.pq_m}x{PQ_BITS}fs",
                                    faiss.METRIC_INNER_PRODUCT)
        ivfpq.train(sample)
        ivfpq.add_with_ids(vectors, ids)
        self.index = ivfpq
        self._apply_search_settings()

    def write(self, path: str) -> None:
        faiss.write_index(self.index, path)

    @classmethod
    def read(cls, path: str, dim: int, spec: IndexSpec, trained: bool, use_gpu: bool = False) -> "VectorIndex":
        """Read an index file and check that it is the kind the manifest says."""
        try:
            index = faiss.read_index(path)
        except RuntimeError as err:
            raise MapFormatError(f"cannot read FAISS index {path}: {err}") from None
        loaded = cls(dim, spec, index, use_gpu=use_gpu)
        expected_trained = trained and spec.kind == "ivfpq"
        if loaded.trained != expected_trained:
            raise MapFormatError(f"index file {path} does not hold the {spec.kind} index the manifest describes")
        return loaded
