"""DDP: two CPU processes on gloo train on different query shards and end with identical weights."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from test_training_datasets import write_traversals
from test_training_train import tiny_config
from training.config import config_from_dict
from training.distributed import init_distributed, shutdown_distributed
from training.train import Trainer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, config: dict, out_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    context = init_distributed()
    try:
        trainer = Trainer(config_from_dict(config), context)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        queries = [int(q) for q in iter(trainer.sampler)]
        trainer.fit()
        torch.save({"before": before, "after": trainer.model.state_dict(), "queries": queries,
                    "backend": dist.get_backend()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        shutdown_distributed(context)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="torch.distributed with the gloo backend is not available")
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    walk = write_traversals(tmp_path / "walk", places=12, size=64)
    config = tiny_config(walk, tmp_path / "run", whitening_dim=None)
    mp.spawn(_worker, args=(2, _free_port(), config, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert all(r["backend"] == "gloo" for r in ranks)
    assert not set(ranks[0]["queries"]) & set(ranks[1]["queries"]), "ranks must see different queries"
    changed = [k for k, v in ranks[0]["after"].items() if not torch.equal(v, ranks[0]["before"][k])]
    assert any(k.startswith("netvlad") for k in changed), "training did not update the weights"
    for key, value in ranks[0]["after"].items():
        torch.testing.assert_close(ranks[1]["after"][key], value, rtol=0, atol=1e-6, msg=key)
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
