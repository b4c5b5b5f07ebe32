"""Which TensorRT and CUDA GPU this machine has, and whether vpr_ros supports that TensorRT.

Supported: TensorRT 10.3 (JetPack 6.1/6.2) to the newest 10.x (10.16 when checked). Engines are
built as strongly typed networks (precision from the ONNX types and Q/DQ nodes, no builder
precision flags), the path TensorRT 10 recommends and TensorRT 11 makes the only one. TensorRT 8.x
(JetPack 5, JetPack 6.0) lacks the TensorRT 10 API used here (`execute_async_v3`, tensor names).
"""
import re
from typing import Optional, Tuple

MIN_VERSION = (10, 3)
MAX_VERSION = (11, 0)           # exclusive; setup.py pins tensorrt>=10.3,<11 to match


class UnsupportedTensorRT(RuntimeError):
    """The installed TensorRT is outside MIN_VERSION .. MAX_VERSION."""


def check_tensorrt_version(version: str) -> Tuple[int, int]:
    """(major, minor) of `version`; UnsupportedTensorRT saying what is supported otherwise."""
    match = re.match(r"(\d+)\.(\d+)", version)
    found = (int(match.group(1)), int(match.group(2))) if match else None
    if found is None or not MIN_VERSION <= found < MAX_VERSION:
        raise UnsupportedTensorRT(
            f"TensorRT {version} is not supported: vpr_ros needs TensorRT 10.3 to 10.x (JetPack "
            f"6.1 or later; on a PC pip install 'tensorrt>=10.3,<11'). JetPack 5 and 6.0 ship "
            f"TensorRT 8.x: use backend onnxruntime there")
    return found


def cuda_device_index(device: Optional[str]) -> int:
    """CUDA device index of a torch-style device string: None/'cuda' → 0, 'cuda:N' → N."""
    if device in (None, "cuda"):
        return 0
    match = re.fullmatch(r"cuda:(\d+)", str(device))
    if match is None:
        raise ValueError(f"device {device!r} is not a CUDA device; TensorRT needs 'cuda' or "
                         f"'cuda:N'")
    return int(match.group(1))


def tensorrt_platform(device_index: int = 0) -> Tuple[str, str]:
    """(TensorRT version, name of CUDA device `device_index`), after checking both.

    ImportError without tensorrt/pycuda, UnsupportedTensorRT for another major version,
    RuntimeError when the GPU is not there; pycuda raises its own errors without a driver.
    """
    import pycuda.driver as cuda
    import tensorrt as trt

    check_tensorrt_version(trt.__version__)
    cuda.init()
    count = cuda.Device.count()
    if not 0 <= device_index < count:
        raise RuntimeError(f"CUDA device {device_index} asked for, but {count} GPU(s) visible")
    return trt.__version__, cuda.Device(device_index).name()
