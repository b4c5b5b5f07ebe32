"""Benchmark: which fine-tuning recipe helps from day to night, chosen by k-fold validation on
the training places, then tested once on held-out places.

Two stages, two commands, so the test is read only after the recipe is fixed:

    python bench/train_gardens_point.py validate         # k-fold choice (2.2 h here, 1 thread)
    # write the printed choice into training/configs/gardens_point_night.yaml, then:
    python bench/train_gardens_point.py test             # the recipe, 3 seeds, places 100-199 (10 min)
    python bench/train_gardens_point.py validate --quick # the same protocol in miniature

Validation (`validate`), fixed before any run:
- Gardens Point places 0-99 in 4 contiguous folds of 25, Nordland frames 0-249 in 4 folds alike.
  Fold f's model trains on the other places, less 2 on each side of the fold (the ±2 frames
  that count as the same place): day_left + day_right database, night_right queries (+ synthetic
  renderings), and Nordland summer database / winter queries.
- Every epoch it is scored on the fold's places: Gardens Point night_right queries searched in
  the day_right and in the day_left images of all places 0-99 (a 100-place map, as the test's),
  Nordland winter queries in summer 0-249 (±1 frame). The training places are in that map as
  distractors only: no validation query has a training place within ±2.
- Candidates: loss {SARE-joint, SARE-ind, triplet} × synthetic night renderings {0, 2} × epochs
  1-5 (constant learning rate, so epoch e of a 5-epoch run is an e-epoch run). One seed per fold
  (seed = fold), the same for every candidate, so candidates share starts, renderings and
  queries. Beside them, on the same queries: the off-the-shelf model fitted on each pair's map
  (places 0-99, k-means seed = fold), as `vpr-ros eval` builds it, and the start of training
  (fitted on the fold's training images: epoch 0).
- Rule: the candidate with the highest mean R@1 over the 200 Gardens Point validation queries
  (100 places × 2 pairs) is the recipe (ties: fewer epochs, then the order above). Nordland is
  reported, not used: its 64×32 frames are not what a robot's camera sees.
- Intervals: a paired block bootstrap over Gardens Point places (both pairs of a place together,
  blocks of 5 consecutive places, 10 000 resamples, 95 % percentile), the same resampled places
  for every candidate, so the interval of a difference cancels what the places have in common.
  It holds the trained models fixed; the spread of the per-fold differences shows the training
  noise beside it.

Test (`test`): the recipe in --config with its loss, synthetic night and epochs, trained on all
places 0-99 and Nordland 0-249 (`select_epoch: last`) for seeds 0, 1, 2, scored once with the
full network on images on places 100-199 (100 night_right queries against day_right and against
day_left, ±2): single-image R@1 and the sequence decision the robot uses (engine defaults,
`vpr_ros.evaluation.sequence_retrieval`: R@1 and R@100P), beside the off-the-shelf model fitted
on the test map (k-means seed = seed) and the recipe's start. Trained models are kept and reused,
so a rerun rescores them with the current sequence matcher.

Writes into --out: validate/validation.csv, validate/effects.csv, validate/choice.json and
validate/validation.png; test/test.csv, test/test_summary.csv and test/test.png; the runs' folders.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backbones import write_csv  # noqa: E402
from training.compare import block_bootstrap_means, interval, read_val_queries  # noqa: E402
from training.config import DatasetSpec, TrainConfig, load_config, to_dict  # noqa: E402
from training.datasets import open_place_set  # noqa: E402
from training.distributed import DistContext  # noqa: E402
from training.evaluation import embed_paths, evaluate_recall  # noqa: E402
from training.images import ImageStore, PrefixStore  # noqa: E402
from training.train import Trainer  # noqa: E402
from vpr_ros.evaluation.ground_truth import positives_by_tolerance  # noqa: E402
from vpr_ros.evaluation.plots import save_figure  # noqa: E402
from vpr_ros.evaluation.run import ranking_metrics, score_retrieval  # noqa: E402
from vpr_ros.evaluation.sequence_retrieval import sequence_ranking  # noqa: E402
from vpr_ros.io.atomic import atomic_write_text  # noqa: E402
from vpr_ros.io.images import read_image  # noqa: E402
from vpr_ros.localization import EngineConfig  # noqa: E402
from vpr_ros.model import ModelConfig  # noqa: E402
from vpr_ros.model.checkpoint import load_checkpoint, read_checkpoint  # noqa: E402
from vpr_ros.model.clustering import build_offtheshelf_model  # noqa: E402
from vpr_ros.runtime.preprocess import target_size  # noqa: E402

RECIPE = REPO / "training" / "configs" / "gardens_point_night.yaml"
PAIRS = (("day_right", "night_right"), ("day_left", "night_right"))
PAIR_NAMES = tuple(f"{db}->{q}" for db, q in PAIRS)
OFF_THE_SHELF = "off-the-shelf (map-fitted)"
START = "start of training (fitted on training images)"
BLOCK = 5


@dataclass(frozen=True)
class Protocol:
    """Which places play which part (Gardens Point places, Nordland frames) and what is tried."""

    places: int = 100                       # Gardens Point places 0..places-1: k-fold
    test: Tuple[int, int] = (100, 200)      # held-out Gardens Point places
    nordland: int = 250                     # Nordland frames 0..nordland-1: k-fold
    folds: int = 4
    buffer: int = 2                         # places left out of training on each side of a fold
    epochs: int = 5
    losses: Tuple[str, ...] = ("sare_joint", "sare_individual", "triplet")
    synthetic: Tuple[int, ...] = (0, 2)
    seeds: Tuple[int, ...] = (0, 1, 2)      # test seeds

    def candidates(self) -> List[Tuple[str, int]]:
        return [(loss, synthetic) for synthetic in self.synthetic for loss in self.losses]


FULL = Protocol()
QUICK = Protocol(places=16, test=(100, 112), nordland=16, folds=2, epochs=2,
                 losses=("sare_individual",), seeds=(0,))


def fold_ranges(total: int, folds: int) -> List[Tuple[int, int]]:
    """`folds` contiguous half-open ranges covering 0..total-1."""
    bounds = np.linspace(0, total, folds + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def training_ranges(total: int, fold: Tuple[int, int], buffer: int) -> List[Tuple[int, int]]:
    """Places 0..total-1 outside `fold` and `buffer` places on either side of it."""
    ranges = [(0, fold[0] - buffer), (fold[1] + buffer, total)]
    return [(a, b) for a, b in ranges if b > a]


def val_specs(protocol: Protocol, config: TrainConfig, gp_fold, nordland_fold) -> List[DatasetSpec]:
    """The fold's validation sets: Gardens Point R->N and L->N, then Nordland S->W (roots from
    the recipe's training sets)."""
    gardens_point, nordland = (spec.root for spec in config.data.train)
    specs = [DatasetSpec(kind="aligned", root=gardens_point, db_traversals=[db],
                         query_traversals=[q], places=[(0, protocol.places)],
                         query_places=[gp_fold]) for db, q in PAIRS]
    specs.append(DatasetSpec(kind="aligned", root=nordland, db_traversals=["summer"],
                             query_traversals=["winter"], places=[(0, protocol.nordland)],
                             query_places=[nordland_fold], eval_radius=1))
    return specs


def _with_places(config: TrainConfig, gp_places, nordland_places, synthetic: int) -> None:
    """Point the recipe's two training sets (Gardens Point, then Nordland) at these places."""
    if len(config.data.train) != 2:
        raise ValueError("the recipe must train on two sets: Gardens Point, then Nordland")
    gardens_point, nordland = config.data.train
    config.data.train = [replace(gardens_point, places=gp_places, synthetic_night=synthetic),
                         replace(nordland, places=nordland_places)]


def fold_config(recipe: Path, out: Path, protocol: Protocol, fold: int, loss: str,
                synthetic: int) -> TrainConfig:
    """The recipe with this candidate's loss and renderings, trained and validated on fold `fold`."""
    gp_fold = fold_ranges(protocol.places, protocol.folds)[fold]
    nordland_fold = fold_ranges(protocol.nordland, protocol.folds)[fold]
    config = load_config(recipe, {
        "output_dir": str(out / "validate" / f"{loss}_syn{synthetic}" / f"fold{fold}"),
        "seed": fold, "loss": {"name": loss}, "select_epoch": "last", "recall_ns": [1, 5],
        "select_by_recall_at": 1,
        "optim": {"epochs": protocol.epochs, "lr_step_epochs": protocol.epochs}})
    _with_places(config, training_ranges(protocol.places, gp_fold, protocol.buffer),
                 training_ranges(protocol.nordland, nordland_fold, protocol.buffer), synthetic)
    config.data.val = val_specs(protocol, config, gp_fold, nordland_fold)
    return config


def test_config(recipe: Path, out: Path, protocol: Protocol, seed: int) -> TrainConfig:
    """The recipe as shipped, trained on all training places with this seed, no validation."""
    config = load_config(recipe, {"output_dir": str(out / "test" / f"seed{seed}"), "seed": seed,
                                  "select_epoch": "last"})
    _with_places(config, [(0, protocol.places)], [(0, protocol.nordland)],
                 config.data.train[0].synthetic_night)
    config.data.val = []
    return config


def finished(config: TrainConfig, needs: str) -> bool:
    """True when the run folder holds a complete run of exactly `config` (and its `needs` file)."""
    run_dir = Path(config.output_dir)
    state = run_dir / "last.pt"
    if not (state.is_file() and (run_dir / needs).is_file()):
        return False
    extra = read_checkpoint(state)["extra"]
    return (extra.get("next_epoch") == config.optim.epochs
            and extra.get("train_config") == to_dict(config))


def open_run(config: TrainConfig, features: dict) -> Trainer:
    """A Trainer of `config` (its model is the start of training until `complete`)."""
    return Trainer(config, DistContext(), feature_cache=features)


def complete(trainer: Trainer, needs: str) -> None:
    """Train unless the run folder already holds this very run (with its `needs` file); only a
    run that needs `model.pt` is finalized (validation reads `val_queries.csv` alone)."""
    if finished(trainer.config, needs):
        return
    (Path(trainer.config.output_dir) / "model.pt").unlink(missing_ok=True)  # not this run's
    trainer.fit()
    if needs == "model.pt":
        trainer.finalize()


def first_matches(run_dir: Path, names: Sequence[str]) -> Dict[int, List[np.ndarray]]:
    """{epoch: per validation set (in `names` order), each query's first-match rank}."""
    epochs = read_val_queries(run_dir)
    result = {}
    for epoch, ranks in epochs.items():
        result[epoch] = [np.array([r for (name, _), r in sorted(ranks.items()) if name == wanted])
                         for wanted in names]
    return result


def offtheshelf_ranks(config: TrainConfig, features: dict, store: ImageStore,
                      seed: int) -> List[np.ndarray]:
    """First-match ranks on `config`'s validation sets of the default model fitted on each set's
    map (database) images with k-means seed `seed`, through the same frozen-layer cache."""
    ranks = []
    for spec in config.data.val:
        places = open_place_set(spec)
        model = build_offtheshelf_model((read_image(p) for p in places.db_images),
                                        ModelConfig.from_dict(config.model), seed=seed)
        frozen = len(model.backbone.trunk()) - config.optim.trainable_blocks
        inputs = PrefixStore(store, model.backbone, frozen, features)
        ranks.append(evaluate_recall(model, places, inputs, [1, 5], config.embed_batch_size,
                                     DistContext())[1])
    return ranks


def assemble(protocol: Protocol, per_fold: List[Dict[str, Dict[int, List[np.ndarray]]]]):
    """{candidate: (Gardens Point hits (2, places), Nordland hits (nordland,))} of R@1 over all
    folds, from each fold's {candidate key: {epoch: ranks per validation set}}."""
    gp_folds = fold_ranges(protocol.places, protocol.folds)
    nord_folds = fold_ranges(protocol.nordland, protocol.folds)
    keys = [OFF_THE_SHELF, START] + [k for k in per_fold[0] if isinstance(k, tuple)]
    result = {}
    for key in keys:
        for epoch in per_fold[0][key]:
            gp = np.zeros((2, protocol.places))
            nord = np.zeros(protocol.nordland)
            for fold, runs in enumerate(per_fold):
                ranks = runs[key][epoch]
                (a, b), (c, d) = gp_folds[fold], nord_folds[fold]
                gp[0, a:b], gp[1, a:b] = ranks[0] == 1, ranks[1] == 1
                nord[c:d] = ranks[2] == 1
            result[key if epoch is None else (*key, epoch)] = (gp, nord)
    return result


def choose(means: Dict, order: Sequence) -> tuple:
    """The trained candidate (loss, synthetic, epochs) with the highest validation mean; ties go
    to fewer epochs, then to the earlier one in `order` (the protocol's listing)."""
    trained = [k for k in means if isinstance(k, tuple)]
    return max(trained, key=lambda k: (round(means[k], 9), -k[2], -order.index(k[:2])))


def validation_rows(protocol: Protocol, hits: Dict) -> Tuple[List[dict], tuple]:
    """One row per candidate: mean R@1, its interval, and the paired difference to the choice."""
    keys = list(hits)
    gp = np.stack([hits[k][0].mean(axis=0) for k in keys])           # (C, places): per place
    means = dict(zip(keys, gp.mean(axis=1)))
    chosen = choose(means, protocol.candidates())
    c = keys.index(chosen)
    samples = block_bootstrap_means(np.vstack([gp, gp - gp[c]]), BLOCK)
    folds = fold_ranges(protocol.places, protocol.folds)
    rows = []
    for i, key in enumerate(keys):
        trained = isinstance(key, tuple)
        per_fold = [gp[i, a:b].mean() - gp[c, a:b].mean() for a, b in folds]
        low, high = interval(samples[:, i])
        d_low, d_high = interval(samples[:, len(keys) + i])
        rows.append({
            "candidate": _label(key), "loss": key[0] if trained else "", "synthetic":
                key[1] if trained else "", "epochs": key[2] if trained else "",
            "gp_r1": float(gp[i].mean()), "gp_r1_low": low, "gp_r1_high": high,
            **{f"{p} r1": float(hits[key][0][j].mean()) for j, p in enumerate(PAIR_NAMES)},
            "nordland_r1": float(hits[key][1].mean()),
            "minus_chosen": float(gp[i].mean() - gp[c].mean()), "minus_chosen_low": d_low,
            "minus_chosen_high": d_high,
            "discordant": float(np.mean(hits[key][0] != hits[chosen][0])),
            "fold_diff_min": float(min(per_fold)),
            "fold_diff_max": float(max(per_fold)), "chosen": key == chosen})
    return rows, chosen


def factor_effects(protocol: Protocol, hits: Dict, chosen: tuple) -> List[dict]:
    """Each factor's contrast averaged over epochs 1..E (and over the other factor, or at its
    chosen level), with the paired block-bootstrap interval: what the single cells can't resolve."""
    epochs = range(1, protocol.epochs + 1)

    def per_place(losses, synthetic) -> np.ndarray:
        return np.mean([hits[(loss, n, e)][0].mean(axis=0)
                        for loss in losses for n in synthetic for e in epochs], axis=0)

    loss, synthetic = chosen[:2]
    contrasts = []
    for n in protocol.synthetic:
        if n != synthetic:
            contrasts += [(f"synthetic {n} - {synthetic}, all losses", protocol.losses, n, synthetic),
                          (f"synthetic {n} - {synthetic}, {loss}", (loss,), n, synthetic)]
    rows = []
    for label, losses, a, b in contrasts:
        rows.append((label, per_place(losses, [a]) - per_place(losses, [b])))
    for other in protocol.losses:
        if other != loss:
            rows.append((f"{loss} - {other}, synthetic {synthetic}",
                         per_place([loss], [synthetic]) - per_place([other], [synthetic])))
    rows.append((f"trained (every candidate) - {START}",
                 per_place(protocol.losses, protocol.synthetic) - hits[START][0].mean(axis=0)))
    result = []
    for label, difference in rows:
        low, high = interval(block_bootstrap_means(difference[None], BLOCK)[:, 0])
        result.append({"contrast": label + f", epochs 1-{protocol.epochs}",
                       "difference": float(difference.mean()), "low": low, "high": high})
    return result


def _label(key) -> str:
    if isinstance(key, tuple):
        loss, synthetic, epochs = key
        return f"{loss}, synthetic {synthetic}, {epochs} epoch{'s' if epochs > 1 else ''}"
    return key


def validate(args, protocol: Protocol) -> int:
    started = time.monotonic()
    store = _image_store(args.datasets, load_config(args.config))
    features: dict = {}
    per_fold = []
    for fold in range(protocol.folds):
        runs: Dict = {}
        for loss, synthetic in protocol.candidates():
            config = fold_config(args.config, args.out, protocol, fold, loss, synthetic)
            trainer = open_run(config, features)
            complete(trainer, "val_queries.csv")
            names = [places.name for places in trainer.val_sets]
            curves = first_matches(Path(config.output_dir), names)
            runs[(loss, synthetic)] = {e: r for e, r in curves.items() if e > 0}
            runs.setdefault(START, {None: curves[0]})
            print(f"[{(time.monotonic() - started) / 60:.1f} min] fold {fold}: {loss}, synthetic "
                  f"{synthetic}: Gardens Point val R@1 per epoch "
                  f"{[round(float(np.mean(np.concatenate(r[:2]) == 1)), 3) for r in curves.values()]}",
                  flush=True)
        runs[OFF_THE_SHELF] = {None: offtheshelf_ranks(config, features, store, fold)}
        per_fold.append(runs)
    hits = assemble(protocol, per_fold)
    rows, chosen = validation_rows(protocol, hits)
    out = args.out / "validate"
    write_csv(rows, out / "validation.csv")
    effects = factor_effects(protocol, hits, chosen)
    write_csv(effects, out / "effects.csv")
    choice = {"loss": chosen[0], "synthetic_night": chosen[1], "epochs": chosen[2],
              "protocol": protocol.__dict__}
    atomic_write_text(out / "choice.json", json.dumps(choice, indent=2, default=list) + "\n")
    plot_validation(rows, protocol, out / "validation.png")
    print_validation(rows, protocol)
    print("\nfactors, averaged over epochs (Gardens Point R@1 difference, paired 95 %):")
    for effect in effects:
        print(f"  {effect['contrast']:<82}{effect['difference']:+.3f} [{effect['low']:+.3f}, "
              f"{effect['high']:+.3f}]")
    print(f"total {(time.monotonic() - started) / 60:.1f} min; {out}")
    return 0


def print_validation(rows: List[dict], protocol: Protocol) -> None:
    print(f"\nk-fold validation ({protocol.folds} folds): Gardens Point places 0-{protocol.places - 1}, "
          f"{2 * protocol.places} queries; R@1 [95 % interval]; difference to the choice, paired "
          f"[95 %] and over folds (min..max)")
    print(f"{'candidate':<44}{'GP R@1':>22}{'R->N':>7}{'L->N':>7}{'Nordl.':>8}"
          f"{'minus chosen':>26}{'folds':>16}")
    for row in rows:
        mark = "  <- chosen" if row["chosen"] else ""
        print(f"{row['candidate']:<44}{row['gp_r1']:>8.3f} [{row['gp_r1_low']:.3f}, "
              f"{row['gp_r1_high']:.3f}]{row[PAIR_NAMES[0] + ' r1']:>7.3f}"
              f"{row[PAIR_NAMES[1] + ' r1']:>7.3f}{row['nordland_r1']:>8.3f}"
              f"{row['minus_chosen']:>+10.3f} [{row['minus_chosen_low']:+.3f}, "
              f"{row['minus_chosen_high']:+.3f}]{row['fold_diff_min']:>+8.3f}.."
              f"{row['fold_diff_max']:+.3f}{mark}")
    others = [r for r in rows if not r["chosen"]]
    width = np.median([r["minus_chosen_high"] - r["minus_chosen_low"] for r in others])
    alone = np.median([r["gp_r1_high"] - r["gp_r1_low"] for r in rows])
    print(f"95 % interval widths (median): a difference, paired {width:.3f} (±{width / 2:.3f}); "
          f"one candidate's R@1 alone {alone:.3f}. Queries on which a candidate and the choice "
          f"disagree: median {np.median([r['discordant'] for r in others]):.3f}")


def plot_validation(rows: List[dict], protocol: Protocol, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8),
                                      gridspec_kw={"width_ratios": [1, 1.2]})
    start = next(r for r in rows if r["candidate"] == START)
    for n, (loss, synthetic) in enumerate(protocol.candidates()):
        curve = [r for r in rows if r["loss"] == loss and r["synthetic"] == synthetic]
        left.plot([0] + [r["epochs"] for r in curve], [start["gp_r1"]] + [r["gp_r1"] for r in curve],
                  marker="o", color=f"C{n}", ls="-" if synthetic == 0 else "--",
                  label=f"{loss}, synthetic {synthetic}")
    shelf = next(r for r in rows if r["candidate"] == OFF_THE_SHELF)
    left.axhline(shelf["gp_r1"], color="k", ls=":", label=OFF_THE_SHELF)
    chosen = next(r for r in rows if r["chosen"])
    left.plot(chosen["epochs"], chosen["gp_r1"], marker="*", ms=16, color="k", ls="none",
              label="chosen")
    left.set(xlabel="epochs (0 = start: fitted on the training images)",
             ylabel=f"mean R@1, Gardens Point places 0-{protocol.places - 1}",
             title=f"{protocol.folds}-fold validation, {2 * protocol.places} queries")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    best = {}
    for row in rows:                       # each configuration at its best epoch, and baselines
        name = (row["loss"], row["synthetic"]) if row["loss"] else row["candidate"]
        if name not in best or row["gp_r1"] > best[name]["gp_r1"]:
            best[name] = row
    shown = sorted(best.values(), key=lambda r: r["minus_chosen"])
    for i, row in enumerate(shown):
        right.errorbar(row["minus_chosen"], i, xerr=[[row["minus_chosen"] - row["minus_chosen_low"]],
                                                     [row["minus_chosen_high"] - row["minus_chosen"]]],
                       fmt="o", color="C3" if row["chosen"] else "C0", capsize=3)
    right.axvline(0, color="k", lw=0.8)
    right.set_yticks(range(len(shown)), [r["candidate"] for r in shown], fontsize=7)
    right.set(xlabel="R@1 minus the chosen candidate's (paired 95 % bootstrap interval)",
              title="each configuration at its best epoch")
    right.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, path)


def _image_store(datasets: Path, config: TrainConfig) -> ImageStore:
    """Images at the size training uses (the recipe model's long side; Gardens Point's shape)."""
    sample = read_image(sorted((datasets / "gardens_point" / "day_right").iterdir())[0])
    long_side = ModelConfig.from_dict(config.model).image_long_side
    return ImageStore(target_size(sample.shape[0], sample.shape[1], long_side))


def test_pairs(protocol: Protocol, datasets: Path):
    """{pair name: (database paths, query paths)} of the held-out places."""
    from vpr_ros.io.images import list_images

    a, b = protocol.test
    root = datasets / "gardens_point"
    return {f"{db}->{q}": (list_images(root / db)[a:b], list_images(root / q)[a:b])
            for db, q in PAIRS}


def score_test(model, pairs, store: ImageStore) -> Dict[str, dict]:
    """Per pair: single-image R@1/R@5/R@100P and the sequence decision's R@1/R@100P at the
    engine defaults, plus each query's top-1 hit (for paired intervals); full network on images."""
    engine = EngineConfig()
    result = {}
    for name, (db_paths, query_paths) in pairs.items():
        db = embed_paths(model, store, db_paths, 8, DistContext(), "test db")
        queries = embed_paths(model, store, query_paths, 8, DistContext(), "test queries")
        positives = positives_by_tolerance(len(queries), len(db), 2)
        single = score_retrieval(db, queries, positives)
        evidence, ranked = sequence_ranking(db, queries, engine.sequence_settings(), engine.top_k)
        sequence = ranking_metrics(ranked, evidence, positives)
        result[name] = {"r1": single["recall"]["1"], "r5": single["recall"]["5"],
                        "r100p": single["recall_at_100p"], "seq_r1": sequence["recall"]["1"],
                        "seq_r100p": sequence["recall_at_100p"], "hits": single["_correct"]}
    return result


def matcher_version() -> str:
    """Where the sequence matcher was imported from, and its git commit when it is a checkout."""
    import vpr_ros.localization.sequence as sequence

    folder = Path(sequence.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "log", "-1", "--format=%h %cs",
                                 "--", "."], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout
        return f"{folder} at {commit.strip()}{' (uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return f"{folder} (not a git checkout)"


def test(args, protocol: Protocol) -> int:
    started = time.monotonic()
    store = _image_store(args.datasets, load_config(args.config))
    pairs = test_pairs(protocol, args.datasets)
    _check_recipe(args, protocol)
    features: dict = {}
    rows, hits = [], {}
    for seed in protocol.seeds:
        config = test_config(args.config, args.out, protocol, seed)
        trainer = open_run(config, features)
        model_config = ModelConfig.from_dict(config.model)
        scores = {OFF_THE_SHELF: {pair: score_test(build_offtheshelf_model(
                      (read_image(p) for p in db), model_config, seed=seed), {pair: (db, q)},
                      store)[pair] for pair, (db, q) in pairs.items()},
                  START: score_test(trainer.model, pairs, store)}
        complete(trainer, "model.pt")
        scores["recipe"] = score_test(load_checkpoint(Path(config.output_dir) / "model.pt"),
                                      pairs, store)
        for name, scored in scores.items():
            for pair, metrics in scored.items():
                hits.setdefault((name, pair), []).append(metrics.pop("hits"))
                rows.append({"model": name, "seed": seed, "pair": pair, **metrics})
        print(f"[{(time.monotonic() - started) / 60:.1f} min] seed {seed}: " + "; ".join(
            f"{r['model']} {r['pair']} R@1 {r['r1']:.3f}" for r in rows if r["seed"] == seed),
            flush=True)
    summary = test_summary(rows, hits)
    out = args.out / "test"
    write_csv(rows, out / "test.csv")
    write_csv(summary, out / "test_summary.csv")
    plot_test(summary, out / "test.png")
    print_test(summary, protocol, load_config(args.config))
    print(f"sequence matcher: {matcher_version()}")
    print(f"total {(time.monotonic() - started) / 60:.1f} min; {out}")
    return 0


def _check_recipe(args, protocol: Protocol) -> None:
    """Say so when the recipe is not what validation chose (e.g. edited since)."""
    choice_path = args.out / "validate" / "choice.json"
    if not choice_path.is_file():
        print(f"note: no {choice_path}; testing the recipe without a validation choice on record")
        return
    choice = json.loads(choice_path.read_text())
    recipe = load_config(args.config)
    have = (recipe.loss.name, recipe.data.train[0].synthetic_night, recipe.optim.epochs)
    if have != (choice["loss"], choice["synthetic_night"], choice["epochs"]):
        print(f"WARNING: the recipe (loss, synthetic night, epochs) = {have} is not the "
              f"validation choice {choice['loss'], choice['synthetic_night'], choice['epochs']}")


def test_summary(rows: List[dict], hits: Dict) -> List[dict]:
    """Mean and range over seeds per (model, pair), and the recipe's paired gain over the
    off-the-shelf model (per-query hits averaged over seeds, block bootstrap over places)."""
    summary = []
    for (name, pair), per_seed in hits.items():
        members = [r for r in rows if r["model"] == name and r["pair"] == pair]
        row = {"model": name, "pair": pair, "seeds": len(members)}
        for metric in ("r1", "r5", "r100p", "seq_r1", "seq_r100p"):
            values = np.array([m[metric] for m in members])
            row.update({metric: float(values.mean()), f"{metric}_min": float(values.min()),
                        f"{metric}_max": float(values.max())})
        gain = np.mean(per_seed, axis=0) - np.mean(hits[(OFF_THE_SHELF, pair)], axis=0)
        low, high = interval(block_bootstrap_means(gain[None], BLOCK)[:, 0])
        row.update({"r1_gain": float(gain.mean()), "r1_gain_low": low, "r1_gain_high": high})
        summary.append(row)
    return summary


def print_test(summary: List[dict], protocol: Protocol, recipe: TrainConfig) -> None:
    a, b = protocol.test
    print(f"\nTest, Gardens Point places {a}-{b - 1} ({b - a} queries per pair), seeds "
          f"{list(protocol.seeds)}: mean [min-max]; recipe = {recipe.loss.name}, synthetic "
          f"{recipe.data.train[0].synthetic_night}, {recipe.optim.epochs} epochs")
    print(f"{'model':<46}{'pair':<24}{'R@1':>20}{'seq R@1':>20}{'seq R@100P':>20}"
          f"{'R@1 gain, paired 95 %':>30}")
    for row in summary:
        cells = "".join(f"{'%.3f [%.2f-%.2f]' % (row[m], row[m + '_min'], row[m + '_max']):>20}"
                        for m in ("r1", "seq_r1", "seq_r100p"))
        gain = ("" if row["model"] == OFF_THE_SHELF else
                f"{row['r1_gain']:+.3f} [{row['r1_gain_low']:+.3f}, {row['r1_gain_high']:+.3f}]")
        print(f"{row['model']:<46}{row['pair']:<24}{cells}{gain:>30}")
    for row in (r for r in summary if r["model"] == "recipe"):
        shelf = next(r for r in summary if r["model"] == OFF_THE_SHELF and r["pair"] == row["pair"])
        spread = max(row["r1_max"] - row["r1_min"], shelf["r1_max"] - shelf["r1_min"])
        verdict = ("beats" if row["r1_gain"] > spread else
                   "loses to" if row["r1_gain"] < -spread else "ties (within the seed range)")
        print(f"recipe {verdict} off-the-shelf on {row['pair']}: R@1 gain {row['r1_gain']:+.3f}, "
              f"seed range {spread:.3f}")


def plot_test(summary: List[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in summary))
    pairs = list(dict.fromkeys(r["pair"] for r in summary))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, metric, title in zip(axes, ("r1", "seq_r100p"),
                                 ("single image R@1", "sequence decision (engine defaults) R@100P")):
        for j, model in enumerate(models):
            rows = [next(r for r in summary if r["model"] == model and r["pair"] == p) for p in pairs]
            x = np.arange(len(pairs)) + (j - (len(models) - 1) / 2) * 0.25
            mean = np.array([r[metric] for r in rows])
            err = [mean - [r[metric + "_min"] for r in rows], [r[metric + "_max"] for r in rows] - mean]
            ax.bar(x, mean, 0.25, yerr=err, capsize=3, label=model, color=f"C{j}")
        ax.set_xticks(range(len(pairs)), [p.replace("->", " → ") for p in pairs])
        ax.set(title=title, ylim=(0, 1.05))
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Gardens Point test places (bar: mean over seeds, whisker: their range)")
    fig.tight_layout()
    save_figure(fig, path)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("validate", "test"),
                        help="validate: k-fold choice; test: the recipe on the held-out places")
    parser.add_argument("--datasets", type=Path, default=Path(os.environ.get(
        "VPR_ROS_DATASETS", REPO.parent / "shared" / "datasets")))
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench_train")
    parser.add_argument("--config", type=Path, default=RECIPE,
                        help="the recipe: two training sets (Gardens Point, Nordland) and settings")
    parser.add_argument("--quick", action="store_true",
                        help=f"the protocol in miniature ({QUICK.places} places, {QUICK.folds} "
                             f"folds, {QUICK.epochs} epochs, one loss): a smoke run, not a result")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["VPR_ROS_DATASETS"] = str(args.datasets)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    protocol = QUICK if args.quick else FULL
    return validate(args, protocol) if args.stage == "validate" else test(args, protocol)


if __name__ == "__main__":
    sys.exit(main())
