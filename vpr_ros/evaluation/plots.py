"""Pictures of an evaluation: PR curves and example query/match pairs (matplotlib PNGs)."""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be set first)
import numpy as np  # noqa: E402

from vpr_ros.io.atomic import atomic_path  # noqa: E402
from vpr_ros.io.images import read_image  # noqa: E402


def save_figure(fig, path) -> None:
    """Write `fig` to `path` as PNG atomically (temp file, then rename) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_along_track(estimates: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]], path,
                     title: str = "") -> None:
    """Estimated against true along-track place index, with 2-sigma bars, one panel per run.

    estimates: {label: (true place (N,), estimated place (N,), sigma (N,))} of accepted frames.
    """
    fig, axes = plt.subplots(1, len(estimates), figsize=(5 * len(estimates), 4.5), squeeze=False)
    for ax, (label, (truth, estimate, sigma)) in zip(axes[0], estimates.items()):
        ax.plot([0, max(truth.max(initial=1), 1)], [0, max(truth.max(initial=1), 1)], color="0.85",
                lw=6, zorder=0, label="truth (map path)")
        ax.errorbar(truth, estimate, yerr=2 * sigma, fmt=".", ms=4, lw=0.8, color="tab:blue",
                    ecolor="tab:blue", alpha=0.7, label="estimate ± 2σ")
        ax.set(xlabel="true place index", ylabel="estimated place index (not metres)", title=label)
        ax.legend(loc="upper left", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def plot_pr_curves(curves: Dict[str, Tuple[np.ndarray, np.ndarray, float]], path, title="") -> None:
    """One PR curve per method: {label: (precision, recall, auc)}."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, (precision, recall, auc) in curves.items():
        ax.plot(np.concatenate([[0], recall]), np.concatenate([[1], precision]),
                label=f"{label} (AUC {auc:.2f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    save_figure(fig, path)


def plot_match_pairs(pairs: Sequence[Tuple[Path, Path, float, bool]], path, title="",
                     thumb_height: int = 160) -> None:
    """Rows of query | best match, green title when right, red when wrong."""
    if not pairs:
        return
    fig, axes = plt.subplots(len(pairs), 1, figsize=(7, 2.2 * len(pairs)), squeeze=False)
    for ax, (query, match, score, correct) in zip(axes[:, 0], pairs):
        images = [read_image(p) for p in (query, match)]
        images = [cv2.resize(im, (int(im.shape[1] * thumb_height / im.shape[0]), thumb_height))
                  for im in images]
        gap = np.full((thumb_height, 8, 3), 255, np.uint8)
        ax.imshow(np.hstack([images[0], gap, images[1]]))
        ax.set_title(f"{'RIGHT' if correct else 'WRONG'}  query {Path(query).name} → "
                     f"{Path(match).name}  (score {score:.2f})",
                     color="green" if correct else "red", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def pick_examples(correct: np.ndarray, scores: np.ndarray, n_right: int = 3,
                  n_wrong: int = 3) -> List[int]:
    """Query indices to show: the most confident right matches and the most confident wrong ones."""
    order = np.argsort(-scores)
    right = [i for i in order if correct[i]][:n_right]
    wrong = [i for i in order if not correct[i]][:n_wrong]
    return right + wrong


def plot_loop_closures(runs: Dict[str, dict], path, title: str = "") -> None:
    """Per run: the matched map place of every query (right/wrong/rejected) and its PR sweep.

    runs: {label: {"query_places", "matched_places" (None when nothing retrieved),
    "accepted", "correct" (per query), "sweep": [(threshold, Outcome)]}}.
    """
    fig, axes = plt.subplots(1, len(runs) + 1, figsize=(5 * (len(runs) + 1), 4.5))
    for ax, (label, run) in zip(axes, runs.items()):
        q = np.asarray(run["query_places"])
        m = np.array([np.nan if p is None else p for p in run["matched_places"]], float)
        acc, ok = np.asarray(run["accepted"]), np.asarray(run["correct"])
        ax.plot([q.min(), q.max()], [q.min(), q.max()], color="0.85", lw=6, zorder=0,
                label="ground truth")
        ax.scatter(q[~acc], m[~acc], s=10, color="0.6", label="rejected (best candidate)")
        ax.scatter(q[acc & ok], m[acc & ok], s=16, color="green", label="accepted, right")
        ax.scatter(q[acc & ~ok], m[acc & ~ok], s=24, color="red", marker="x",
                   label="accepted, wrong")
        ax.set(xlabel="query place", ylabel="matched map place", title=label)
        ax.legend(loc="upper left", fontsize=7)
    ax = axes[-1]
    for label, run in runs.items():
        sweep = run["sweep"]
        ax.plot([o.recall for _, o in sweep], [o.precision for _, o in sweep], marker=".",
                label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title="threshold sweep")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
