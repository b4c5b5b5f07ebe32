"""Fine-tune the vpr_ros model with SARE (or triplet / contrastive) loss on your own places.

    vpr-train --config training/configs/gardens_point_night.yaml
    python -m training.train --config CONFIG [--resume RUN_DIR/last.pt]
    torchrun --nproc_per_node 2 -m training.train --config CONFIG      # DDP (gloo on CPU)

Writes into `output_dir`: `last.pt` (resumable state), `best.pt` (best validation Recall@N),
`model.pt` (the kept epoch's weights + PCA-whitening: what `vpr-ros eval` and the node load),
`epochs.csv`, `val_queries.csv` (per validation query and epoch, the rank of its first correct
match), `steps.csv` and, when TensorBoard is installed, event files.
"""
import argparse
import csv
import logging
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from training.config import TrainConfig, load_config, to_dict
from training.datasets import concat_place_sets, open_place_set
from training.distributed import (DistContext, all_reduce_mean, barrier, init_distributed,
                                  shutdown_distributed)
from training.evaluation import embed_paths, evaluate_recall
from training.images import ImageStore, PrefixStore
from training.losses import build_loss
from training.mining import HardNegativeMiner
from vpr_ros.io.images import read_image
from vpr_ros.model import ModelConfig, VPRModel, build_model
from vpr_ros.model.checkpoint import load_checkpoint, save_checkpoint
from vpr_ros.model.clustering import init_netvlad
from vpr_ros.model.whitening import fit_pca_whitening
from vpr_ros.runtime.preprocess import target_size

log = logging.getLogger("training")


def set_trainable(model: VPRModel, trainable_blocks: int) -> List[nn.Parameter]:
    """Freeze the backbone except its last `trainable_blocks` trunk modules; NetVLAD stays trainable.

    BatchNorm layers keep their ImageNet running statistics (see `freeze_batchnorm_stats`): a
    batch of a few tuples is too small and too correlated to re-estimate them.
    """
    for param in model.parameters():
        param.requires_grad_(False)
    trunk = model.backbone.trunk()
    if not 0 <= trainable_blocks <= len(trunk):
        raise ValueError(f"optim.trainable_blocks must be in 0..{len(trunk)}, got {trainable_blocks}")
    trainable = [model.netvlad] + ([model.reduce] if model.reduce is not None else [])
    trainable += trunk[len(trunk) - trainable_blocks:]
    for module in trainable:
        for param in module.parameters():
            param.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


class FromTrunk(nn.Module):
    """`model` fed at backbone trunk module `start` (the frozen layers' outputs), as one module
    that DistributedDataParallel can wrap."""

    def __init__(self, model: VPRModel, start: int):
        super().__init__()
        self.model = model
        self.start = start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_from(x, self.start)


def freeze_batchnorm_stats(model: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics fixed, affine weights still learnable)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


class Trainer:
    """One training run: data, model, optimizer, mining, evaluation and checkpoints.

    `feature_cache` (a dict) shares the frozen layers' outputs between runs of one process, as a
    benchmark of several seeds does (see `training.images.PrefixStore`).
    """

    def __init__(self, config: TrainConfig, context: DistContext, resume: Optional[Path] = None,
                 feature_cache: Optional[dict] = None):
        self.config = config
        self.context = context
        self.out_dir = Path(config.output_dir)
        torch.manual_seed(config.seed)
        self.train_parts = [open_place_set(spec, config.seed) for spec in config.data.train]
        self.train_set = concat_place_sets(self.train_parts)
        self.val_sets = [open_place_set(spec, config.seed) for spec in config.data.val]
        self._check_whitening_dim()
        self.miner = HardNegativeMiner(self.train_set, config.mining.negatives_sampled,
                                       config.mining.negatives_kept, seed=config.seed + context.rank)
        resume_state = self._load_model(resume)
        self.model.to(context.device)
        first = read_image(self.train_set.db_images[0])
        self.store = ImageStore(target_size(first.shape[0], first.shape[1],
                                            self.model.config.image_long_side),
                                cache=config.data.cache_images)
        params = set_trainable(self.model, config.optim.trainable_blocks)
        frozen = len(self.model.backbone.trunk()) - config.optim.trainable_blocks
        self.inputs = (PrefixStore(self.store, self.model.backbone, frozen, feature_cache)
                       if config.data.cache_features and frozen > 0 else self.store)
        tail = FromTrunk(self.model, self.inputs.start)
        self.net = DistributedDataParallel(tail) if context.enabled else tail
        self.optimizer = torch.optim.SGD(params, lr=config.optim.lr, momentum=config.optim.momentum,
                                         weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.optim.lr_step_epochs,
                                                         gamma=config.optim.lr_gamma)
        self.loss_fn = build_loss(config.loss.name, config.loss.kernel, config.loss.margin)
        self.sampler = DistributedSampler(range(len(self.miner.queries)),
                                          num_replicas=context.world_size, rank=context.rank,
                                          shuffle=True, seed=config.seed)
        self.start_epoch = 0
        self.best_recall = -1.0
        if resume_state:
            self.optimizer.load_state_dict(resume_state["optimizer"])
            self.scheduler.load_state_dict(resume_state["scheduler"])
            self.miner.load_state_dict(resume_state["miner"])
            self.start_epoch = int(resume_state["next_epoch"])
            self.best_recall = float(resume_state["best_recall"])
            log.info("resumed from %s at epoch %d (best R@%d %.3f)", resume, self.start_epoch + 1,
                     config.select_by_recall_at, self.best_recall)
        self.tensorboard = self._open_tensorboard()

    def _check_whitening_dim(self) -> None:
        dim, available = self.config.whitening_dim, min(self.train_set.num_db,
                                                        self.config.whitening_max_images)
        if dim is not None and dim > available - 1:
            raise ValueError(f"whitening_dim {dim} needs at least {dim + 1} training images, "
                             f"the training database has {available}; lower whitening_dim "
                             f"or set it to null")

    def _load_model(self, resume: Optional[Path]) -> Optional[dict]:
        """Model from the resume state, an initial checkpoint, or off-the-shelf (k-means NetVLAD)."""
        if resume is not None:
            self.model, extra = load_checkpoint(resume, with_extra=True)
            if extra.get("kind") != "training_state":
                raise ValueError(f"{resume} is not a training state; resume from the run's last.pt")
            return extra
        if self.config.init_checkpoint:
            self.model = load_checkpoint(self.config.init_checkpoint)
        else:
            self.model = build_model(ModelConfig.from_dict(self.config.model))
            init_netvlad(self.model, (read_image(p) for p in self._cluster_images()),
                         seed=self.config.seed)
        if self.model.whitening is not None:
            log.info("dropping the loaded PCA-whitening: training works on NetVLAD descriptors "
                     "and a new whitening is fitted at the end")
            self.model.whitening = None
            self.model.config.whitening_dim = None
        return None

    def _cluster_images(self) -> List[Path]:
        """`cluster_images` database images split equally between the training sets, so a
        large set does not decide the clusters alone; each set's share spread evenly over it."""
        share = max(1, self.config.cluster_images // len(self.train_parts))
        chosen = []
        for places in self.train_parts:
            picks = np.linspace(0, places.num_db - 1, min(share, places.num_db)).round()
            chosen += [places.db_images[i] for i in picks.astype(np.int64)]   # distinct: steps >= 1
        return chosen

    def _open_tensorboard(self):
        if not self.context.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def refresh_cache(self) -> None:
        """Recompute descriptors of every training image for mining (shared across ranks)."""
        places, batch = self.train_set, self.config.embed_batch_size
        db = embed_paths(self.model, self.inputs, places.db_images, batch, self.context, "cache db")
        if places.query_images == places.db_images:
            queries = db
        else:
            queries = embed_paths(self.model, self.inputs, places.query_images, batch, self.context,
                                  "cache queries")
        self.miner.update_cache(db, queries)

    def step(self, queries: np.ndarray) -> float:
        """One optimizer step on the tuples mined for `queries`; returns the loss before the step."""
        places = self.train_set
        q_paths, p_paths, n_paths = [], [], []
        for query in queries:
            positive, negatives = self.miner.mine(int(query))
            q_paths.append(places.query_images[query])
            p_paths.append(places.db_images[positive])
            n_paths += [places.db_images[n] for n in negatives]
        inputs = self.inputs.batch(q_paths + p_paths + n_paths).to(self.context.device)
        self.net.train()
        freeze_batchnorm_stats(self.model)
        out = self.net(inputs)
        b = len(queries)
        loss = self.loss_fn(out[:b], out[b:2 * b], out[2 * b:].reshape(b, -1, out.shape[1]))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def train_epoch(self, epoch: int) -> float:
        """One pass over the (sharded, shuffled) training queries, refreshing the cache as it goes."""
        self.sampler.set_epoch(epoch)
        order = self.miner.queries[np.fromiter(iter(self.sampler), dtype=np.int64)]
        refresh = max(1, math.ceil(self.config.mining.cache_refresh_queries / self.context.world_size))
        batch = self.config.optim.batch_size
        losses = []
        progress = tqdm(total=len(order), desc=f"epoch {epoch + 1}", unit="query",
                        disable=not self.context.is_main)
        for start in range(0, len(order), refresh):
            self.refresh_cache()
            chunk = order[start:start + refresh]
            for i in range(0, len(chunk), batch):
                loss = self.step(chunk[i:i + batch])
                losses.append(loss)
                self._log_step(epoch, len(losses), loss)
                progress.update(len(chunk[i:i + batch]))
                progress.set_postfix(loss=f"{loss:.4f}")
        progress.close()
        return all_reduce_mean(float(np.mean(losses)) if losses else float("nan"), self.context)

    def _log_step(self, epoch: int, step: int, loss: float) -> None:
        if self.context.is_main:
            _append_csv(self.out_dir / "steps.csv", {"epoch": epoch + 1, "step": step, "loss": loss})

    def _state(self, next_epoch: int) -> Dict:
        return {"kind": "training_state", "next_epoch": next_epoch,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "miner": _plain_miner_state(self.miner.state_dict()),
                "best_recall": self.best_recall, "train_config": to_dict(self.config)}

    def save_state(self, next_epoch: int) -> None:
        if self.context.is_main:
            save_checkpoint(self.out_dir / "last.pt", self.model, extra=self._state(next_epoch))

    def evaluate(self, model: Optional[VPRModel] = None,
                 epoch: Optional[int] = None) -> Dict[int, float]:
        """Recall@N of `model` (default: the one training), averaged over the validation sets.

        With `epoch`, each validation query's rank of its first correct match goes to
        `val_queries.csv`, so two runs can be compared query by query (training.compare)."""
        if not self.val_sets:
            return {}
        per_set = [evaluate_recall(model or self.model, places, self.inputs, self.config.recall_ns,
                                   self.config.embed_batch_size, self.context)
                   for places in self.val_sets]
        if self.context.is_main:
            if len(per_set) > 1:
                for places, (recall, _) in zip(self.val_sets, per_set):
                    log.info("  %s: %s", places.name, _fmt(recall))
            if epoch is not None:
                _append_csv(self.out_dir / "val_queries.csv", [
                    {"epoch": epoch, "set": number, "name": places.name, "query": query,
                     "first_match": int(rank)}
                    for number, (places, (_, ranks)) in enumerate(zip(self.val_sets, per_set))
                    for query, rank in enumerate(ranks)])
        return {n: float(np.mean([r[n] for r, _ in per_set])) for n in self.config.recall_ns}

    def fit(self) -> Dict[int, float]:
        """Train all remaining epochs, keeping `best.pt` by validation recall (`select_epoch:
        best`); returns the recall of the epoch kept."""
        config, n_sel = self.config, self.config.select_by_recall_at
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.start_epoch == 0:                # a fresh run's logs, not appended to old ones
                for log_name in ("epochs.csv", "steps.csv", "val_queries.csv"):
                    (self.out_dir / log_name).unlink(missing_ok=True)
        if self.start_epoch == 0:
            recall = self.evaluate(epoch=0)
            if self.context.is_main:
                log.info("before training: %s", _fmt(recall))
                self._log_epoch(0, float("nan"), recall, 0.0)
        best = {}
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, config.optim.epochs):
                started = time.monotonic()
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self.train_epoch(epoch)
                self.scheduler.step()
                recall = self.evaluate(epoch=epoch + 1)
                if config.select_epoch == "last":
                    best = recall
                elif recall[n_sel] > self.best_recall:
                    self.best_recall, best = recall[n_sel], recall
                    if self.context.is_main:
                        save_checkpoint(self.out_dir / "best.pt", self.model,
                                        extra={"epoch": epoch + 1, "recall": _plain(recall),
                                               "train_config": to_dict(config)})
                self.save_state(epoch + 1)
                if self.context.is_main:
                    self._log_epoch(epoch + 1, loss, recall, time.monotonic() - started, lr)
                    log.info("epoch %d/%d: loss %.4f, %s", epoch + 1, config.optim.epochs, loss,
                             _fmt(recall))
                barrier(self.context)
        except KeyboardInterrupt:
            self.save_state(epoch)
            log.warning("interrupted in epoch %d; state saved to %s (resume with --resume; the "
                        "epoch restarts from the weights reached)", epoch + 1,
                        self.out_dir / "last.pt")
            raise
        return best

    def _log_epoch(self, epoch: int, loss: float, recall: Dict[int, float], seconds: float,
                   lr: float = float("nan")) -> None:
        row = {"epoch": epoch, "lr": lr, "train_loss": loss,
               **{f"recall@{n}": r for n, r in recall.items()}, "seconds": round(seconds, 1)}
        _append_csv(self.out_dir / "epochs.csv", row)
        if self.tensorboard is not None:
            if not math.isnan(loss):
                self.tensorboard.add_scalar("train/loss", loss, epoch)
            for n, r in recall.items():
                self.tensorboard.add_scalar(f"val/recall@{n}", r, epoch)
            self.tensorboard.flush()

    def finalize(self) -> Optional[Path]:
        """The kept epoch's weights (best.pt, or last.pt with `select_epoch: last`) +
        PCA-whitening fitted on training descriptors → `model.pt` (main rank)."""
        kept = self.out_dir / ("last.pt" if self.config.select_epoch == "last" else "best.pt")
        if not kept.is_file():
            log.warning("no %s in %s: nothing to finalize", kept.name, self.out_dir)
            return None
        model = load_checkpoint(kept).to(self.context.device)
        if self.config.whitening_dim:
            paths = self.train_set.db_images
            step = max(1, len(paths) // self.config.whitening_max_images)
            descriptors = embed_paths(model, self.inputs, paths[::step],
                                      self.config.embed_batch_size, self.context, "whitening")
            mean, projection = fit_pca_whitening(descriptors, self.config.whitening_dim)
            model.set_whitening(mean, projection)
        recall = self.evaluate(model)
        final = self.out_dir / "model.pt"
        if self.context.is_main:
            save_checkpoint(final, model, extra={"recall": _plain(recall),
                                                 "train_config": to_dict(self.config)})
            log.info("final model (whitening %s): %s -> %s", self.config.whitening_dim,
                     _fmt(recall), final)
        return final


def _plain(recall: Dict[int, float]) -> Dict[int, float]:
    return {int(n): float(r) for n, r in recall.items()}


def _plain_miner_state(state: dict) -> dict:
    """Miner state with numpy arrays as lists: checkpoints are read with weights_only=True."""
    return {"previous_hard": {int(q): [int(i) for i in ids]
                              for q, ids in state["previous_hard"].items()},
            "rng": state["rng"]}


def _fmt(recall: Dict[int, float]) -> str:
    return ", ".join(f"R@{n} {r:.3f}" for n, r in recall.items())


def _append_csv(path: Path, rows) -> None:
    """Append a row (dict) or a list of rows with the same keys, writing the header once."""
    rows = [rows] if isinstance(rows, dict) else rows
    if not rows:
        return
    new = not path.is_file()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpr-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="training YAML")
    parser.add_argument("--resume", type=Path, help="last.pt of an interrupted run (or its folder)")
    parser.add_argument("--output-dir", help="override output_dir from the config")
    parser.add_argument("--epochs", type=int, help="override optim.epochs")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv=None) -> int:
    """Entry point of `vpr-train` and `python -m training.train`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    overrides: dict = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.epochs is not None:
        overrides["optim"] = {"epochs": args.epochs}
    context = init_distributed()
    try:
        config = load_config(args.config, overrides)
        if config.threads:
            torch.set_num_threads(config.threads)
        resume = args.resume
        if resume is not None and resume.is_dir():
            resume = resume / "last.pt"
        trainer = Trainer(config, context, resume)
        trainer.fit()
        trainer.finalize()
    except (ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        shutdown_distributed(context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
