"""Compressed-index training off the image worker: the add that makes an ivfpq map due for
training returns at once, the map stays exact and searchable meanwhile, and the index swapped in
is the one inline training would have built, with the keyframes added during training."""
import threading

import numpy as np

from ros_harness import wait_for
from test_mapping import one_faiss_thread  # noqa: F401  (one thread: k-means trains alike)
from vpr_ros.mapping import KeyframeMap
from vpr_ros.mapping.index import VectorIndex
from vpr_ros.mapping.records import Keyframe
from vpr_ros.ros.index_training import BackgroundIndexTraining

DIM = 32
BASIS = np.linalg.qr(np.random.default_rng(0).standard_normal((DIM, 4)))[0]


def _unit_rows(count, seed):
    """Descriptors in a 4-D subspace, which the map's 4-axis projection keeps whole."""
    rows = (np.random.default_rng(seed).standard_normal((count, 4)) @ BASIS.T).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _add(keyframe_map, rows):
    records = [Keyframe("s", float(len(keyframe_map) + i), "camera") for i in range(len(rows))]
    return keyframe_map.add(rows, records)


def _small_ivfpq_map():
    return KeyframeMap.create(DIM, "fingerprint", index="ivfpq", nlist=16, pq_m=2, pca_dim=4)


def test_training_runs_beside_the_adds_and_keeps_what_came_meanwhile(one_faiss_thread):
    keyframe_map = _small_ivfpq_map()
    train_at = keyframe_map.index_spec.train_at             # 39 x 256 for 8-bit PQ
    first, during = _unit_rows(train_at, 0), _unit_rows(50, 1)
    lock = threading.Lock()
    training = BackgroundIndexTraining(keyframe_map, lock)
    _add(keyframe_map, first[:-1])
    with lock:                                              # as the image worker holds it
        _add(keyframe_map, first[-1:])                      # training is due now
        assert training.running and not keyframe_map.manifest()["index"]["trained"]
    assert wait_for(lambda: training.trained_on, 30.0) == train_at
    with lock:                                              # frames go on while it trains
        _add(keyframe_map, during)
        assert training.running, "training a copy takes longer than 50 adds"
        scores, ids = keyframe_map.search(during[:3], 1)
        assert ids[:, 0].tolist() == list(range(train_at, train_at + 3)), "exact meanwhile"
    training.join(timeout=300)
    assert not training.running and training.failure == ""
    assert keyframe_map.manifest()["index"]["trained"]
    assert len(keyframe_map) == keyframe_map.manifest()["counts"]["indexed"] == train_at + 50

    inline = _small_ivfpq_map()                             # the same adds, trained inline
    _add(inline, first)
    _add(inline, during)
    assert inline.manifest()["index"]["trained"]
    np.testing.assert_array_equal(keyframe_map.search(during, 10)[1], inline.search(during, 10)[1])
    np.testing.assert_allclose(keyframe_map.descriptors(range(train_at, train_at + 50)),
                               inline.descriptors(range(train_at, train_at + 50)), atol=1e-6)


def test_exact_and_already_trained_maps_are_left_alone():
    flat = KeyframeMap.create(DIM, "fingerprint")
    training = BackgroundIndexTraining(flat, threading.Lock())
    _add(flat, _unit_rows(10, 2))
    assert not training.running and "_train_ivfpq" not in vars(flat._index)


def test_a_failed_training_leaves_the_map_exact_and_is_not_retried_at_every_add(monkeypatch):
    def fail(index):
        raise RuntimeError("k-means ran out of memory")

    monkeypatch.setattr(VectorIndex, "_train_ivfpq", fail)
    keyframe_map = _small_ivfpq_map()
    training = BackgroundIndexTraining(keyframe_map, threading.Lock())
    _add(keyframe_map, _unit_rows(keyframe_map.index_spec.train_at, 0))
    training.join(timeout=60)
    assert "out of memory" in training.failure and not training.running
    failed = training._thread
    _add(keyframe_map, _unit_rows(5, 1))
    assert training._thread is failed, "no second training thread"
    assert not keyframe_map.manifest()["index"]["trained"]
    newest = list(range(len(keyframe_map) - 5, len(keyframe_map)))
    assert keyframe_map.search(_unit_rows(5, 1), 1)[1][:, 0].tolist() == newest
