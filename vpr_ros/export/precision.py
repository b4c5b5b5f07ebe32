"""The ONNX graph a strongly typed TensorRT network is parsed from, per engine precision.

A strongly typed network runs every layer in the type the ONNX graph gives it, so precision is
chosen here, on the CPU, with ONNX Runtime's tools:
- fp32: the export as it is;
- fp16: the backbone converted to float16 (`onnxruntime.transformers.float16`), NetVLAD and
  whitening kept in float32 (their sums of squares over ~20k dims would overflow float16),
  input and output stay float32;
- int8: Q/DQ nodes on the inputs and weights of the backbone convolutions
  (`onnxruntime.quantization.quantize_static`, QDQ format, symmetric int8 activations and
  per-channel weights, float biases: what TensorRT explicit quantization accepts), scales
  calibrated on images; the rest, NetVLAD's input included, stays float32.
"""
import logging
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from vpr_ros.export.metadata import INPUT_NAME

LOG = logging.getLogger(__name__)

BACKBONE_SCOPE = "/backbone/"       # node-name prefix the exporter gives VPRModel.backbone


def _backbone_nodes(proto, source) -> list:
    nodes = [node for node in proto.graph.node if node.name.startswith(BACKBONE_SCOPE)]
    if not nodes:
        raise ValueError(f"{source} has no '{BACKBONE_SCOPE}' nodes: not a vpr_ros export? "
                         f"re-export it with `vpr-ros export`")
    return nodes


def fp16_graph(proto, source):
    """`proto` with its backbone in float16 (float32 input, head and output), nodes in order."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    backbone = {node.name for node in _backbone_nodes(proto, source)}
    keep_fp32 = [node.name for node in proto.graph.node if node.name not in backbone]
    converted = convert_float_to_float16(proto, keep_io_types=True, node_block_list=keep_fp32)
    model = OnnxModel(converted)
    model.topological_sort()            # the converter appends its Cast nodes out of order
    return model.model


def int8_qdq_graph(onnx_path, batches: Iterable[np.ndarray]):
    """The ONNX export of `onnx_path` with Q/DQ int8 backbone convolutions, calibrated on
    `batches` ((B, 3, H, W) float32 in [0, 1], as the runtime preprocessing makes them)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    convolutions = [node.name for node in _backbone_nodes(onnx.load(str(onnx_path)), onnx_path)
                    if node.op_type == "Conv"]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = ({INPUT_NAME: batch} for batch in batches)

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "int8.onnx"
        quantize_static(str(onnx_path), str(output), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_quantize=convolutions,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False,
                                       "OpTypesToExcludeOutputQuantization": ["Conv"]})
        return onnx.load(str(output))


def network_onnx(onnx_path, precision: str, calibration: Iterable[np.ndarray] = ()) -> bytes:
    """Serialized ONNX for a strongly typed TensorRT network at `precision` (see module doc)."""
    import onnx

    if precision == "int8":
        LOG.info("calibrating INT8 Q/DQ scales of %s with ONNX Runtime", onnx_path)
        return int8_qdq_graph(onnx_path, calibration).SerializeToString()
    proto = onnx.load(str(onnx_path))
    if precision == "fp16":
        proto = fp16_graph(proto, onnx_path)
    return proto.SerializeToString()
