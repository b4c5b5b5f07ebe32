"""`vpr-ros export`: checkpoint → one ONNX graph (normalization … L2), checked against torch."""
import argparse
from pathlib import Path

import numpy as np

from vpr_ros.export.metadata import MAX_OPSET
from vpr_ros.runtime.preprocess import target_size

PARITY_TOLERANCE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    parser.add_argument("--onnx", required=True, help="output ONNX file")
    parser.add_argument("--opset", type=int, default=MAX_OPSET,
                        help=f"ONNX opset (default {MAX_OPSET}, the highest TensorRT 10.3 parses)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ONNX Runtime vs torch comparison")


def run(args) -> int:
    from vpr_ros.export.onnx_export import export_onnx
    from vpr_ros.model.checkpoint import load_checkpoint
    from vpr_ros.runtime.onnxruntime_backend import max_abs_difference

    out_dir = Path(args.onnx).parent
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory {out_dir} does not exist; create it "
                                f"(mkdir -p {out_dir}) or pick another --onnx path")
    model = load_checkpoint(args.checkpoint)
    info = export_onnx(model, args.onnx, opset=args.opset)
    print(f"wrote {args.onnx}: opset {args.opset}, input 'image' (B,3,H,W) float32 in [0,1], "
          f"output 'descriptor' (B,{info.dim}), long side {info.image_long_side}, "
          f"fingerprint {info.fingerprint}")
    if args.no_verify:
        return 0
    rng = np.random.default_rng(0)
    side = info.image_long_side
    shapes = [(1, *target_size(3, 4, side)), (2, *target_size(9, 16, side))]
    batches = [rng.random((b, 3, h, w), dtype=np.float32) for b, h, w in shapes]
    worst, min_cos = max_abs_difference(model, args.onnx, batches)
    print(f"ONNX Runtime vs torch at {[f'{b}x3x{h}x{w}' for b, h, w in shapes]}: "
          f"max |Δ| {worst:.2e}, min cosine {min_cos:.6f}")
    if worst > PARITY_TOLERANCE:
        raise ValueError(f"exported graph differs from torch by {worst:.2e} (> "
                         f"{PARITY_TOLERANCE:.0e}); report this with the checkpoint config")
    return 0
