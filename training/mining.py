"""Hard-negative mining on cached descriptors, as in NetVLAD (Arandjelović et al.) and SARE.

For each query: the positive is the true positive nearest in feature space; the negatives are the
`negatives_kept` nearest (hardest) among `negatives_sampled` random true negatives plus the hardest
ones found for that query last time. Descriptors come from a cache the trainer refreshes every
so many queries, so mining never runs the network on thousands of images per tuple.
"""
import logging
from typing import Dict, Optional, Tuple

import numpy as np

from training.datasets import PlaceSet

log = logging.getLogger(__name__)


class HardNegativeMiner:
    """Chooses (positive, hard negatives) for each query of a `PlaceSet` from cached descriptors."""

    def __init__(self, places: PlaceSet, negatives_sampled: int = 1000, negatives_kept: int = 10,
                 seed: int = 0):
        if negatives_kept < 1 or negatives_sampled < negatives_kept:
            raise ValueError(f"need 1 <= negatives_kept ({negatives_kept}) <= negatives_sampled "
                             f"({negatives_sampled})")
        self.places = places
        self.negatives_sampled = negatives_sampled
        self.negatives_kept = negatives_kept
        self.positives = places.train_positives()
        self._non_negatives = places.non_negatives()
        usable = [q for q in range(places.num_queries)
                  if len(self.positives[q]) and places.num_db - len(self._non_negatives[q])
                  >= negatives_kept]
        if not usable:
            raise ValueError(f"{places.name}: no query has a positive within {places.pos_radius} "
                             f"{places.unit} and {negatives_kept} negatives beyond "
                             f"{places.neg_radius} {places.unit}; check the radii and positions")
        if len(usable) < places.num_queries:
            log.info("%s: %d of %d queries lack a positive or enough negatives and are skipped",
                     places.name, places.num_queries - len(usable), places.num_queries)
        self.queries = np.asarray(usable, dtype=np.int64)
        self._rng = np.random.default_rng(seed)
        self._previous_hard: Dict[int, np.ndarray] = {}
        self._db_desc: Optional[np.ndarray] = None
        self._query_desc: Optional[np.ndarray] = None

    def update_cache(self, db_descriptors: np.ndarray, query_descriptors: np.ndarray) -> None:
        """Install freshly computed L2-normalized descriptors (rows follow the `PlaceSet` order)."""
        if len(db_descriptors) != self.places.num_db or \
                len(query_descriptors) != self.places.num_queries:
            raise ValueError(f"descriptor cache has {len(db_descriptors)} db / "
                             f"{len(query_descriptors)} query rows, expected "
                             f"{self.places.num_db} / {self.places.num_queries}")
        self._db_desc = np.asarray(db_descriptors, dtype=np.float32)
        self._query_desc = np.asarray(query_descriptors, dtype=np.float32)

    def _distances(self, query: int, db_ids: np.ndarray) -> np.ndarray:
        diff = self._db_desc[db_ids] - self._query_desc[query]
        return np.einsum("ij,ij->i", diff, diff)

    def mine(self, query: int) -> Tuple[int, np.ndarray]:
        """(positive db id, hardest negative db ids nearest first) for `query`."""
        if self._db_desc is None:
            raise RuntimeError("mine() before update_cache(): compute the descriptor cache first")
        positives = self.positives[query]
        positive = int(positives[np.argmin(self._distances(query, positives))])
        pool = np.setdiff1d(np.arange(self.places.num_db), self._non_negatives[query],
                            assume_unique=True)
        sample = self._rng.choice(pool, size=min(self.negatives_sampled, len(pool)), replace=False)
        candidates = np.union1d(sample, self._previous_hard.get(query, sample[:0]))
        nearest = np.argsort(self._distances(query, candidates), kind="stable")
        hard = candidates[nearest[: self.negatives_kept]]
        self._previous_hard[query] = hard
        return positive, hard

    def state_dict(self) -> dict:
        """The hard negatives remembered per query and the RNG, so a resumed run mines the same way."""
        return {"previous_hard": dict(self._previous_hard), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self._previous_hard = {int(k): np.asarray(v) for k, v in state["previous_hard"].items()}
        self._rng.bit_generator.state = state["rng"]
