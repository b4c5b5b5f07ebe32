"""FAISS vector index of a keyframe map: inner product on L2-normalized descriptors (score = cosine).

Index kinds:
- `flat`: exact search, 4·dim bytes per keyframe.
- `fp16`: `IndexScalarQuantizer(QT_fp16)`, half the memory, scores within ~1e-3 of exact.
- `sq8`: `IndexScalarQuantizer(QT_8bit_uniform)` over the fixed range ±`SQ8_RANGE`, one byte per
  dimension (2 KB per keyframe for the default 2048-D descriptor) and nothing to train: every
  component of an L2-normalized NetVLAD descriptor of K intra-normalized clusters lies within
  ±1/√K, so ±0.25 holds for K ≥ 16 (step 0.002; validation R@1 unchanged, bench/descriptor_size.py).
  A component beyond the range (a PCA-whitened model) is refused: use fp16 for such models.
- `ivfpq`: projected IVF-PQ. The descriptor is projected on its top `pca_dim` uncentered principal
  axes (a `LinearTransform` without bias, so inner products keep their meaning; 960 of 2048 for the
  default descriptor), ordered so that every PQ sub-vector gets an equal share of the variance
  (axes dealt snake-wise by variance: a PQ sub-vector of only strong or only weak axes wastes its
  bits), then `IndexIVFPQ`: coarse k-means into `nlist` lists (2048 for ivfpq), residuals coded as
  `pq_m` bytes of 8-bit product quantization (96 bytes, 10-D sub-vectors, for the default). An
  array direct map gives stored descriptors back approximately (`reconstruct`) for sequence
  matching; 8 bytes of id and 8 of direct map per keyframe on top of the codes. Search rescores
  FAISS's top `RESCORE_SHORTLIST` (10; 100 and 1000 did no better) by cosine with the decoded
  descriptor (FAISS's inner product divided by the decoded vector's norm, which varies with how
  well a keyframe codes): with nlist 2048 this raised the tuning-set ratio to exact R@1 at 1e6
  keyframes from 0.78 to 0.97 (0.81 to 0.89 with nlist 1024; bench/map_scaling.py --tuning), for
  no memory. Plain 8-bit IVF-PQ of the whole descriptor with 32-D sub-vectors (earlier vpr_ros
  maps, still loaded, and rescored too) kept 0.49 of exact R@1 at 1e6 keyframes (docs/results.md "Map
  scaling on real descriptors", bench/map_scaling.py). Its projection and codebooks need
  training data: until the map holds `IndexSpec.train_at` keyframes (at least 39 x max(nlist,
  256), FAISS's k-means minimum) it stays an exact fp16 index, then it is trained once on a random
  sample of what it holds (at most 64 x max(nlist, 256) vectors) and every vector is moved over.
  `nprobe` trades speed for recall (bench/map_scaling.py).
- `auto`: exact sq8 for small maps (fp16 as soon as a descriptor leaves the sq8 range: such a
  model is not plain NetVLAD), IVF-PQ with nlist 1024 (k-means needs 39 x 2048 keyframes for
  2048 lists) once the map reaches `AUTO_COMPRESS_AT` keyframes,
  the size beyond which an exact map of the default descriptor no longer fits 10 ms per query
  or the map memory budget (docs/results.md "Map scaling on real descriptors").

Fast-scan IVF-PQ (4-bit codes, earlier vpr_ros) is not offered: FAISS 1.15 crashes decoding the
codes of a loaded fast-scan index, and sequence decisions need the descriptors back.

Keyframe ids are stored in the index (IndexIDMap for flat/fp16, positions of the IVF direct map,
which requires ids 0..N-1 added in order, as the keyframe map does). When faiss-gpu and a GPU are
present the index can be mirrored on the GPU for search; the CPU copy stays the one that is saved.
"""
import logging
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import faiss
import numpy as np

from vpr_ros.mapping.errors import MapFormatError

LOG = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "fp16", "sq8", "ivfpq", "auto")
SQ8_RANGE = 0.25
KMEANS_POINTS_PER_CENTROID = 39
TRAIN_POINTS_PER_CENTROID = 64
PQ_BITS = 8
PCA_SHARE = 15 / 32
PQ_SUBVECTOR_DIM = 10
AUTO_COMPRESS_AT = 50_000
DEFAULT_NLIST = {"ivfpq": 2048, "auto": 1024}
RESCORE_SHORTLIST = 10
DECODE_CHUNK = 65_536


@dataclass(frozen=True)
class IndexSpec:
    """How a map indexes its descriptors. Zeros are resolved for the kind and the descriptor
    dimension by `validated`: `nlist` = `DEFAULT_NLIST` of the kind, `pca_dim` = 15/32 of the
    dimension, `pq_m` = pca_dim / 10 one-byte sub-vectors (for ivfpq of dim 2048: 960 axes and 96
    bytes chosen with `bench/map_scaling.py --tuning` at 1e5 keyframes, 2048 lists at 1e6; 112
    bytes per keyframe with id and direct map, 123 MB at 1e6 with the projection, centroids and
    codebooks). `pca_dim` equal to the dimension means no projection (maps of earlier vpr_ros,
    see `from_manifest`)."""

    kind: str = "flat"
    nlist: int = 0
    pq_m: int = 0
    nprobe: int = 32
    pca_dim: int = 0

    @classmethod
    def from_manifest(cls, fields: dict, dim: int) -> "IndexSpec":
        """The spec a map manifest records; manifests written before `pca_dim` existed describe
        IVF-PQ of the whole descriptor, which is what their index files hold."""
        return cls(**dict({"pca_dim": dim}, **fields))

    def validated(self, dim: int) -> "IndexSpec":
        """This spec with `nlist`, `pca_dim` and `pq_m` resolved for `dim`; ValueError naming the bad
        field otherwise."""
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown index type {self.kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        if not self.compresses:
            return self
        nlist = self.lists
        if nlist < 1 or self.nprobe < 1:
            raise ValueError(f"{self.kind} needs nlist >= 1 and nprobe >= 1, got {self.nlist}, "
                             f"{self.nprobe}")
        pca_dim = self.pca_dim or max(1, round(dim * PCA_SHARE))
        if not 1 <= pca_dim <= dim:
            raise ValueError(f"{self.kind} pca_dim={pca_dim} must lie in 1..{dim}, the descriptor dimension")
        pq_m = self.pq_m or max(1, pca_dim // PQ_SUBVECTOR_DIM)
        if pca_dim % pq_m:
            raise ValueError(f"{self.kind} pq_m={pq_m} must divide the projected dimension {pca_dim}")
        return IndexSpec(self.kind, nlist, pq_m, self.nprobe, pca_dim)

    @property
    def exact_kind(self) -> str:
        """The exact index the map holds before (or instead of) IVF-PQ codes."""
        return {"ivfpq": "fp16", "auto": "sq8"}.get(self.kind, self.kind)

    @property
    def compresses(self) -> bool:
        """True for the kinds that switch to IVF-PQ codes once trained (ivfpq, auto)."""
        return self.kind in ("ivfpq", "auto")

    @property
    def lists(self) -> int:
        """`nlist`, or the kind's default (`DEFAULT_NLIST`) when it is 0."""
        return self.nlist or DEFAULT_NLIST.get(self.kind, 0)

    @property
    def min_train_vectors(self) -> int:
        """Keyframes needed to train IVF-PQ (k-means needs 39 points per centroid)."""
        return KMEANS_POINTS_PER_CENTROID * max(self.lists, 2 ** PQ_BITS)

    @property
    def train_at(self) -> int:
        """Map size at which the exact buffer is replaced by IVF-PQ codes."""
        minimum = self.min_train_vectors
        return max(minimum, AUTO_COMPRESS_AT) if self.kind == "auto" else minimum

    def to_dict(self) -> dict:
        return asdict(self)


def _exact_index(dim: int, kind: str) -> faiss.Index:
    if kind == "fp16":
        inner = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    elif kind == "sq8":
        inner = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit_uniform,
                                           faiss.METRIC_INNER_PRODUCT)
        faiss.copy_array_to_vector(np.array([-SQ8_RANGE, 2 * SQ8_RANGE], np.float32), inner.sq.trained)
        inner.is_trained = True
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap(inner)


def balanced_principal_axes(sample: np.ndarray, count: int, groups: int) -> np.ndarray:
    """(count, dim) orthonormal rows: the `count` uncentered principal axes of `sample` (no mean is
    subtracted, so inner products stay inner products) in an order that gives each of `groups`
    consecutive sub-vectors an equal share of the variance: axes sorted by variance are dealt
    snake-wise (0..g-1, g-1..0, ...), so every PQ sub-vector mixes strong and weak axes."""
    moments, axes = np.linalg.eigh((sample.T @ sample).astype(np.float64) / len(sample))
    axes = axes[:, np.argsort(moments)[::-1][:count]].astype(np.float32)
    by_variance = np.argsort(-(sample @ axes).var(axis=0))
    turn = np.arange(count) % (2 * groups)
    group = np.minimum(turn, 2 * groups - 1 - turn)
    return np.ascontiguousarray(axes[:, by_variance[np.argsort(group, kind="stable")]].T)


def _inside_projection(index: faiss.Index) -> faiss.Index:
    """The index a projected (IndexPreTransform) map codes with; `index` itself otherwise."""
    if isinstance(index, faiss.IndexPreTransform):
        return faiss.downcast_index(index.index)
    return index


def gpu_available() -> bool:
    """True when this FAISS build has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """A FAISS index of keyframe descriptors keyed by keyframe id, with the ivfpq training policy."""

    def __init__(self, dim: int, spec: IndexSpec, index: Optional[faiss.Index] = None,
                 use_gpu: bool = False):
        self.dim = dim
        self.spec = spec.validated(dim)
        self.index = index if index is not None else _exact_index(dim, self.spec.exact_kind)
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
        """True once an ivfpq/auto index has switched from its exact buffer to IVF-PQ codes."""
        return faiss.try_extract_index_ivf(self.index) is not None

    @property
    def exact_kind(self) -> str:
        """flat, fp16 or sq8: what the exact index holds (empty string once IVF-PQ)."""
        if self.trained:
            return ""
        inner = faiss.downcast_index(self.index.index)
        if not isinstance(inner, faiss.IndexScalarQuantizer):
            return "flat"
        return "fp16" if inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16 else "sq8"

    def describe(self) -> str:
        """What the index holds now, e.g. 'auto: exact sq8 until 50000 keyframes'."""
        if self.trained:
            projection = f" of {self.spec.pca_dim} principal axes" if self.spec.pca_dim < self.dim else ""
            return (f"{self.spec.kind}: IVF-PQ, {self.spec.pq_m}-byte codes{projection}, nlist "
                    f"{self.spec.nlist}, nprobe {self.spec.nprobe}")
        if self.spec.compresses:
            return f"{self.spec.kind}: exact {self.exact_kind} until {self.spec.train_at} keyframes"
        return f"{self.spec.kind}: exact"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add (N, dim) float32 vectors under int64 `ids`; trains IVF-PQ when it has enough data."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.trained:
            if not np.array_equal(ids, np.arange(self.ntotal, self.ntotal + len(ids))):
                raise ValueError("an IVF-PQ map takes keyframe ids in order, continuing from its size")
            self.index.add(vectors)
        else:
            peak = float(np.abs(vectors).max()) if len(vectors) else 0.0
            if peak > SQ8_RANGE and self.exact_kind == "sq8":
                self._leave_sq8(peak)
            self.index.add_with_ids(vectors, ids)
        if self.spec.compresses and not self.trained and self.ntotal >= self.spec.train_at:
            self._train_ivfpq()
        self._gpu_index = None

    def search(self, vectors: np.ndarray, k: int,
               below: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (M, k); ids -1 and scores -inf where fewer than k keyframes exist.
        `below`: only ids < below (FAISS's IDSelectorRange, applied inside the search, on the CPU
        index: GPU indexes take no selector)."""
        fetch = max(k, RESCORE_SHORTLIST) if self.trained else k
        if below is None:
            scores, ids = self._search_index().search(vectors, fetch)
        else:
            scores, ids = self.index.search(vectors, fetch, params=self._ids_below(below))
        scores = scores.astype(np.float32)
        if self.trained:
            scores, ids = self._rescored(scores, ids, k)
        scores[ids < 0] = -np.inf
        return scores, ids

    def _ids_below(self, high: int) -> faiss.SearchParameters:
        """Search parameters that keep ids below `high`, of the kind this index takes."""
        selector = faiss.IDSelectorRange(0, high)
        if not self.trained:
            return faiss.SearchParameters(sel=selector)
        ivf = faiss.SearchParametersIVF(sel=selector, nprobe=self.spec.nprobe)
        if isinstance(self.index, faiss.IndexPreTransform):
            return faiss.SearchParametersPreTransform(index_params=ivf)
        return ivf

    def _codes(self) -> faiss.IndexIVFPQ:
        """The IVF-PQ index of a trained map (inside its projection, if any)."""
        return _inside_projection(self.index)

    def _rescored(self, scores: np.ndarray, ids: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The top k of an IVF-PQ shortlist by cosine with the decoded descriptor: FAISS's score
        is the inner product with the decoded (projected) vector, whose norm varies with how well
        the keyframe codes; dividing by it removes that bias."""
        flat = np.maximum(ids.ravel(), 0)
        codes = self._codes()
        norms = np.concatenate([np.linalg.norm(codes.reconstruct_batch(flat[i:i + DECODE_CHUNK]), axis=1)
                                for i in range(0, len(flat), DECODE_CHUNK)]).reshape(ids.shape)
        cosines = np.where(ids >= 0, scores / np.maximum(norms, 1e-12), -np.inf).astype(np.float32)
        order = np.argsort(-cosines, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(cosines, order, 1), np.take_along_axis(ids, order, 1)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), dim) stored descriptors of keyframe `ids` (keyframe k is at position k).

        IVF-PQ decodes coarse centroid + residual code: a descriptor within the quantization
        error, not unit-norm, so it is renormalized (cosines stay cosines). A projected index maps
        the decoded batch back in one product (FAISS's IndexPreTransform.reconstruct_batch maps
        one vector at a time, ~80x slower for a few hundred keyframes).
        """
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not self.trained:
            return self.index.index.reconstruct_batch(ids)
        vectors = self._codes().reconstruct_batch(ids)
        if isinstance(self.index, faiss.IndexPreTransform):
            projection = faiss.downcast_VectorTransform(self.index.chain.at(0))
            vectors = projection.reverse_transform(vectors)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

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

    def _leave_sq8(self, peak: float) -> None:
        """An auto map moves its sq8 buffer to fp16; an sq8 map refuses (it would clip)."""
        if self.spec.kind == "sq8":
            raise ValueError(f"a descriptor component of {peak:.3f} lies beyond the sq8 range "
                             f"±{SQ8_RANGE} (a PCA-whitened model?); build the map with --index "
                             f"fp16, flat or auto")
        LOG.info("descriptor component %.3f beyond the sq8 range ±%s: the map keeps fp16 instead",
                 peak, SQ8_RANGE)
        fp16 = _exact_index(self.dim, "fp16")
        if self.ntotal:
            fp16.add_with_ids(self.index.index.reconstruct_n(0, self.ntotal),
                              faiss.vector_to_array(self.index.id_map).astype(np.int64))
        self.index = fp16

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
        if not np.array_equal(ids, np.arange(count)):
            raise ValueError("IVF-PQ needs keyframe ids 0..N-1 in order (its direct map)")
        LOG.info("training IVF-PQ (%d principal axes, nlist=%d, %d x %d-bit codes) on %d of %d "
                 "keyframes", spec.pca_dim, spec.nlist, spec.pq_m, PQ_BITS, len(sample), count)
        ivfpq = faiss.index_factory(spec.pca_dim, f"IVF{spec.nlist},PQ{spec.pq_m}x{PQ_BITS}",
                                    faiss.METRIC_INNER_PRODUCT)
        index = ivfpq
        if spec.pca_dim < self.dim:
            projection = faiss.LinearTransform(self.dim, spec.pca_dim, False)
            faiss.copy_array_to_vector(balanced_principal_axes(sample, spec.pca_dim, spec.pq_m).ravel(),
                                       projection.A)
            projection.is_trained = True
            projection.set_is_orthonormal()
            index = faiss.IndexPreTransform(projection, ivfpq)
        index.train(sample)
        ivfpq.make_direct_map()
        index.add(vectors)
        self.index = index
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
        ivf = faiss.try_extract_index_ivf(index)
        codes = _inside_projection(index)
        if ivf is not None and not (isinstance(codes, faiss.IndexIVFPQ)
                                    and ivf.direct_map.type == faiss.DirectMap.Array):
            raise MapFormatError(f"index file {path} holds {type(codes).__name__} codes without a "
                                 f"direct map (fast-scan maps of vpr_ros before issue 13), which "
                                 f"cannot give back descriptors; rebuild the map")
        spec = spec.validated(dim)
        if ivf is not None and (codes.d, codes.nlist, codes.pq.M, codes.pq.nbits) != (
                spec.pca_dim, spec.nlist, spec.pq_m, PQ_BITS):
            raise MapFormatError(f"index file {path} holds IVF-PQ of {codes.d}-D vectors, nlist "
                                 f"{codes.nlist}, {codes.pq.M} x {codes.pq.nbits}-bit codes, not the "
                                 f"{spec.pca_dim}-D, nlist {spec.nlist}, {spec.pq_m} x {PQ_BITS}-bit "
                                 f"codes its manifest describes; rebuild the map")
        loaded = cls(dim, spec, index, use_gpu=use_gpu)
        expected_trained = trained and spec.compresses
        if loaded.trained != expected_trained:
            raise MapFormatError(f"index file {path} does not hold the {spec.kind} index the manifest describes")
        return loaded
