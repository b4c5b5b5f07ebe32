"""ONNX Runtime backend: runs the exported graph on the CPU (or CUDA) with no torch on the robot."""
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from vpr_ros.export.metadata import INPUT_NAME, OUTPUT_NAME, OnnxModelInfo
from vpr_ros.runtime.embedder import Embedder

LOG = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def create_session(onnx_path, threads: Optional[int] = None, use_cuda: bool = False):
    """An `InferenceSession` with all graph optimizations, on CUDA first when asked, else CPU.

    `threads` sets intra-op threads (None: ONNX Runtime's default, one per physical core).
    Raises FileNotFoundError / ValueError naming the file when it is missing or not a valid model.
    """
    import onnxruntime as ort

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}; create it with "
                                f"`vpr-ros export --checkpoint model.pt --onnx {onnx_path}`")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    providers: List[str] = [CPU_PROVIDER]
    if use_cuda:
        providers.insert(0, CUDA_PROVIDER)
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=options, providers=providers)
    except Exception as err:  # ORT raises its own pybind exception types (InvalidProtobuf, Fail)
        raise ValueError(f"ONNX Runtime cannot load {onnx_path} ({type(err).__name__}: {err}); "
                         f"the file is corrupt or not an ONNX model: re-export it with "
                         f"`vpr-ros export`") from err


def max_abs_difference(model, onnx_path, inputs: Sequence[np.ndarray],
                       threads: Optional[int] = None) -> Tuple[float, float]:
    """(max |Δ| of the descriptors, min cosine) between torch and ONNX Runtime on `inputs`.

    `inputs` are (B, 3, H, W) float32 batches in [0, 1]; each may have its own shape.
    """
    import torch

    session = create_session(onnx_path, threads=threads, use_cuda=False)
    worst, min_cos = 0.0, 1.0
    model = model.eval()
    for batch in inputs:
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).cpu().numpy()
        actual = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        worst = max(worst, float(np.abs(actual - expected).max()))
        min_cos = min(min_cos, float(np.min(np.sum(actual * expected, axis=1))))
    return worst, min_cos


def cuda_provider_available() -> bool:
    """Whether this onnxruntime build ships the CUDA execution provider (onnxruntime-gpu)."""
    import onnxruntime as ort

    return CUDA_PROVIDER in ort.get_available_providers()


class OnnxRuntimeEmbedder(Embedder):
    """Embeds images with an ONNX export of the model (see `vpr_ros.export.onnx_export`).

    Fingerprint, preprocessing long side and dim come from the file's metadata, so the robot
    needs only onnxruntime. `use_cuda` asks for the CUDA provider; `device` then says which
    provider ONNX Runtime actually took ("cuda" or "cpu": it silently falls back when CUDA
    libraries are missing).
    """

    backend = "onnxruntime"

    def __init__(self, onnx_path, batch_size: int = 4, threads: Optional[int] = None,
                 use_cuda: bool = False, expected_fingerprint: Optional[str] = None):
        self.onnx_path = Path(onnx_path)
        self.session = create_session(self.onnx_path, threads=threads, use_cuda=use_cuda)
        info = OnnxModelInfo.from_props(self.session.get_modelmeta().custom_metadata_map,
                                        self.onnx_path)
        if expected_fingerprint and info.fingerprint != expected_fingerprint:
            raise ValueError(f"{self.onnx_path} was exported from model {info.fingerprint}, not "
                             f"{expected_fingerprint}; re-export it from the current checkpoint")
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if names_in != [INPUT_NAME] or OUTPUT_NAME not in names_out:
            raise ValueError(f"{self.onnx_path} has inputs {names_in} and outputs {names_out}; "
                             f"expected '{INPUT_NAME}' → '{OUTPUT_NAME}'; re-export it with "
                             f"`vpr-ros export`")
        super().__init__(info.image_long_side, batch_size)
        self.info = info
        self.dim = info.dim
        self.fingerprint = info.fingerprint
        self.device = "cuda" if self.session.get_providers()[0] == CUDA_PROVIDER else "cpu"
        LOG.info("onnxruntime embedder on %s (%s), dim %d", self.device, self.onnx_path, self.dim)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0].astype(np.float32,
                                                                                copy=False)
