"""Descriptors for a `PlaceSet` and its Recall@N.

Retrieval and recall are `vpr_ros.evaluation` code, the same that `vpr-ros eval` reports with.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from training.datasets import PlaceSet
from training.distributed import DistContext, gather_sharded_rows, shard
from training.images import ImageStore
from vpr_ros.evaluation.metrics import first_match_rank, recall_from_ranks
from vpr_ros.evaluation.retrieval import search_cosine


@torch.no_grad()
def embed_paths(model: torch.nn.Module, store: ImageStore, paths: Sequence, batch_size: int,
                context: DistContext, desc: str = "embed") -> np.ndarray:
    """(len(paths), dim) float32 descriptors; under DDP each rank embeds a shard, all get all rows.

    `store` is an `ImageStore` or a `PrefixStore`: its `start` says where in the model its
    batches enter."""
    was_training = model.training
    model.eval()
    mine = shard(len(paths), context)
    rows: List[np.ndarray] = []
    for start in tqdm(range(0, len(mine), batch_size), desc=desc, unit="batch", leave=False,
                      disable=not context.is_main):
        batch = store.batch([paths[i] for i in mine[start:start + batch_size]])
        rows.append(model.forward_from(batch.to(context.device), store.start).float().cpu().numpy())
    model.train(was_training)
    dim = rows[0].shape[1] if rows else _output_dim(model, store, paths, context)
    local = np.concatenate(rows) if rows else np.zeros((0, dim), np.float32)
    return gather_sharded_rows(local, len(paths), context)


def _output_dim(model, store, paths, context) -> int:
    """Descriptor width for a rank that got no images (more ranks than images)."""
    return int(model.forward_from(store.batch([paths[0]]).to(context.device), store.start).shape[1])


def evaluate_recall(model: torch.nn.Module, places: PlaceSet, store: ImageStore, ns: Sequence[int],
                    batch_size: int, context: DistContext) -> Tuple[Dict[int, float], np.ndarray]:
    """Recall@N of `model` on `places` (database = places.db_images, queries = places.query_images)
    and each query's 1-based rank of its first correct match within the top max(ns) (0: none)."""
    db = embed_paths(model, store, places.db_images, batch_size, context, desc="val db")
    queries = embed_paths(model, store, places.query_images, batch_size, context, desc="val queries")
    _, ranked = search_cosine(db, queries, max(ns))
    first = first_match_rank(ranked, places.eval_positives())
    return recall_from_ranks(first, ns), first
