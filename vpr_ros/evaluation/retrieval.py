"""Exact cosine retrieval of query descriptors in a database: what Recall@N is computed on."""
from typing import Tuple

import faiss
import numpy as np


def search_cosine(db: np.ndarray, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(scores (Q, k), database ids (Q, k)), best first, for L2-normalized rows.

    When the database has fewer than k rows the missing places hold id −1 and score −inf, so
    Recall@N is defined (as a miss) for any N ≤ k.
    """
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(np.ascontiguousarray(db, dtype=np.float32))
    found = min(k, len(db))
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), found)
    if found < k:
        ids = np.pad(ids, ((0, 0), (0, k - found)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, k - found)), constant_values=-np.inf)
    return scores, ids
