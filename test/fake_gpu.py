"""Fake `tensorrt` and `pycuda.driver` modules for CPU-only machines.

They implement the part of the TensorRT 10 Python API and of pycuda that vpr_ros calls, record
what they were asked (network flags, builder flags, parsed ONNX bytes, pushed CUDA devices) and
emulate device memory with numpy, so the build and runtime code runs unchanged against them.
The fake engine's "network" writes the per-image mean of its input into every output element.
"""
import sys
import types
from typing import Optional, Sequence

import numpy as np


class FakeCudaError(Exception):
    """Like pycuda's own errors: an Exception, but neither ValueError nor RuntimeError."""


class FakeCuda(types.ModuleType):
    """`pycuda.driver` with `gpus` (names); `init_error` is raised by init()."""

    def __init__(self, gpus: Sequence[str], init_error: Optional[Exception] = None):
        super().__init__("pycuda.driver")
        self.gpus, self.init_error = list(gpus), init_error
        self.initialized, self.pushed, self.memory = False, [], {}
        cuda = self

        class Context:
            def __init__(self, index):
                self.index = index

            def push(self):
                cuda.pushed.append(self.index)

            def pop(self):
                pass

        class Device:
            def __init__(self, index):
                if not 0 <= index < len(cuda.gpus):
                    raise FakeCudaError(f"invalid device ordinal {index}")
                self.index = index

            @staticmethod
            def count():
                return len(cuda.gpus)

            def name(self):
                return cuda.gpus[self.index]

            def retain_primary_context(self):
                return Context(self.index)

        class Allocation:
            def __init__(self, nbytes):
                self.data = np.zeros(nbytes, np.uint8)
                cuda.memory[id(self)] = self

            def __int__(self):
                return id(self)

        class Stream:
            handle = 0

            def synchronize(self):
                pass

        self.Device, self.Stream, self._Allocation = Device, Stream, Allocation

    def init(self):
        if self.init_error is not None:
            raise self.init_error
        self.initialized = True

    def mem_alloc(self, nbytes):
        return self._Allocation(int(nbytes))

    @staticmethod
    def pagelocked_empty(count, dtype):
        return np.empty(int(count), dtype)

    @staticmethod
    def memcpy_htod_async(device, host, stream):
        raw = np.ascontiguousarray(host).view(np.uint8)
        device.data[:raw.size] = raw

    @staticmethod
    def memcpy_dtoh_async(host, device, stream):
        raw = host.view(np.uint8)
        raw[:] = device.data[:raw.size]


class FakeTensorRT(types.ModuleType):
    """`tensorrt` at `version`; `parse_ok=False` makes the ONNX parser fail, `execute_error`
    is raised by execute_async_v3."""

    def __init__(self, cuda: FakeCuda, version: str = "10.3.0"):
        super().__init__("tensorrt")
        self.__version__ = version
        self.parse_ok, self.execute_error = True, None
        self.network_flags, self.builder_flags, self.parsed, self.profiles = [], [], [], []
        trt = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class NetworkDefinitionCreationFlag:
            STRONGLY_TYPED = 0

        class MemoryPoolType:
            WORKSPACE = 0

        class BuilderFlag:
            FP16, INT8 = 0, 1

        class Profile:
            def set_shape(self, name, minimum, optimum, maximum):
                trt.profiles.append((name, tuple(minimum), tuple(optimum), tuple(maximum)))

        class Config:
            def set_memory_pool_limit(self, pool, size):
                self.workspace = size

            def add_optimization_profile(self, profile):
                self.profile = profile

            def set_flag(self, flag):
                trt.builder_flags.append(flag)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                trt.network_flags.append(flags)
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"fake-engine:%d" % len(trt.parsed)

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                trt.parsed.append(bytes(data))
                return trt.parse_ok

            def get_error(self, index):
                return "In node 3 (importQuantizeLinear): UNSUPPORTED_NODE"

        class Execution:
            def __init__(self, dim):
                self.dim, self.addresses, self.shape = dim, {}, None

            def set_tensor_address(self, name, address):
                self.addresses[name] = address

            def set_input_shape(self, name, shape):
                self.shape = tuple(shape)
                return True

            def execute_async_v3(self, stream_handle):
                if trt.execute_error is not None:
                    raise trt.execute_error
                count = int(np.prod(self.shape))
                image = cuda.memory[self.addresses["image"]].data[:count * 4].view(np.float32)
                means = image.reshape(self.shape[0], -1).mean(axis=1)
                out = np.repeat(means, self.dim).astype(np.float32)
                cuda.memory[self.addresses["descriptor"]].data[:out.nbytes] = out.view(np.uint8)
                return True

        class Engine:
            num_io_tensors = 2

            def __init__(self, dim):
                self.dim = dim

            def get_tensor_name(self, index):
                return ("image", "descriptor")[index]

            def get_tensor_dtype(self, name):
                return "float32"

            def create_execution_context(self):
                return Execution(self.dim)

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                return Engine(trt.dim) if bytes(data).startswith(b"fake-engine") else None

        self.dim = 24
        for cls in (Logger, NetworkDefinitionCreationFlag, MemoryPoolType, BuilderFlag, Builder,
                    OnnxParser, Runtime):
            setattr(self, cls.__name__, cls)

    @staticmethod
    def nptype(dtype):
        return np.dtype(dtype).type


def install(monkeypatch, version: str = "10.3.0", gpus: Sequence[str] = ("Orin",),
            init_error: Optional[Exception] = None):
    """Put fake tensorrt and pycuda.driver modules in sys.modules; returns (trt, cuda)."""
    cuda = FakeCuda(gpus, init_error)
    trt = FakeTensorRT(cuda, version)
    package = types.ModuleType("pycuda")
    package.driver = cuda
    for name, module in (("tensorrt", trt), ("pycuda", package), ("pycuda.driver", cuda)):
        monkeypatch.setitem(sys.modules, name, module)
    return trt, cuda
