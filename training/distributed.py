"""torch.distributed plumbing for `torchrun` launches: process group, rank helpers, gathering.

Launched by `torchrun --nproc_per_node N -m training.train ...`, each process reads RANK,
WORLD_SIZE and LOCAL_RANK from the environment; without them training runs as one process.
Backend: NCCL when CUDA is available, else gloo (CPU).
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistContext:
    """Join the process group torchrun set up (a no-op single-process context otherwise)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, device)


def shutdown_distributed(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def shard(count: int, context: DistContext) -> np.ndarray:
    """Indices 0..count-1 that this rank handles (strided, like DistributedSampler without shuffle)."""
    return np.arange(context.rank, count, context.world_size)


def gather_sharded_rows(local: np.ndarray, count: int, context: DistContext) -> np.ndarray:
    """Reassemble a (count, D) array whose rows `shard()` split over ranks; every rank gets it all."""
    if not context.enabled:
        return local
    per_rank = -(-count // context.world_size)
    padded = torch.zeros((per_rank, local.shape[1]), dtype=torch.float32, device=context.device)
    padded[: len(local)] = torch.from_numpy(np.ascontiguousarray(local, dtype=np.float32))
    parts = [torch.empty_like(padded) for _ in range(context.world_size)]
    dist.all_gather(parts, padded)
    full = np.empty((count, local.shape[1]), dtype=np.float32)
    for rank, part in enumerate(parts):
        rows = np.arange(rank, count, context.world_size)
        full[rows] = part[: len(rows)].cpu().numpy()
    return full


def all_reduce_mean(value: float, context: DistContext) -> float:
    """Mean of a scalar over ranks (loss logging)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size
