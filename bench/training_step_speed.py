"""Training step speed with and without the frozen-layer cache, in one run (this CPU).

Builds the Gardens Point recipe (`training/configs/gardens_point_night.yaml`) twice, with
`data.cache_features` on and off, and times the same optimizer steps (4 tuples of query,
positive and 10 hard negatives each) after one descriptor-cache refresh. The cached trainer's
first pass over the images (computing the frozen layers once) is timed apart: it is paid once
per run, the steps every epoch.

    python bench/training_step_speed.py --steps 20
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.config import load_config  # noqa: E402
from training.distributed import DistContext  # noqa: E402
from training.train import Trainer  # noqa: E402

RECIPE = REPO / "training" / "configs" / "gardens_point_night.yaml"


def timed_steps(trainer: Trainer, queries: np.ndarray, batch: int) -> float:
    """Seconds per optimizer step over `queries`, `batch` tuples per step."""
    started = time.perf_counter()
    steps = 0
    for i in range(0, len(queries), batch):
        trainer.step(queries[i:i + batch])
        steps += 1
    return (time.perf_counter() - started) / steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get(
        "VPR_ROS_DATASETS", REPO.parent / "shared" / "datasets")))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ["VPR_ROS_DATASETS"] = str(args.datasets)
    torch.set_num_threads(args.threads)
    results = {}
    for cached in (True, False):
        config = load_config(RECIPE, {"output_dir": "/tmp/vpr_ros_step_speed",
                                      "data": {"cache_features": cached}})
        trainer = Trainer(config, DistContext())
        started = time.perf_counter()
        trainer.refresh_cache()
        refresh = time.perf_counter() - started
        batch = config.optim.batch_size
        queries = trainer.miner.queries[: args.steps * batch]
        results[cached] = (refresh, timed_steps(trainer, queries, batch))
        label = "cached frozen layers" if cached else "full network"
        print(f"{label:<22} first cache refresh {refresh:6.1f} s ({trainer.train_set.num_db} db + "
              f"{trainer.train_set.num_queries} query images), {results[cached][1] * 1000:7.0f} ms "
              f"per step", flush=True)
    print(f"step speed-up with the cache: x{results[False][1] / results[True][1]:.1f} "
          f"({args.threads} thread(s), {args.steps} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
