"""The `vpr-ros eval` pipeline: embed a database and queries, retrieve, score, plot."""
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from vpr_ros.evaluation.baseline import raw_pixel_descriptors
from vpr_ros.evaluation.ground_truth import (positives_by_frame_number, positives_by_tolerance,
                                             positives_from_csv)
from vpr_ros.evaluation.metrics import (pr_auc, precision_recall, recall_at_n,
                                        recall_at_precision)
from vpr_ros.evaluation.plots import pick_examples, plot_match_pairs, plot_pr_curves
from vpr_ros.evaluation.retrieval import search_cosine
from vpr_ros.evaluation.sequence_retrieval import sequence_ranking
from vpr_ros.io.atomic import atomic_write_text
from vpr_ros.io.images import list_images, read_image
from vpr_ros.localization.config import EngineConfig

LOG = logging.getLogger(__name__)
RECALL_NS = (1, 5, 10)


def embed_folder(embedder, paths: Sequence[Path], desc: str):
    """Descriptors of `paths` (read in chunks), their raw-pixel baseline, and ms per image."""
    descriptors, baseline, seconds = [], [], 0.0
    chunk = max(embedder.batch_size, 1)
    with tqdm(total=len(paths), desc=desc, unit="img") as bar:
        for start in range(0, len(paths), chunk):
            images = [read_image(p) for p in paths[start:start + chunk]]
            tic = time.perf_counter()
            descriptors.append(embedder.embed(images))
            seconds += time.perf_counter() - tic
            baseline.append(raw_pixel_descriptors(images))
            bar.update(len(images))
    return np.concatenate(descriptors), np.concatenate(baseline), 1000.0 * seconds / len(paths)


def score_retrieval(db: np.ndarray, queries: np.ndarray, positives: List[set]) -> Dict:
    """Recall@N and loop-closure PR metrics for cosine retrieval of `queries` in `db`."""
    scores, ranked = search_cosine(db, queries, max(RECALL_NS))
    return ranking_metrics(ranked, scores[:, 0], positives)


def ranking_metrics(ranked: np.ndarray, confidence: np.ndarray, positives: List[set]) -> Dict:
    """Recall@N of `ranked` (Q, ≥10) ids, and PR metrics of the top-1 ranked by `confidence`.

    A query whose confidence is -inf or nan is never accepted (e.g. a sequence still too short).
    """
    best_correct = np.array([r[0] in pos for r, pos in zip(ranked, positives)])
    n_with_match = sum(1 for pos in positives if pos)
    confidence = np.asarray(confidence, dtype=np.float64)
    decided = confidence > -np.inf                                  # -inf / nan: never accepted
    precision, recall, _ = precision_recall(confidence[decided], best_correct[decided], n_with_match)
    return {
        "recall": {str(n): r for n, r in recall_at_n(ranked, positives, RECALL_NS).items()},
        "auc": pr_auc(precision, recall),
        "recall_at_100p": recall_at_precision(precision, recall, 1.0),
        "_curve": (precision, recall),
        "_top1": ranked[:, 0],
        "_top1_score": np.asarray(confidence),
        "_correct": best_correct,
    }


def run_eval(db_dir, query_dir, out_dir, embedder=None, model_path: Optional[str] = None,
             gt_csv: Optional[str] = None, tolerance: int = 2, backend: str = "auto",
             save_model: Optional[str] = None, sequence: Optional[EngineConfig] = None) -> Dict:
    """Evaluate and write `metrics.json`, `pr_curve.png` and `matches.png` into `out_dir`.

    Without a model, builds the off-the-shelf one (pretrained backbone, NetVLAD clustered on the
    database images) and, with `save_model`, keeps it as a checkpoint. With `sequence` (an engine
    config), also scores its sequence matching (each query with its predecessors in the folder).
    """
    out_dir = Path(out_dir)
    db_paths, query_paths = list_images(db_dir), list_images(query_dir)
    positives, ground_truth = _positives(db_paths, query_paths, gt_csv, tolerance)
    if embedder is None:
        embedder = _make_embedder(db_paths, model_path, backend, save_model)
    db, db_raw, ms_db = embed_folder(embedder, db_paths, "embed db")
    queries, q_raw, ms_q = embed_folder(embedder, query_paths, "embed queries")
    result = score_retrieval(db, queries, positives)
    raw = score_retrieval(db_raw, q_raw, positives)
    seq = None
    if sequence is not None:
        evidence, ranked = sequence_ranking(db, queries, sequence.sequence_settings(),
                                            sequence.top_k, max(RECALL_NS))
        seq = ranking_metrics(ranked, evidence, positives)

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "db": str(db_dir), "query": str(query_dir),
        "ground_truth": ground_truth,
        "model_fingerprint": embedder.fingerprint, "backend": embedder.backend,
        "descriptor_dim": int(embedder.dim), "bytes_per_keyframe": int(embedder.dim) * 4,
        "n_db": len(db_paths), "n_queries": len(query_paths),
        "ms_per_image": (ms_db * len(db_paths) + ms_q * len(query_paths))
        / (len(db_paths) + len(query_paths)),
        **{k: v for k, v in result.items() if not k.startswith("_")},
        "raw_pixel_baseline": {k: v for k, v in raw.items() if not k.startswith("_")},
    }
    if seq is not None:
        metrics["sequence"] = {"length": sequence.sequence_length,
                               **{k: v for k, v in seq.items() if not k.startswith("_")}}
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    title = f"{Path(db_dir).name} → {Path(query_dir).name}"
    curves = {"NetVLAD": (*result["_curve"], result["auc"])}
    if seq is not None:
        curves[f"NetVLAD, sequence of {sequence.sequence_length}"] = (*seq["_curve"], seq["auc"])
    curves["raw pixels"] = (*raw["_curve"], raw["auc"])
    plot_pr_curves(curves, out_dir / "pr_curve.png", title=title)
    examples = pick_examples(result["_correct"], result["_top1_score"])
    plot_match_pairs([(query_paths[i], db_paths[result["_top1"][i]],
                       float(result["_top1_score"][i]), bool(result["_correct"][i]))
                      for i in examples], out_dir / "matches.png", title=title)
    return metrics


def _positives(db_paths, query_paths, gt_csv: Optional[str], tolerance: int):
    """The positives of each query and how they were decided (for metrics.json and the table).

    Without a CSV, frame numbers in the file names decide when every name carries one
    (`Image042.jpg`), so a folder of every 2nd frame counts ±tolerance original frames;
    positions in the folder otherwise.
    """
    if gt_csv:
        return positives_from_csv(gt_csv, db_paths, query_paths), gt_csv
    by_frame = positives_by_frame_number(db_paths, query_paths, tolerance)
    if by_frame is not None:
        return by_frame, f"±{tolerance} frames by the frame numbers in the file names"
    return (positives_by_tolerance(len(query_paths), len(db_paths), tolerance),
            f"±{tolerance} positions in the folders (the file names carry no unique frame numbers)")


def _make_embedder(db_paths, model_path, backend, save_model):
    from vpr_ros.runtime.embedder import load_embedder

    if model_path:
        return load_embedder(model_path, backend=backend)
    from vpr_ros.model.checkpoint import save_checkpoint
    from vpr_ros.model.clustering import build_offtheshelf_model

    LOG.info("no model given: building the off-the-shelf model by clustering the db images")
    sample = db_paths[:: max(1, len(db_paths) // 500)]
    model = build_offtheshelf_model(read_image(p) for p in sample)
    if save_model:
        save_checkpoint(save_model, model, extra={"built_from": str(Path(db_paths[0]).parent)})
        return load_embedder(save_model, backend=backend, model=model)
    if backend in ("onnxruntime", "tensorrt"):
        # Asked for by name, so export the in-memory model to a temporary ONNX file: the
        # backend reads it at start-up (a TensorRT engine built from it is not kept). `auto`
        # writes nothing for a model without a checkpoint and falls back to torch.
        from vpr_ros.export.onnx_export import export_onnx

        with tempfile.TemporaryDirectory(prefix="vpr_ros_eval_") as tmp:
            onnx = Path(tmp) / "offtheshelf.onnx"
            LOG.info("exporting the off-the-shelf model to a temporary ONNX file for %s", backend)
            export_onnx(model, onnx)
            return load_embedder(model=model, backend=backend, onnx=onnx)
    return load_embedder(model=model, backend=backend)


def format_table(metrics: Dict) -> str:
    """Recall table of the model beside the raw-pixel baseline, for the terminal."""
    rows = [("method", "R@1", "R@5", "R@10", "AUC", "R@100P")]
    methods = [("NetVLAD", metrics)]
    if "sequence" in metrics:
        methods.append((f"NetVLAD, sequence of {metrics['sequence']['length']}", metrics["sequence"]))
    methods.append(("raw pixels", metrics["raw_pixel_baseline"]))
    for name, m in methods:
        rows.append((name, *(f"{m['recall'][n]:.3f}" for n in ("1", "5", "10")),
                     f"{m['auc']:.3f}", f"{m['recall_at_100p']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.append(f"{metrics['n_queries']} queries, {metrics['ms_per_image']:.0f} ms/image "
                 f"({metrics['backend']}), {metrics['descriptor_dim']}-D descriptors; "
                 f"ground truth {metrics['ground_truth']}")
    return "\n".join(lines)
