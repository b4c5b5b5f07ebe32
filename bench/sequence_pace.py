"""The pace of sequence trajectories, right and false, on validation data only: what
`sequence_min_pace` stands on.

Pace = how much the reported trajectory's keyframes change from one to the next (mean cosine
distance) over how much its frames do. Streams as `bench/sequence_defaults.py` builds them
(Gardens Point places 0-99, every (map, revisit) pair of it, steady revisits at 0.5-2x, cleanly
and roughly), matched at the engine defaults with the pace test off; printed per pair: the 1st,
50th and 99th percentile of the pace of accepted right trajectories, and the paces of the
impostors' trajectories (revisit frames 0-94 against a map of places 100-199) that would be
accepted without the test. Night revisits are also streamed with sensor noise and exposure
flicker added to the images (Gaussian noise of 5 and 10 grey levels, gain 0.85-1.15 per frame),
a camera's frame-to-frame changes that do not come from motion.

    python bench/sequence_pace.py                   # datasets from $VPR_ROS_DATASETS
"""
import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sequence_defaults import BORDER, IMPOSTOR_STARTS, PAIRS, PLACES  # noqa: E402
from sequence_matching import embed_pairs, gardens_point  # noqa: E402
from vpr_ros.evaluation.revisits import (  # noqa: E402
    RATIOS, Revisit, drive_revisit, steady_revisits)
from vpr_ros.io.images import list_images, read_image  # noqa: E402
from vpr_ros.localization import EngineConfig  # noqa: E402

NOISE = (5.0, 10.0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path,
                        default=Path(os.environ.get("VPR_ROS_DATASETS", "../shared/datasets")))
    return parser.parse_args(argv)


def paces(db, queries, revisit: Revisit, places, mapped, config: EngineConfig):
    """(pace, accepted, right) of every frame of `revisit` over `places` against a one-session
    map of the places `mapped`, the pace test off."""
    unpaced = dataclasses.replace(config, sequence_min_pace=0.0).sequence_settings()
    shown, mapped, results = drive_revisit(db, queries, revisit, unpaced, places, mapped,
                                           config.top_k)
    return np.array([(r.pace, r.evidence >= config.sequence_threshold,
                      r.best is not None and abs(mapped[r.best.keyframe_id] - place) <= 2)
                     for r, place in zip(results, shown)], dtype=float).reshape(-1, 3)


def noisy_nights(gp: Path, embedder, seed: int = 0) -> dict:
    """night_right descriptors with per-frame noise of each NOISE sigma and gain, embedded with
    `embedder` (the day_right-clustered model of the pairs)."""
    rng = np.random.default_rng(seed)
    night = [read_image(path).astype(np.float32) for path in list_images(gp / "night_right")]
    noisy = {}
    for sigma in NOISE:
        images = [np.clip(image * rng.uniform(0.85, 1.15) + rng.normal(0.0, sigma, image.shape),
                          0, 255).astype(np.uint8) for image in night]
        noisy[sigma] = embedder.embed(images)
    return noisy


def summary(rows: np.ndarray) -> str:
    pace, accepted, right = rows.T
    good = pace[(accepted > 0) & (right > 0) & np.isfinite(pace)]
    return (f"right accepted {len(good)}: pace {np.percentile(good, 1):.2f} / "
            f"{np.median(good):.2f} / {np.percentile(good, 99):.2f} (1st / 50th / 99th pct)")


def main(argv=None) -> int:
    args = parse_args(argv)
    gp = gardens_point(args.datasets)
    if gp is None:
        return 2
    config = EngineConfig()
    embedders = {}
    pairs = embed_pairs(gp, PAIRS, embedders)
    pairs.update({f"day_right>night_right, noise {sigma:g}": (pairs["day_right>night_right"][0],
                                                               queries)
                  for sigma, queries in noisy_nights(gp, embedders["day_right"]).items()})
    print(f"\nGardens Point places 0-99, pace test off, threshold {config.sequence_threshold}:")
    for name, (db, queries) in pairs.items():
        genuine = np.concatenate([paces(db, queries, revisit, np.arange(PLACES),
                                        np.arange(PLACES), config)
                                  for revisit in steady_revisits()])
        impostor = np.concatenate([paces(db, queries, Revisit(ratio),
                                         np.arange(start, PLACES - BORDER),
                                         np.arange(PLACES, 2 * PLACES), config)
                                   for ratio in RATIOS for start in IMPOSTOR_STARTS])
        false = impostor[impostor[:, 1] > 0, 0]
        below = int(np.sum(false < config.sequence_min_pace))
        spread = (f", paces {np.percentile(false, 5):.2f} / {np.median(false):.2f} / "
                  f"{np.percentile(false, 95):.2f} (5th / 50th / 95th)" if len(false) else "")
        print(f"  {name:<34} {summary(genuine)}; impostor frames accepted {len(false)}, "
              f"{below} below pace {config.sequence_min_pace:g}{spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
