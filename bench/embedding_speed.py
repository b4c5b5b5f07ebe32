"""Embedding speed: torch vs ONNX Runtime on this CPU, per input size and batch size, in one run.

For each input size W×H a model is built whose `image_long_side` equals W, so the network runs
at that resolution (preprocessing rounds sides to multiples of 32: 320×240 runs at 320×256).
Each configuration times whole `Embedder.embed` calls on uint8 frames (preprocessing included)
and prints ms per frame (p50, p99), frames/s, process CPU ms per frame (less sensitive to other
load on a shared machine) and the ONNX Runtime / torch speed ratio.

    python bench/embedding_speed.py                       # default model, 640×480 and 320×240
    python bench/embedding_speed.py --whitening-dim 4096  # with PCA-whitening (random projection)
    python bench/embedding_speed.py --backbone efficientnet_lite0 --feature-block 15 --sizes 320x240
    python bench/embedding_speed.py --int8 --calib DIR    # + ONNX Runtime static INT8 (QDQ)
    python bench/embedding_speed.py --int8 --gardens-point ../shared/datasets/gardens_point

`--int8` quantizes the ONNX export with ONNX Runtime's static quantization (QDQ, per-channel
weights, activations calibrated on `--calib` images or the bench frames); it is measured here as
an option for CPUs with VNNI/AMX, not shipped: check Recall@N before using such a model.
`--gardens-point DIR` clusters NetVLAD on day_right images (instead of random centers), calibrates
INT8 on day_left, and prints day_right → night_right Recall@1/5 (±2 frames, all 200 queries) for
each ONNX Runtime variant, so speed and accuracy come from the same model.

Where TensorRT 10.3+, pycuda and a CUDA GPU are present, each size also gets `tensorrt-fp16` and
`tensorrt-int8` rows at batch 1 (preprocessing included, the same frames as the other rows). The
engines come from `vpr_ros.export.tensorrt_build.build_engine`, as `vpr-ros build-engine` makes
them (INT8 calibrated on `--calib`, Gardens Point day_left, or the bench frames), beside the
temporary ONNX export, so each run builds them again (minutes on a Jetson). Without TensorRT, one
line says the rows were skipped and why; `--no-tensorrt` skips them on purpose.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_ros.evaluation.ground_truth import positives_by_tolerance  # noqa: E402
from vpr_ros.evaluation.metrics import recall_at_n  # noqa: E402
from vpr_ros.export.onnx_export import export_onnx  # noqa: E402
from vpr_ros.io.images import list_images, read_image  # noqa: E402
from vpr_ros.model import ModelConfig, build_model  # noqa: E402
from vpr_ros.runtime.embedder import TorchEmbedder  # noqa: E402
from vpr_ros.runtime.onnxruntime_backend import OnnxRuntimeEmbedder  # noqa: E402

TARGET_FPS = 15.0


def parse_size(text: str) -> Tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def build_bench_model(long_side: int, args):
    """A model of the default architecture at `long_side`. NetVLAD centers are random (speed does
    not depend on them) unless --gardens-point asks for real ones; whitening is random."""
    import torch

    torch.manual_seed(0)
    config = ModelConfig(image_long_side=long_side, num_clusters=args.clusters)
    if args.backbone:
        config.backbone = args.backbone
    if args.feature_block is not None:
        config.backbone_kwargs = {"feature_block": args.feature_block}
    if args.gardens_point:
        from vpr_ros.model.clustering import build_offtheshelf_model

        sample = [read_image(p) for p in list_images(Path(args.gardens_point) / "day_right")[::4]]
        model = build_offtheshelf_model(sample, config)
    else:
        model = build_model(config).eval()
    if args.whitening_dim:
        rng = np.random.default_rng(0)
        projection = rng.standard_normal((args.whitening_dim, model.netvlad.output_dim))
        model.set_whitening(np.zeros(model.netvlad.output_dim, np.float32),
                            (projection / np.sqrt(projection.shape[1])).astype(np.float32))
    return model


def time_embedder(embedder, frames: List[np.ndarray], batch: int, iterations: int,
                  warmup: int) -> Dict[str, float]:
    """Per-frame wall ms (p50, p99), frames/s and CPU ms per frame over `iterations` calls."""
    batches = [frames[j:j + batch] for j in range(0, len(frames) - batch + 1, batch)]
    for i in range(warmup):
        embedder.embed(batches[i % len(batches)])
    per_frame, cpu0, wall0 = [], time.process_time(), time.perf_counter()
    for i in range(iterations):
        start = time.perf_counter()
        embedder.embed(batches[i % len(batches)])
        per_frame.append((time.perf_counter() - start) * 1000 / batch)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    frames_done = iterations * batch
    return {"min": float(np.min(per_frame)), "p50": float(np.percentile(per_frame, 50)),
            "p99": float(np.percentile(per_frame, 99)),
            "fps": frames_done / wall, "cpu_ms": cpu * 1000 / frames_done}


def quantize_int8(onnx_path: Path, long_side: int, frames: List[np.ndarray],
                  calib_dir=None) -> Path:
    """ONNX Runtime static INT8 (QDQ, per-channel) copy of `onnx_path`, calibrated on images."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from vpr_ros.runtime.preprocess import preprocess

    images = [read_image(p) for p in list_images(calib_dir)[::5][:40]] if calib_dir else frames

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter({"image": preprocess(image, long_side)[None]} for image in images)

        def get_next(self):
            return next(self.feeds, None)

    prepared = onnx_path.with_name(onnx_path.stem + ".pre.onnx")
    quantized = onnx_path.with_name(onnx_path.stem + ".int8.onnx")
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    _copy_metadata(onnx_path, quantized)
    return quantized


def gardens_point_recall(embedder, root: Path) -> Dict[int, float]:
    """day_right → night_right Recall@1/5 with ±2 frames tolerance, all 200 queries."""
    db = embedder.embed([read_image(p) for p in list_images(root / "day_right")])
    queries = embedder.embed([read_image(p) for p in list_images(root / "night_right")])
    ranked = np.argsort(-(queries @ db.T), axis=1)[:, :5]
    return recall_at_n(ranked, positives_by_tolerance(len(queries), len(db), 2), ns=(1, 5))


def gardens_point_parity(model, onnx_path: Path, root: Path, threads: int) -> str:
    """torch vs ONNX Runtime on every 4th day_right (db) and night_right (query) image."""
    db_images = [read_image(p) for p in list_images(root / "day_right")[::4]]
    query_images = [read_image(p) for p in list_images(root / "night_right")[::4]]
    out = {}
    for name, embedder in (("torch", TorchEmbedder(model, threads=threads)),
                           ("onnxruntime", OnnxRuntimeEmbedder(onnx_path, threads=threads))):
        out[name] = (embedder.embed(db_images), embedder.embed(query_images))
    (db_t, q_t), (db_o, q_o) = out["torch"], out["onnxruntime"]
    diff = max(np.abs(db_t - db_o).max(), np.abs(q_t - q_o).max())
    cosine = min(np.sum(db_t * db_o, axis=1).min(), np.sum(q_t * q_o, axis=1).min())
    same_top1 = np.mean(np.argmax(q_t @ db_t.T, axis=1) == np.argmax(q_o @ db_o.T, axis=1))
    return (f"torch vs onnxruntime on {len(db_images)}+{len(query_images)} Gardens Point images: "
            f"max |Δ| {diff:.2e}, min cosine {cosine:.7f}, identical top-1 {same_top1:.0%}")


def _copy_metadata(source: Path, target: Path) -> None:
    """Quantization drops `metadata_props`; put the vpr_ros ones back so backends can load it."""
    import onnx

    props = onnx.load(str(source), load_external_data=False).metadata_props
    model = onnx.load(str(target))
    del model.metadata_props[:]
    model.metadata_props.extend(props)
    onnx.save(model, str(target))


def bench_size(width: int, height: int, args, tmp: Path, rng) -> List[tuple]:
    """Time every backend (and batch size) at one input size; print and return the rows."""
    long_side = max(width, height)
    model = build_bench_model(long_side, args)
    onnx_path = tmp / f"bench_{long_side}.onnx"
    export_onnx(model, onnx_path)
    print(f"\n{width}x{height}: long side {long_side}, dim {model.output_dim}, "
          f"ONNX {onnx_path.stat().st_size / 1e6:.0f} MB")
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
    backends = {name: onnx_path for name in args.backends}
    if args.int8:
        calib = args.calib or (Path(args.gardens_point) / "day_left" if args.gardens_point
                               else None)
        backends["onnxruntime-int8"] = quantize_int8(onnx_path, long_side, frames, calib)
    if args.gardens_point:
        if "torch" in backends:
            print("  " + gardens_point_parity(model, onnx_path, Path(args.gardens_point),
                                              args.threads), flush=True)
        for backend, path in backends.items():
            if backend.startswith("onnxruntime"):
                embedder = OnnxRuntimeEmbedder(path, batch_size=4, threads=args.threads)
                recall = gardens_point_recall(embedder, Path(args.gardens_point))
                print(f"  {backend:<16} Gardens Point dayR→nightR R@1 {recall[1]:.3f} "
                      f"R@5 {recall[5]:.3f}", flush=True)
    rows = []
    size = f"{width}x{height}"
    for batch in args.batches:
        results = {}
        for backend, path in backends.items():
            if backend == "torch":
                embedder = TorchEmbedder(model, batch_size=batch, threads=args.threads)
            else:
                embedder = OnnxRuntimeEmbedder(path, batch_size=batch, threads=args.threads)
            r = results[backend] = time_embedder(embedder, frames, batch, args.iterations,
                                                 args.warmup)
            rows.append((size, batch, backend, r))
            print_row(batch, backend, r)
        print_ratios(batch, results)
    if getattr(args, "tensorrt_ok", False):
        calib = args.calib or (Path(args.gardens_point) / "day_left" if args.gardens_point
                               else None)
        rows += tensorrt_rows(onnx_path, model.fingerprint(), frames, size, args, calib)
    return rows


def print_row(batch: int, backend: str, r: Dict[str, float]) -> None:
    print(f"  batch {batch} {backend:<16} min {r['min']:7.1f}  p50 {r['p50']:7.1f}  "
          f"p99 {r['p99']:7.1f} ms/frame  {r['fps']:6.1f} frames/s  "
          f"cpu {r['cpu_ms']:7.1f} ms/frame", flush=True)


TENSORRT_PRECISIONS = ("fp16", "int8")


def tensorrt_unavailable() -> Optional[str]:
    """Why TensorRT rows cannot run here (missing tensorrt/pycuda, unsupported TensorRT, no
    GPU), or None when they can."""
    try:
        from vpr_ros.runtime.tensorrt_platform import tensorrt_platform

        version, gpu = tensorrt_platform()
    except ImportError as err:
        return f"import failed: {err}"
    except Exception as err:  # UnsupportedTensorRT, RuntimeError, pycuda's own errors (no driver)
        return f"{type(err).__name__}: {err}"
    print(f"TensorRT {version} on '{gpu}': tensorrt-fp16/int8 rows at batch 1")
    return None


def tensorrt_rows(onnx_path: Path, fingerprint: str, frames: List[np.ndarray], size: str, args,
                  calib_dir=None) -> List[tuple]:
    """Time TensorRT fp16 and int8 engines of `onnx_path` at batch 1 on `frames`; print and
    return the rows. Engines are built (or reused) by the package's `build_engine`; INT8 is
    calibrated on `calib_dir`, or on `frames` written to a folder beside the export."""
    from vpr_ros.export.tensorrt_build import build_engine
    from vpr_ros.runtime.tensorrt_backend import TensorRTEmbedder

    if calib_dir is None:
        import cv2

        calib_dir = onnx_path.with_name(f"{onnx_path.stem}_calib")
        calib_dir.mkdir(exist_ok=True)
        for i, frame in enumerate(frames):
            cv2.imwrite(str(calib_dir / f"frame{i:03d}.png"),
                        cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    rows = []
    for precision in TENSORRT_PRECISIONS:
        backend = f"tensorrt-{precision}"
        try:
            engine = build_engine(onnx_path, precision,
                                  calib_dir=calib_dir if precision == "int8" else None)
            embedder = TensorRTEmbedder(engine, batch_size=1, precision=precision,
                                        expected_fingerprint=fingerprint)
        except Exception as err:  # one failed engine must not lose the other row or the summary
            print(f"  batch 1 {backend:<16} failed: {type(err).__name__}: {err}", flush=True)
            continue
        r = time_embedder(embedder, frames, 1, args.iterations, args.warmup)
        rows.append((size, 1, backend, r))
        print_row(1, backend, r)
    return rows


def print_ratios(batch: int, results: Dict[str, Dict[str, float]]) -> None:
    if {"torch", "onnxruntime"} <= set(results):
        speedup = results["onnxruntime"]["fps"] / results["torch"]["fps"]
        cpu_ratio = results["torch"]["cpu_ms"] / results["onnxruntime"]["cpu_ms"]
        print(f"  batch {batch} onnxruntime/torch: {speedup:.2f}x frames/s, "
              f"{cpu_ratio:.2f}x less CPU per frame")
    if {"onnxruntime", "onnxruntime-int8"} <= set(results):
        speedup = results["onnxruntime-int8"]["fps"] / results["onnxruntime"]["fps"]
        print(f"  batch {batch} onnxruntime-int8/onnxruntime: {speedup:.2f}x frames/s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(640, 480), (320, 240)],
                        help="input sizes WxH (default 640x480 320x240)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=12, help="timed embed() calls")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"],
                        choices=["torch", "onnxruntime"])
    parser.add_argument("--int8", action="store_true",
                        help="also time an ONNX Runtime static-INT8 (QDQ) version of the export")
    parser.add_argument("--calib", help="image folder for --int8 calibration (default: frames)")
    parser.add_argument("--gardens-point", help="Gardens Point folder: real NetVLAD centers and "
                                                "day_right → night_right Recall@1/5 per variant")
    parser.add_argument("--backbone", help="backbone name (default: ModelConfig's)")
    parser.add_argument("--feature-block", type=int,
                        help="cut-off block (default: ModelConfig's; needed with --backbone)")
    parser.add_argument("--clusters", type=int, default=ModelConfig().num_clusters,
                        help="NetVLAD clusters (default: ModelConfig's)")
    parser.add_argument("--whitening-dim", type=int, help="add PCA-whitening to this dim")
    parser.add_argument("--no-tensorrt", action="store_true",
                        help="skip the TensorRT fp16/int8 rows even where TensorRT is present")
    args = parser.parse_args(argv)
    if args.backbone and args.feature_block is None:
        parser.error("--backbone needs --feature-block (block numbers differ per backbone)")

    print(f"cpu cores {os.cpu_count()}, threads {args.threads}, load average "
          f"{os.getloadavg()[0]:.1f} (other processes skew wall times; CPU ms/frame less so)")
    reason = "--no-tensorrt" if args.no_tensorrt else tensorrt_unavailable()
    if reason is not None:
        print(f"TensorRT rows skipped: {reason}")
    args.tensorrt_ok = reason is None
    rng = np.random.default_rng(0)
    rows: List[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        for width, height in args.sizes:
            rows += bench_size(width, height, args, Path(tmp), rng)
    best = {}
    for size, _, backend, r in rows:
        if backend.startswith(("onnxruntime", "tensorrt")):
            best[(size, backend)] = max(best.get((size, backend), 0.0), r["fps"])
    print()
    for (size, backend), fps in best.items():
        verdict = "meets" if fps >= TARGET_FPS else "misses"
        print(f"{backend} at {size}: best {fps:.1f} frames/s, {verdict} the "
              f"{TARGET_FPS:.0f} frames/s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
