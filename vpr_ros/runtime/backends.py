"""Backend selection: `torch`, `onnxruntime`, `tensorrt`, or `auto` (the fastest that works here).

`auto` tries, in order: TensorRT (needs tensorrt 10.3+ and pycuda and a GPU; loads a cached
engine of the model, or builds one on first use), ONNX Runtime with CUDA, ONNX Runtime on the
CPU, then torch. A backend counts only once it has embedded a first frame; any failure before
that moves on, and one log line gives the choice and why each skipped one was skipped.

The ONNX backends need an ONNX file: pass `onnx=`, give an `.onnx` path as the checkpoint, or
give a `.pt` checkpoint, which is then exported once into
`.vpr_ros_cache/` beside it (file name keyed by the model fingerprint, so retraining never
reuses a stale export). An in-memory model with no checkpoint is not exported: nothing is
written to disk behind the caller's back, and `auto` falls back to torch.
"""
import logging
from functools import cached_property, partial
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from vpr_ros.runtime.embedder import Embedder
from vpr_ros.runtime.preprocess import target_size

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "torch")


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (missing package, no GPU, no ONNX file); `auto` moves on."""


class _Sources:
    """What the caller gave (model, checkpoint, ONNX, engine), resolved lazily per backend."""

    def __init__(self, model, checkpoint, onnx, engine):
        suffix = Path(checkpoint).suffix.lower() if checkpoint else ""
        self.model = model
        self.checkpoint = checkpoint if suffix not in (".onnx", ".engine") else None
        self.onnx = onnx or (checkpoint if suffix == ".onnx" else None)
        self.engine = engine or (checkpoint if suffix == ".engine" else None)
        self._exported: Optional[Path] = None

    @cached_property
    def fingerprint(self) -> Optional[str]:
        """The model's fingerprint (hashing every weight takes a moment: done once)."""
        return self.model.fingerprint() if self.model is not None else None

    def torch_model(self):
        if self.model is None and self.checkpoint is not None:
            from vpr_ros.model.checkpoint import load_checkpoint

            self.model = load_checkpoint(self.checkpoint)
        if self.model is None:
            raise BackendUnavailable("torch needs a .pt checkpoint or a model, got only "
                                     f"{self.onnx or self.engine}")
        return self.model

    def onnx_path(self) -> Path:
        if self.onnx is not None:
            return Path(self.onnx)
        if self.model is None or self.checkpoint is None:
            raise BackendUnavailable("no ONNX file (in-memory model without a checkpoint); pass "
                                     "onnx=... or create one with `vpr-ros export`")
        if self._exported is None:
            try:
                from vpr_ros.export.onnx_export import ensure_onnx

                self._exported = ensure_onnx(self.model, self.checkpoint)
            except ImportError as err:
                raise BackendUnavailable(f"cannot export ONNX on the fly ({err}); "
                                         f"pip install onnx, or pass onnx=...") from err
            except OSError as err:
                raise BackendUnavailable(f"cannot write the ONNX export beside "
                                         f"{self.checkpoint} ({err}); export it elsewhere with "
                                         f"`vpr-ros export` and pass onnx=...") from err
        return self._exported


def _tensorrt_device(device: Optional[str]) -> int:
    """The CUDA device index TensorRT runs on, once TensorRT, pycuda and that GPU are usable."""
    from vpr_ros.runtime.tensorrt_platform import (UnsupportedTensorRT, cuda_device_index,
                                                   tensorrt_platform)

    try:
        device_index = cuda_device_index(device)
    except ValueError as err:
        raise BackendUnavailable(str(err)) from err
    try:
        tensorrt_platform(device_index)
    except ImportError as err:
        raise BackendUnavailable(f"import failed: {err}") from err
    except UnsupportedTensorRT as err:
        raise BackendUnavailable(str(err)) from err
    except Exception as err:  # pycuda raises its own error types when no driver/GPU is present
        raise BackendUnavailable(f"no usable CUDA GPU: {type(err).__name__}: {err}") from err
    return device_index


def _onnxruntime_has_cuda() -> bool:
    """Whether onnxruntime has its CUDA provider; BackendUnavailable when it is not installed."""
    try:
        from vpr_ros.runtime.onnxruntime_backend import cuda_provider_available

        return cuda_provider_available()
    except ImportError as err:
        raise BackendUnavailable(f"import failed: {err}") from err


def _tensorrt(src: _Sources, batch_size: int, precision: str, device: Optional[str],
              **_) -> Embedder:
    device_index = _tensorrt_device(device)
    from vpr_ros.runtime.tensorrt_backend import TensorRTEmbedder

    if src.engine is not None:
        return TensorRTEmbedder(src.engine, batch_size=batch_size, device_index=device_index,
                                expected_fingerprint=src.fingerprint, precision=precision)
    return TensorRTEmbedder.from_onnx(src.onnx_path(), precision=precision, batch_size=batch_size,
                                      device_index=device_index,
                                      expected_fingerprint=src.fingerprint)


def _onnxruntime(src: _Sources, batch_size: int, threads: Optional[int], use_cuda: bool,
                 **_) -> Embedder:
    from vpr_ros.runtime.onnxruntime_backend import OnnxRuntimeEmbedder

    has_cuda = _onnxruntime_has_cuda()
    if use_cuda and not has_cuda:
        raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider "
                                 "(pip install onnxruntime-gpu)")
    embedder = OnnxRuntimeEmbedder(src.onnx_path(), batch_size=batch_size, threads=threads,
                                   use_cuda=use_cuda, expected_fingerprint=src.fingerprint)
    if use_cuda and embedder.device != "cuda":
        raise BackendUnavailable("the CUDA provider failed to start (CUDA/cuDNN libraries "
                                 "missing?); ONNX Runtime fell back to the CPU")
    return embedder


def _torch(src: _Sources, batch_size: int, threads: Optional[int], device: Optional[str],
           **_) -> Embedder:
    try:
        import torch

        from vpr_ros.runtime.embedder import TorchEmbedder
    except ImportError as err:
        raise BackendUnavailable(f"import failed: {err}") from err
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return TorchEmbedder(src.torch_model(), batch_size=batch_size, device=device, threads=threads)


_CANDIDATES = {
    "tensorrt": _tensorrt,
    "onnxruntime-cuda": partial(_onnxruntime, use_cuda=True),
    "onnxruntime-cpu": partial(_onnxruntime, use_cuda=False),
    "torch": _torch,
}


def probe_image(long_side: int) -> np.ndarray:
    """A mid-grey 4:3 frame at the embedder's input size: the first frame `auto` runs."""
    height, width = target_size(3, 4, long_side)
    return np.full((height, width, 3), 128, np.uint8)


def select_auto(src: _Sources, **kwargs) -> Tuple[Embedder, List[Tuple[str, str]]]:
    """The first backend of AUTO_ORDER that starts and embeds a first frame, and (name, reason)
    for each one skipped.

    A backend is skipped on any failure (missing package, no GPU, broken file, or an error of the
    GPU stack's own types, which are neither ValueError nor RuntimeError); reasons of backends
    that are merely unavailable start with no "failed:".
    """
    skipped: List[Tuple[str, str]] = []
    for name in AUTO_ORDER:
        try:
            embedder = _CANDIDATES[name](src, **kwargs)
            embedder.embed([probe_image(embedder.long_side)])
            return embedder, skipped
        except BackendUnavailable as err:
            skipped.append((name, str(err)))
        except Exception as err:  # any failure (GPU stacks raise their own types): move on
            skipped.append((name, f"failed: {type(err).__name__}: {err}"))
    reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped)
    raise ValueError(f"no embedding backend works here ({reasons})")


def check_backend(backend: str, device: Optional[str] = None) -> None:
    """Raise ValueError now when `backend` is unknown or its runtime cannot start here, so a
    command fails before its long work (clustering, embedding) instead of after it.

    Only the packages and the GPU are checked: whether the model loads is known later.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    try:
        if backend == "tensorrt":
            _tensorrt_device(device)
        elif backend == "onnxruntime":
            _onnxruntime_has_cuda()
    except BackendUnavailable as err:
        raise ValueError(f"backend {backend} is not available here: {err}; pick another "
                         f"--backend ({', '.join(BACKENDS)})") from err


def create_embedder(model=None, backend: str = "auto", checkpoint=None, onnx=None, engine=None,
                    batch_size: int = 4, threads: Optional[int] = None,
                    device: Optional[str] = None, precision: str = "auto") -> Embedder:
    """The embedder for `backend` ("auto", "tensorrt", "onnxruntime" or "torch").

    model: an in-memory VPRModel (torch backend, fingerprint checks); checkpoint: its `.pt`
    file (or an `.onnx` / `.engine` file); onnx / engine: explicit deployment files;
    threads: CPU threads (torch, ONNX Runtime); device: torch device (default: CUDA if present;
    "cuda:N" also picks TensorRT's GPU); precision: TensorRT engine precision, "auto" loads any
    cached engine of the model for this GPU and builds DEFAULT_PRECISION when there is none
    ("int8" needs calibration images, see `vpr-ros build-engine`).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    src = _Sources(model, checkpoint, onnx, engine)
    kwargs = dict(batch_size=batch_size, threads=threads, device=device, precision=precision)
    if backend == "auto":
        embedder, skipped = select_auto(src, **kwargs)
        detail = "; ".join(f"{name}: {reason}" for name, reason in skipped) or "nothing skipped"
        failed = any(reason.startswith("failed:") for _, reason in skipped)
        LOG.log(logging.WARNING if failed else logging.INFO, "backend auto: using %s (%s)",
                _describe(embedder), detail)
        return embedder
    name = {"onnxruntime": "onnxruntime-cpu"}.get(backend, backend)
    if backend == "onnxruntime" and device == "cuda":
        name = "onnxruntime-cuda"
    try:
        return _CANDIDATES[name](src, **kwargs)
    except BackendUnavailable as err:
        raise ValueError(f"backend {backend} is not available here: {err}") from err


def _describe(embedder: Embedder) -> str:
    device = getattr(embedder, "device", None)
    return f"{embedder.backend} on {device}" if device is not None else embedder.backend
