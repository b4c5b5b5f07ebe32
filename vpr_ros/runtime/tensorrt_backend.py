"""TensorRT backend (TensorRT 10 Python API + pycuda): a cached engine, one stream, pinned buffers.

Buffers are allocated once for the engine profile's largest input; each batch sets its input
shape, copies host→device, runs `execute_async_v3` and copies device→host on one CUDA stream.
The CUDA primary context is pushed around every call, so the embedder works from any thread
(ROS executors call back on their own threads).
"""
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from vpr_ros.export.metadata import INPUT_NAME, OUTPUT_NAME
from vpr_ros.runtime.embedder import Embedder
from vpr_ros.runtime.engine_cache import ShapeProfile, load_engine

LOG = logging.getLogger(__name__)


class TensorRTEmbedder(Embedder):
    """Embeds images with a serialized TensorRT engine built by `vpr-ros build-engine`."""

    backend = "tensorrt"

    def __init__(self, engine_path, batch_size: Optional[int] = None, device_index: int = 0,
                 expected_fingerprint: Optional[str] = None, precision: str = "auto"):
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        cuda.init()
        device = cuda.Device(device_index)
        self.engine_path = Path(engine_path)
        data, key, info = load_engine(self.engine_path, trt.__version__, device.name())
        if expected_fingerprint and info.fingerprint != expected_fingerprint:
            raise ValueError(f"{self.engine_path} was built from model {info.fingerprint}, not "
                             f"{expected_fingerprint}; rebuild it from the current ONNX export")
        if precision not in ("auto", key.precision):
            raise ValueError(f"{self.engine_path} is a {key.precision} engine, {precision} was "
                             f"asked for; build one with `vpr-ros build-engine --precision "
                             f"{precision}` or ask for engine precision auto")
        self.profile: ShapeProfile = key.profile
        max_batch = self.profile.max[0]
        super().__init__(info.image_long_side, min(batch_size or max_batch, max_batch))
        self.dim = info.dim
        self.fingerprint = info.fingerprint
        self.precision = key.precision
        self._context = device.retain_primary_context()
        self._context.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(data)
            if self._engine is None:
                raise ValueError(f"TensorRT cannot deserialize {self.engine_path} (corrupt, or "
                                 f"built by another TensorRT); rebuild it with "
                                 f"`vpr-ros build-engine`")
            names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
            if names != {INPUT_NAME, OUTPUT_NAME}:
                raise ValueError(f"{self.engine_path} has tensors {sorted(names)}, expected "
                                 f"'{INPUT_NAME}' and '{OUTPUT_NAME}'")
            self._execution = self._engine.create_execution_context()
            self._stream = cuda.Stream()
            in_dtype = trt.nptype(self._engine.get_tensor_dtype(INPUT_NAME))
            out_dtype = trt.nptype(self._engine.get_tensor_dtype(OUTPUT_NAME))
            self._host_in = cuda.pagelocked_empty(int(np.prod(self.profile.max)), in_dtype)
            self._host_out = cuda.pagelocked_empty(max_batch * self.dim, out_dtype)
            self._device_in = cuda.mem_alloc(self._host_in.nbytes)
            self._device_out = cuda.mem_alloc(self._host_out.nbytes)
            self._execution.set_tensor_address(INPUT_NAME, int(self._device_in))
            self._execution.set_tensor_address(OUTPUT_NAME, int(self._device_out))
        finally:
            self._context.pop()
        self.device = f"cuda:{device_index}"
        LOG.info("tensorrt embedder: loaded %s engine %s on '%s' (%s), inputs %s..%s, dim %d",
                 self.precision, self.engine_path, device.name(), self.device, self.profile.min,
                 self.profile.max, self.dim)

    @classmethod
    def from_onnx(cls, onnx_path, precision: str = "auto", batch_size: Optional[int] = None,
                  device_index: int = 0, expected_fingerprint: Optional[str] = None,
                  **build_kwargs):
        """Load a cached engine of `onnx_path`'s model for this GPU at `precision` ("auto": any),
        building one the first time (see `runtime_engine`)."""
        from vpr_ros.export.tensorrt_build import runtime_engine

        engine_path = runtime_engine(onnx_path, precision=precision, device_index=device_index,
                                     **build_kwargs)
        return cls(engine_path, batch_size=batch_size, device_index=device_index,
                   expected_fingerprint=expected_fingerprint, precision=precision)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        if not self.profile.contains(shape):
            raise ValueError(f"input {shape} is outside the engine's shape profile (min "
                             f"{self.profile.min}, max {self.profile.max}); rebuild with "
                             f"`vpr-ros build-engine --min-shape/--max-shape`")
        cuda = self._cuda
        count, out_count = batch.size, shape[0] * self.dim
        host_in, host_out = self._host_in[:count], self._host_out[:out_count]
        host_in[:] = batch.ravel()
        self._context.push()
        try:
            if not self._execution.set_input_shape(INPUT_NAME, shape):
                raise ValueError(f"TensorRT rejected input shape {shape}")
            cuda.memcpy_htod_async(self._device_in, host_in, self._stream)
            if not self._execution.execute_async_v3(stream_handle=self._stream.handle):
                raise RuntimeError(f"TensorRT execution failed for input {shape}")
            cuda.memcpy_dtoh_async(host_out, self._device_out, self._stream)
            self._stream.synchronize()
        finally:
            self._context.pop()
        out = host_out.reshape(shape[0], self.dim).astype(np.float32)
        # FP16/INT8 engines leave norms a hair off 1; restore the Embedder contract.
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
