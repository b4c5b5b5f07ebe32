"""Keyframe map: search, persistence round trip, crash safety and refusal of foreign/corrupt maps."""
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
import yaml

from vpr_ros.mapping import (IndexSpec, Keyframe, KeyframeMap, LocalFeatures, MapFormatError,
                             MapMismatchError, gpu_available)
from vpr_ros.mapping import storage
from vpr_ros.mapping.index import VectorIndex, balanced_principal_axes

REPO = Path(__file__).resolve().parents[1]
DIM = 32


def unit_rows(count: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def bounded_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit rows whose components stay within about ±1.5/sqrt(dim), like a NetVLAD descriptor's."""
    rng = np.random.default_rng(seed)
    rows = np.sign(rng.standard_normal((count, dim))) + 0.3 * rng.uniform(-1, 1, (count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def day_records(count: int, session: str = "day", condition: str = "day"):
    features = LocalFeatures(np.arange(20, dtype=np.float32).reshape(10, 2),
                             np.full((10, 32), 7, np.uint8), (640, 360))
    return [Keyframe(session, 100.0 + i, frame_id="camera",
                     pose=(float(i), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0) if i % 2 == 0 else None,
                     condition=condition, thumbnail=b"\xff\xd8jpeg" if i % 3 == 0 else None,
                     features=features if i % 4 == 0 else None)
            for i in range(count)]


@pytest.fixture
def day_map() -> KeyframeMap:
    kf_map = KeyframeMap.create(DIM, "model-a")
    kf_map.add(unit_rows(40), day_records(40))
    return kf_map


def test_search_finds_each_keyframe_first_and_pads_missing(day_map):
    scores, ids = day_map.search(unit_rows(40)[:5], k=3)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    scores, ids = day_map.search(unit_rows(40)[:1], k=50)
    assert ids.shape == (1, 50) and (ids[0, 40:] == -1).all() and np.isneginf(scores[0, 40:]).all()


def test_excluded_ids_are_skipped_and_replaced_by_the_next_best(day_map):
    _, ids = day_map.search(unit_rows(40)[:1], k=3)
    _, kept = day_map.search(unit_rows(40)[:1], k=3, exclude_ids=[0, int(ids[0, 1])])
    assert 0 not in kept[0] and ids[0, 1] not in kept[0]
    assert kept[0, 0] == ids[0, 2]


def test_add_rejects_unnormalized_or_misshaped_descriptors(day_map):
    with pytest.raises(ValueError, match="L2-normalized"):
        day_map.add(unit_rows(1) * 3, day_records(1))
    with pytest.raises(ValueError, match=r"shape \(N, 32\)"):
        day_map.add(np.ones((1, 8), np.float32), day_records(1))
    with pytest.raises(ValueError, match="records"):
        day_map.add(unit_rows(2), day_records(1))


def test_round_trip_keeps_records_index_and_sessions(day_map, tmp_path):
    day_map.add(unit_rows(10, seed=1), day_records(10, session="night", condition="night"))
    day_map.save(tmp_path / "map")
    loaded = KeyframeMap.load(tmp_path / "map", expected_fingerprint="model-a")
    assert len(loaded) == 50 and loaded.records == day_map.records
    assert loaded.sessions == {"day": {"keyframes": 40, "conditions": ["day"]},
                               "night": {"keyframes": 10, "conditions": ["night"]}}
    queries = unit_rows(10, seed=1)
    assert np.array_equal(loaded.search(queries, 5)[1], day_map.search(queries, 5)[1])
    assert loaded.record(40).session == "night" and loaded.record(4).features is not None
    manifest = yaml.safe_load((tmp_path / "map" / "manifest.yaml").read_text())
    assert manifest["counts"] == {"keyframes": 50, "indexed": 50}
    assert sorted(p.name for p in (tmp_path / "map").iterdir()) == ["index.faiss", "keyframes.npz", "manifest.yaml"]


def test_day_map_extended_by_night_session_on_disk(day_map, tmp_path):
    day_map.save(tmp_path / "map")
    extended = KeyframeMap.load(tmp_path / "map")
    extended.add(unit_rows(5, seed=2), day_records(5, session="night", condition="night"))
    extended.save(tmp_path / "map")
    again = KeyframeMap.load(tmp_path / "map")
    assert [kf.session for kf in again.records[38:43]] == ["day", "day", "night", "night", "night"]
    assert again.search(unit_rows(5, seed=2)[:1], 1)[1][0, 0] == 40
    assert not list(tmp_path.glob(".map.*")), "no temp or backup directories left behind"


def mixed_records():
    """Keyframes of three sessions and conditions, with and without pose, thumbnail and features."""
    orb = lambda n: LocalFeatures(np.full((n, 2), n, np.float32), np.full((n, 32), n, np.uint8), (64, 48))
    return [Keyframe("day", 1.5, "cam_left", (1.0, 2.0, 3.0, 0, 0, 0, 1.0), "sunny", b"\xff\xd8a", orb(3)),
            Keyframe("day", 2.5, "cam_left", None, "cloudy"),
            Keyframe("night", 0.25, "cam_right", (4.0, 5.0, 6.0, 0.0, 0.0, 1.0, 0.0), "dark", None, orb(0)),
            Keyframe("dusk", -3.0, "", None, "", b"\xff\xd8bb", orb(5)),
            Keyframe("day", 3.5, "cam_left", (7.0, 8.0, 9.0, 1.0, 0.0, 0.0, 0.0), "sunny", b"\xff\xd8c")]


def with_ids(records, first=0):
    return [dataclasses.replace(kf, id=first + i) for i, kf in enumerate(records)]


def test_record_columns_round_trip_every_field_through_save_and_load(tmp_path):
    kf_map = KeyframeMap.create(DIM, "m")
    kf_map.add(unit_rows(5), mixed_records())
    expected = with_ids(mixed_records())
    assert list(kf_map.records) == expected and kf_map.records[1:3] == tuple(expected[1:3])
    assert kf_map.record(-1).id == 4 and kf_map.record(0).features.image_size == (64, 48)
    kf_map.save(tmp_path / "map")
    loaded = KeyframeMap.load(tmp_path / "map")
    assert loaded.records == expected and loaded.has_features()
    assert loaded.sessions == {"day": {"keyframes": 3, "conditions": ["sunny", "cloudy"]},
                               "night": {"keyframes": 1, "conditions": ["dark"]},
                               "dusk": {"keyframes": 1, "conditions": [""]}}
    assert loaded.record(2).features.descriptors.shape == (0, 32) and loaded.record(1).thumbnail is None
    with pytest.raises(IndexError):
        loaded.record(5)


def test_keyframes_added_one_at_a_time_after_a_load_keep_their_fields(day_map, tmp_path):
    day_map.save(tmp_path / "map")
    kf_map = KeyframeMap.load(tmp_path / "map")
    assert not KeyframeMap.create(DIM, "m").has_features() and kf_map.has_features()
    for i, (vector, kf) in enumerate(zip(unit_rows(300, seed=7), mixed_records() * 60)):
        assert kf_map.add(vector, [kf]).tolist() == [40 + i]
    added = tuple(with_ids(mixed_records() * 60, 40))
    assert kf_map.records[40:] == added, "past several doublings of the columns"
    assert kf_map.records[:40] == day_map.records
    assert list(kf_map.sessions) == ["day", "night", "dusk"]
    kf_map.save(tmp_path / "map")
    assert KeyframeMap.load(tmp_path / "map").records == kf_map.records


def test_a_bad_record_adds_nothing(day_map):
    sift = LocalFeatures(np.zeros((2, 2), np.float32), np.zeros((2, 128), np.float32), (64, 48))
    for bad, message in [(Keyframe("day", 1.0, features=sift), "mix local feature types"),
                         (Keyframe("day", 1.0, pose=(0, 0, 0, 0, 0, 0, 2)), "unit norm"),
                         (Keyframe("", 1.0), "session name"), (Keyframe("day", float("nan")), "finite")]:
        with pytest.raises(ValueError, match=message):
            day_map.add(unit_rows(2), [Keyframe("night", 0.0), bad])
        assert len(day_map) == 40 and list(day_map.sessions) == ["day"]


def legacy_columns():
    """`mixed_records()` as the list-of-Keyframe code (`records_to_arrays`) wrote them: it lost
    the image size of features without keypoints (row 2), which test as false."""
    return {
        "id": np.arange(5, dtype=np.int64),
        "session": np.array([0, 0, 1, 2, 0], np.int32),
        "stamp": np.array([1.5, 2.5, 0.25, -3.0, 3.5]),
        "frame_id": np.array(["cam_left", "cam_left", "cam_right", "", "cam_left"], np.str_),
        "condition": np.array(["sunny", "cloudy", "dark", "", "sunny"], np.str_),
        "pose": np.array([[1, 2, 3, 0, 0, 0, 1], [np.nan] * 7, [4, 5, 6, 0, 0, 1, 0], [np.nan] * 7,
                          [7, 8, 9, 1, 0, 0, 0]], np.float64),
        "thumbnail_offsets": np.array([0, 3, 3, 3, 7, 10], np.int64),
        "thumbnail_bytes": np.frombuffer(b"\xff\xd8a\xff\xd8bb\xff\xd8c", np.uint8),
        "has_features": np.array([True, False, True, True, False]),
        "feature_image_size": np.array([[64, 48], [0, 0], [0, 0], [64, 48], [0, 0]], np.int32),
        "feature_offsets": np.array([0, 3, 3, 3, 8, 8], np.int64),
        "feature_keypoints": np.array([[3, 3]] * 3 + [[5, 5]] * 5, np.float32),
        "feature_descriptors": np.array([[3] * 32] * 3 + [[5] * 32] * 5, np.uint8),
    }


def test_a_map_saved_by_the_list_of_keyframes_code_loads_and_saves_the_same_columns(tmp_path):
    kf_map = KeyframeMap.create(DIM, "m")
    kf_map.add(unit_rows(5), [Keyframe(s, 0.0) for s in ("day", "day", "night", "dusk", "day")])
    kf_map.save(tmp_path / "map")
    root = tmp_path / "map"
    with open(root / "keyframes.npz", "wb") as handle:
        np.savez(handle, **legacy_columns())
    manifest = yaml.safe_load((root / "manifest.yaml").read_text())
    manifest["files"]["keyframes.npz"] = {"bytes": (root / "keyframes.npz").stat().st_size,
                                          "sha256": storage.sha256_of(root / "keyframes.npz")}
    (root / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    loaded = KeyframeMap.load(root)
    expected = with_ids(mixed_records())
    no_size = dataclasses.replace(expected[2].features, image_size=(0, 0))
    expected[2] = dataclasses.replace(expected[2], features=no_size)
    assert loaded.records == expected
    loaded.save(tmp_path / "again")
    with np.load(tmp_path / "again" / "keyframes.npz", allow_pickle=False) as saved:
        assert sorted(saved.files) == sorted(list(legacy_columns()) + ["link", "prev_similarity"])
        assert np.array_equal(saved["link"], np.full(len(expected), -1)), "saved unlinked"
        assert np.isnan(saved["prev_similarity"]).all(), "not known for a legacy map"
        for name, column in legacy_columns().items():
            assert saved[name].dtype == column.dtype, name
            assert np.array_equal(saved[name], column, equal_nan=column.dtype.kind == "f"), name


@pytest.mark.parametrize("kind", ["flat", "fp16", "sq8"])
def test_search_before_an_id_finds_only_older_keyframes(kind):
    vectors = bounded_rows(60, DIM)
    kf_map = KeyframeMap.create(DIM, "m", index=kind)
    kf_map.add(vectors, [Keyframe("day", float(i)) for i in range(60)])
    scores, ids = kf_map.search(vectors[40:], 3, before_id=30)
    assert ids.max() < 30 and (ids >= 0).all()
    everywhere = kf_map.search(vectors[40:], 1)[1][:, 0]
    assert np.array_equal(everywhere, np.arange(40, 60)), "without it the keyframe finds itself"


def test_links_and_predecessor_similarities_are_kept_and_checked(tmp_path):
    """A keyframe links to an older one showing its place (loop closure, session alignment);
    its cosine with the keyframe added before it in its session marks the mapping robot's
    stops. Both survive save and load; a link to a newer keyframe is refused."""
    vectors = unit_rows(6)
    kf_map = KeyframeMap.create(DIM, "m")
    kf_map.add(vectors[:3], [Keyframe("day", float(i)) for i in range(3)])
    kf_map.add(np.stack([vectors[0], vectors[1], vectors[1]]),
               [Keyframe("night", 0.0, link=0), Keyframe("night", 1.0), Keyframe("day", 3.0)])
    similarity = kf_map.records.prev_similarities.astype(float)
    assert np.isnan(similarity[[0, 3]]).all(), "a session's first keyframe has no predecessor"
    np.testing.assert_allclose(similarity[[1, 2]], np.sum(vectors[1:3] * vectors[:2], axis=1), atol=1e-3)
    assert similarity[4] == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-3)
    assert similarity[5] == pytest.approx(float(vectors[1] @ vectors[2]), abs=1e-3), \
        "the predecessor is the session's last keyframe, stored in an earlier add"
    kf_map.link([4], [1])
    assert kf_map.records.links.tolist() == [-1, -1, -1, 0, 1, -1]
    assert kf_map.record(3).link == 0
    with pytest.raises(ValueError, match="older keyframe"):
        kf_map.link([2], [4])
    with pytest.raises(ValueError, match="older keyframe"):
        kf_map.add(vectors[:1], [Keyframe("day", 9.0, link=6)])
    kf_map.save(tmp_path / "map")
    loaded = KeyframeMap.load(tmp_path / "map")
    assert loaded.records.links.tolist() == [-1, -1, -1, 0, 1, -1]
    np.testing.assert_array_equal(loaded.records.prev_similarities, kf_map.records.prev_similarities)


def test_fp16_index_scores_match_exact(tmp_path):
    exact, half = KeyframeMap.create(DIM, "m"), KeyframeMap.create(DIM, "m", index="fp16")
    for kf_map in (exact, half):
        kf_map.add(unit_rows(200), day_records(200))
    queries = unit_rows(20, seed=3)
    (s_exact, i_exact), (s_half, i_half) = exact.search(queries, 1), half.search(queries, 1)
    assert np.array_equal(i_exact, i_half) and np.allclose(s_exact, s_half, atol=2e-3)
    half.save(tmp_path / "half")
    assert KeyframeMap.load(tmp_path / "half").index_spec.kind == "fp16"


@pytest.fixture
def one_faiss_thread():
    """Tiny k-means runs on one thread: OpenMP barriers on a busy 2-core machine cost seconds."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def spectral_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit rows with a decaying spectrum (axis k has std 0.8^k) in a random basis, like real
    descriptors, whose variance sits on a few principal axes."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(np.random.default_rng(99).standard_normal((dim, dim)))[0]
    rows = (rng.standard_normal((count, dim)) * 0.8 ** np.arange(dim)) @ basis.T
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def test_default_codes_for_the_2048_d_descriptor_and_auto_lists():
    spec = IndexSpec("ivfpq").validated(2048)
    assert (spec.pca_dim, spec.pq_m, spec.nlist, spec.nprobe) == (960, 96, 2048, 32)
    auto = IndexSpec("auto").validated(2048)
    assert (auto.nlist, auto.train_at) == (1024, 50_000), "auto compresses at 5e4 keyframes"


def test_balanced_principal_axes_are_orthonormal_and_share_the_variance_evenly():
    sample = spectral_rows(5000, 64)
    axes = balanced_principal_axes(sample, 24, 3)
    np.testing.assert_allclose(axes @ axes.T, np.eye(24), atol=1e-5)
    kept = np.sum((sample @ axes.T) ** 2) / np.sum(sample ** 2)
    assert kept > 0.999, "the 24 strongest of 64 axes hold almost all of this spectrum"
    shares = (sample @ axes.T).var(axis=0).reshape(3, 8).sum(axis=1)
    assert shares.max() / shares.min() < 1.5, "one axis holds a third of the variance here"
    in_rank_order = np.sort((sample @ axes.T).var(axis=0))[::-1].reshape(3, 8).sum(axis=1)
    assert in_rank_order.max() / in_rank_order.min() > 50, "consecutive axes would not balance"


def test_ivfpq_stays_exact_until_enough_vectors_then_trains_and_persists(tmp_path, one_faiss_thread):
    """Projected IVF-PQ: exact fp16 until trained, then codes of the principal axes that still
    give descriptors back, before and after a save/load (FAISS 1.15 crashed decoding a loaded
    fast-scan index)."""
    dim = 64
    minimum = IndexSpec("ivfpq", nlist=16).min_train_vectors
    assert minimum == 39 * 256
    kf_map = KeyframeMap.create(dim, "m", index="ivfpq", nlist=16, pq_m=15, nprobe=8)
    vectors = spectral_rows(minimum + 100, dim)
    kf_map.add(vectors[: minimum - 1], [Keyframe("day", float(i)) for i in range(minimum - 1)])
    assert kf_map.manifest()["index"]["trained"] is False
    kf_map.add(vectors[minimum - 1:minimum + 50], [Keyframe("day", float(i)) for i in range(51)])
    kf_map.add(vectors[minimum + 50:], [Keyframe("day", float(i)) for i in range(50)])
    assert kf_map.manifest()["index"]["trained"] is True
    assert "15-byte codes of 30 principal axes" in kf_map.index_summary()
    codebooks_projection_centroids = 4 * 30 * (256 + dim + 16)
    assert kf_map.index_bytes() < len(kf_map) * (15 + 16) + codebooks_projection_centroids + 1_000
    noisy = vectors[:200] + 0.02 * unit_rows(200, dim, seed=9)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    assert (kf_map.search(noisy, 1)[1][:, 0] == np.arange(200)).mean() >= 0.9
    ids = np.array([3, minimum + 70, 0])
    decoded = kf_map.descriptors(ids)
    np.testing.assert_allclose(np.linalg.norm(decoded, axis=1), 1.0, rtol=1e-5)
    assert np.all(np.sum(decoded * vectors[ids], axis=1) > 0.9)
    older = kf_map.search(noisy[-20:], 5, before_id=100)[1]
    assert older.max() < 100 and (older >= 0).all(), "before_id keeps to older ids, codes too"
    kf_map.save(tmp_path / "pq")
    loaded = KeyframeMap.load(tmp_path / "pq")
    assert loaded.index_summary() == kf_map.index_summary()
    assert np.array_equal(loaded.search(noisy, 3)[1], kf_map.search(noisy, 3)[1])
    np.testing.assert_array_equal(loaded.descriptors(ids), decoded)


def test_ivfpq_scores_are_cosines_with_the_decoded_descriptors(one_faiss_thread):
    """A trained map ranks FAISS's shortlist by cosine with each keyframe's decoded descriptor
    (the inner product with a decoded vector, whose norm varies, divided by that norm)."""
    dim = 64
    kf_map = KeyframeMap.create(dim, "m", index="ivfpq", nlist=16, pq_m=15, nprobe=4)
    vectors = spectral_rows(kf_map.index_spec.min_train_vectors, dim)
    kf_map.add(vectors, [Keyframe("day", float(i)) for i in range(len(vectors))])
    queries = spectral_rows(20, dim, seed=5)
    scores, ids = kf_map.search(queries, 3)
    decoded = kf_map.descriptors(ids.ravel()).reshape(20, 3, dim)
    np.testing.assert_allclose(scores, np.einsum("qkd,qd->qk", decoded, queries), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    faiss_top = faiss.downcast_index(kf_map._index.index.index).reconstruct_batch(ids[:, 0])
    assert not np.allclose(np.linalg.norm(faiss_top, axis=1), 1.0, atol=1e-3), \
        "decoded vectors of uneven norm are what the rescoring corrects"


def test_ivfpq_map_of_an_earlier_version_loads_and_a_mismatched_index_file_is_refused(
        tmp_path, one_faiss_thread):
    """Maps saved before the projection: a manifest without pca_dim and plain IVF-PQ codes of the
    whole descriptor still load and decode; an index file that is not what the manifest says
    asks for a rebuild."""
    dim = 32
    kf_map = KeyframeMap.create(dim, "m", index="ivfpq", nlist=16, pq_m=8, pca_dim=dim)
    vectors = unit_rows(kf_map.index_spec.min_train_vectors, dim)
    kf_map.add(vectors, [Keyframe("day", float(i)) for i in range(len(vectors))])
    kf_map.save(tmp_path / "old")
    manifest_path = tmp_path / "old" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    del manifest["index"]["pca_dim"]
    manifest_path.write_text(yaml.safe_dump(manifest))
    loaded = KeyframeMap.load(tmp_path / "old")
    assert loaded.index_spec.pca_dim == dim
    assert "IVF-PQ, 8-byte codes, nlist 16" in loaded.index_summary()
    np.testing.assert_array_equal(loaded.descriptors([5, 9]), kf_map.descriptors([5, 9]))
    manifest["index"]["pca_dim"] = 16
    manifest_path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(MapFormatError, match="IVF-PQ of 32-D vectors.*not the 16-D.*rebuild the map"):
        KeyframeMap.load(tmp_path / "old")


def test_auto_index_is_exact_until_its_size_then_compressed(monkeypatch, one_faiss_thread):
    from vpr_ros.mapping import index as index_module

    monkeypatch.setattr(index_module, "AUTO_COMPRESS_AT", 12_000)
    kf_map = KeyframeMap.create(64, "m", index="auto", nlist=16)
    assert kf_map.index_spec.train_at == 12_000
    vectors = bounded_rows(12_000, 64)
    kf_map.add(vectors[:11_999], [Keyframe("day", float(i)) for i in range(11_999)])
    assert "exact sq8 until 12000" in kf_map.index_summary()
    assert np.allclose(kf_map.descriptors([7]), vectors[7], atol=1e-3)
    assert kf_map.index_bytes() < 11_999 * (64 + 16) + 10_000
    kf_map.add(vectors[11_999:], [Keyframe("day", 0.0)])
    assert kf_map.manifest()["index"]["trained"] is True
    assert "IVF-PQ, 3-byte codes of 30 principal axes" in kf_map.index_summary()


def test_sq8_index_needs_no_training_round_trips_and_refuses_out_of_range(tmp_path):
    vectors = bounded_rows(300, 256)
    kf_map = KeyframeMap.create(256, "m", index="sq8")
    kf_map.add(vectors, [Keyframe("day", float(i)) for i in range(300)])
    assert np.array_equal(kf_map.search(vectors, 1)[1][:, 0], np.arange(300))
    assert np.abs(kf_map.descriptors(np.arange(300)) - vectors).max() <= 0.5 / 255 + 1e-6
    assert kf_map.index_bytes() < 300 * (256 + 16) + 1000
    kf_map.save(tmp_path / "map")
    loaded = KeyframeMap.load(tmp_path / "map")
    np.testing.assert_array_equal(loaded.descriptors([4, 9]), kf_map.descriptors([4, 9]))
    spike = np.zeros((1, 256), np.float32)
    spike[0, 0] = 1.0
    with pytest.raises(ValueError, match="beyond the sq8 range.*--index fp16"):
        loaded.add(spike, [Keyframe("night", 0.0, thumbnail=b"jpeg")])
    assert len(loaded) == 300 and list(loaded.sessions) == ["day"]     # nothing half-added
    loaded.add(vectors[:1], [Keyframe("day", 1.0)])
    loaded.save(tmp_path / "map")
    assert KeyframeMap.load(tmp_path / "map").record(300).thumbnail is None


def test_auto_map_keeps_fp16_when_a_descriptor_leaves_the_sq8_range(tmp_path):
    kf_map = KeyframeMap.create(256, "m", index="auto")
    vectors = bounded_rows(20, 256)
    kf_map.add(vectors, [Keyframe("day", float(i)) for i in range(20)])
    assert "exact sq8" in kf_map.index_summary()
    spike = np.zeros((1, 256), np.float32)
    spike[0, 0] = 1.0
    kf_map.add(spike, [Keyframe("day", 20.0)])
    assert "exact fp16" in kf_map.index_summary()
    np.testing.assert_allclose(kf_map.descriptors([3, 20]), [vectors[3], spike[0]], atol=3e-3)
    kf_map.save(tmp_path / "map")
    assert "exact fp16" in KeyframeMap.load(tmp_path / "map").index_summary()


def test_fast_scan_index_of_an_older_map_is_refused(tmp_path, one_faiss_thread):
    kf_map = KeyframeMap.create(32, "m", index="ivfpq", nlist=16)
    kf_map.save(tmp_path / "map")
    old = faiss.index_factory(32, "IVF16,PQ8x4fs", faiss.METRIC_INNER_PRODUCT)
    old.train(unit_rows(2000, 32))
    faiss.write_index(old, str(tmp_path / "map" / "index.faiss"))
    with pytest.raises(MapFormatError, match="rebuild the map"):
        VectorIndex.read(str(tmp_path / "map" / "index.faiss"), 32, kf_map.index_spec, True)


def test_stored_descriptors_come_back_by_keyframe_id(day_map):
    stored = day_map.descriptors([2, 0])
    assert stored.dtype == np.float32 and stored.shape == (2, day_map.dim)
    assert np.allclose(day_map.search(stored, 1)[0][:, 0], 1.0, atol=1e-5)
    assert np.array_equal(day_map.search(stored, 1)[1][:, 0], [2, 0])
    with pytest.raises(ValueError, match="keyframe ids must be in 0.."):
        day_map.descriptors([len(day_map)])


def test_map_of_another_model_is_refused(day_map, tmp_path):
    day_map.save(tmp_path / "map")
    with pytest.raises(MapMismatchError, match="model-a.*model-b"):
        KeyframeMap.load(tmp_path / "map", expected_fingerprint="model-b")


def test_unknown_format_version_is_refused(day_map, tmp_path):
    day_map.save(tmp_path / "map")
    manifest_path = tmp_path / "map" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["format_version"] = 99
    manifest_path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(MapFormatError, match="version 99"):
        KeyframeMap.load(tmp_path / "map")


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "index.faiss").write_bytes((root / "index.faiss").read_bytes()[:100]), "corrupt"),
    (lambda root: (root / "keyframes.npz").unlink(), "partial"),
    (lambda root: (root / "manifest.yaml").unlink(), "not a keyframe map"),
    (lambda root: (root / "manifest.yaml").write_text("format: [unclosed"), "not valid YAML"),
])
def test_corrupt_or_partial_map_is_refused(day_map, tmp_path, damage, message):
    day_map.save(tmp_path / "map")
    damage(tmp_path / "map")
    with pytest.raises(MapFormatError, match=message):
        KeyframeMap.load(tmp_path / "map")


def test_counts_that_disagree_are_refused(day_map, tmp_path):
    day_map.save(tmp_path / "map")
    manifest_path = tmp_path / "map" / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["counts"]["keyframes"] = 41
    manifest_path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(MapFormatError, match="inconsistent"):
        KeyframeMap.load(tmp_path / "map")


def test_missing_map_directory_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="build-map"):
        KeyframeMap.load(tmp_path / "nothing")


def test_crash_while_writing_keeps_the_old_map(day_map, tmp_path, monkeypatch):
    day_map.save(tmp_path / "map")
    day_map.add(unit_rows(5, seed=4), day_records(5))

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError, match="simulated"):
        day_map.save(tmp_path / "map")
    assert len(KeyframeMap.load(tmp_path / "map")) == 40
    assert not list(tmp_path.glob(".map.*"))


def test_crash_between_the_two_renames_keeps_the_old_map_loadable(day_map, tmp_path, monkeypatch):
    day_map.save(tmp_path / "map")
    day_map.add(unit_rows(5, seed=4), day_records(5))
    real_replace, calls = os.replace, []

    def replace_then_crash(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("power cut (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace_then_crash)
    with pytest.raises(OSError, match="simulated"):
        day_map.save(tmp_path / "map")
    monkeypatch.setattr(storage.os, "replace", real_replace)
    assert not (tmp_path / "map").exists()
    assert len(KeyframeMap.load(tmp_path / "map")) == 40, "old map is read from where the crash left it"
    day_map.save(tmp_path / "map")
    assert len(KeyframeMap.load(tmp_path / "map")) == 45
    assert not list(tmp_path.glob(".map.*"))


SAVE_FOREVER = textwrap.dedent("""
    import sys, numpy as np
    from vpr_ros.mapping import Keyframe, KeyframeMap
    target, n = sys.argv[1], 20000
    rows = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    kf_map = KeyframeMap.create(64, "m")
    kf_map.add(rows, [Keyframe("day", float(i), thumbnail=bytes(200)) for i in range(n)])
    print("ready", flush=True)
    while True:
        kf_map.save(target)
""")


def test_killed_mid_save_leaves_a_loadable_map(day_map, tmp_path):
    target = tmp_path / "map"
    day_map.save(target)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for delay in (0.05, 0.13, 0.31, 0.47):
        child = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(target)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        assert len(KeyframeMap.load(target)) in (40, 20000)
    day_map.save(target)
    assert len(KeyframeMap.load(target)) == 40
    assert not list(tmp_path.glob(".map.*"))


@pytest.mark.skipif(not gpu_available(), reason="needs faiss-gpu and a CUDA GPU; this machine has neither")
def test_gpu_search_matches_cpu(day_map):
    gpu_map = KeyframeMap.create(DIM, "model-a", use_gpu=True)
    gpu_map.add(unit_rows(40), day_records(40))
    queries = unit_rows(10, seed=5)
    assert np.array_equal(gpu_map.search(queries, 5)[1], day_map.search(queries, 5)[1])
