"""Export a `VPRModel` to one ONNX graph: normalization, backbone, NetVLAD, PCA-whitening and L2.

Uses the TorchScript-based exporter (`dynamo=False`): it handles the dynamic batch, height and
width axes of this all-convolutional graph directly and emits opset ≤ 17 as TensorRT 10.3 on
JetPack 6 needs. The vpr_ros metadata (fingerprint, image long side, dim) rides along in
`metadata_props` so the robot needs nothing but the ONNX file.

The runtime calls in here (`ensure_onnx`, for on-the-fly exports) and this module never imports
the runtime's backends: checking an export against ONNX Runtime lives on the runtime side,
`vpr_ros.runtime.onnxruntime_backend.max_abs_difference`.
"""
import io
import logging
import warnings
from pathlib import Path

from vpr_ros.export.metadata import INPUT_NAME, MAX_OPSET, OUTPUT_NAME, OnnxModelInfo
from vpr_ros.io.atomic import atomic_write_bytes
from vpr_ros.runtime.preprocess import target_size

LOG = logging.getLogger(__name__)

MIN_OPSET = 13                      # per-axis ReduceSum/Softmax semantics used by NetVLAD
CACHE_DIR_NAME = ".vpr_ros_cache"
DYNAMIC_AXES = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}}


def export_onnx(model, path, opset: int = MAX_OPSET) -> OnnxModelInfo:
    """Write `model` as ONNX to `path` (atomically), check it with `onnx.checker`; returns its info."""
    import onnx
    import torch

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in {MIN_OPSET}..{MAX_OPSET} (TensorRT 10.3 on JetPack 6 "
                         f"parses up to {MAX_OPSET}), got {opset}")
    model = model.eval()
    info = OnnxModelInfo.from_model(model)
    long_side = model.config.image_long_side
    height, width = target_size(3 * long_side // 4, long_side, long_side)
    device = next(model.parameters()).device
    example = torch.rand(1, 3, height, width, device=device)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The exporter notes that it cannot fold strided Slice ops; harmless for this graph.
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        # The legacy exporter is deprecated but is the one that emits opset ≤ 17 directly
        # (the torch.export-based one starts at opset 18 and needs onnxscript).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based")
        with torch.no_grad():
            torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_axes=DYNAMIC_AXES,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in info.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "vpr_ros"
    onnx.checker.check_model(proto)
    _check_dynamic_axes(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    LOG.info("exported %s (opset %d, dim %d, fingerprint %s)", path, opset, info.dim,
             info.fingerprint)
    return info


def _check_dynamic_axes(proto) -> None:
    """Fail loudly if the exporter froze an axis that must stay dynamic."""
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    frozen = [name for axis, name in DYNAMIC_AXES[INPUT_NAME].items() if not dims[axis].dim_param]
    if frozen:
        raise RuntimeError(f"ONNX export froze the {frozen} axes of '{INPUT_NAME}'; the model "
                           f"probably computes shapes in Python (keep it all-convolutional)")


def cached_onnx_path(checkpoint, fingerprint: str) -> Path:
    """Where the on-the-fly export of `checkpoint` lives: a hidden cache dir beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent / CACHE_DIR_NAME / f"{checkpoint.stem}.{fingerprint}.onnx"


def ensure_onnx(model, checkpoint) -> Path:
    """The ONNX export of `model` (loaded from `checkpoint`), exported once and then reused.

    The file name carries the model fingerprint, so a retrained checkpoint gets a new export and
    a stale one is never picked up.
    """
    path = cached_onnx_path(checkpoint, model.fingerprint())
    if not path.is_file():
        LOG.info("exporting %s to %s (once; later runs reuse it)", checkpoint, path)
        export_onnx(model, path)
    return path
