"""Compressed-index training off the image worker (ROS-free).

An `ivfpq` or `auto` map holds an exact index until it reaches `IndexSpec.train_at` keyframes
(50 000 for auto), then `VectorIndex.add` trains IVF-PQ on everything it holds and moves it over:
seconds to minutes of k-means inside the add, so inside the node's image worker, which would
stop processing frames for that long. `BackgroundIndexTraining` takes that step out of the add:

1. the add that reaches `train_at` only starts a training thread (the map stays exact and
   searchable);
2. the thread copies the exact index under the engine lock (a memory copy), trains the copy
   without the lock while frames go on, and
3. under the lock again adds to the trained copy the keyframes that came meanwhile and swaps it
   in: what a search sees changes between two frames, never inside one.

It relies on two internals of vpr_ros.mapping (`KeyframeMap._index`, `VectorIndex._train_ivfpq`,
which the add calls when training is due); test_index_training.py pins them down.
"""
import logging
import threading
from typing import Optional

import faiss
import numpy as np

from vpr_ros.mapping.index import VectorIndex
from vpr_ros.mapping.keyframe_map import KeyframeMap

LOG = logging.getLogger(__name__)


class BackgroundIndexTraining:
    """Defers the IVF-PQ training of `keyframe_map` to a thread; `lock` guards the map."""

    def __init__(self, keyframe_map: KeyframeMap, lock: threading.Lock):
        self._live: VectorIndex = keyframe_map._index
        self._lock = lock
        self._thread: Optional[threading.Thread] = None
        self.trained_on = 0
        """Keyframes in the copy being trained (0 until the thread has taken it)."""
        self.failure = ""
        if self._live.spec.compresses and not self._live.trained:
            self._live._train_ivfpq = self._start     # what the add calls once training is due

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _start(self) -> None:
        """Called by VectorIndex.add (under the engine lock) instead of training inline; after a
        failed training the map stays exact instead of cloning and training again at every add."""
        if not self.running and not self.failure:
            self._thread = threading.Thread(target=self._train, name="vpr_index_training",
                                            daemon=True)
            self._thread.start()

    def _train(self) -> None:
        live = self._live
        with self._lock:
            copy = VectorIndex(live.dim, live.spec, faiss.clone_index(live.index))
            count = self.trained_on = copy.ntotal
        LOG.info("training the compressed index on %d keyframes in the background", count)
        try:
            VectorIndex._train_ivfpq(copy)
        except (RuntimeError, ValueError) as err:   # the map stays exact and keeps working
            self.failure = f"{type(err).__name__}: {err}"
            LOG.error("compressed-index training failed, the map stays exact: %s", self.failure)
            return
        with self._lock:
            added = live.ntotal - count
            if added:                                # an IVF-PQ map holds ids 0..N-1 in order
                copy.add(live.index.index.reconstruct_n(count, added), np.arange(count, count + added))
            live.index = copy.index                  # its search settings applied by the training
            live._gpu_index = None
            del live._train_ivfpq
        LOG.info("compressed index in use: %s (%d keyframes came during training)",
                 live.describe(), added)
