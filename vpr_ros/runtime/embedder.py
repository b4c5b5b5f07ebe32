"""The `Embedder` interface (images in, L2-normalized descriptors out) and the torch backend."""
import logging
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from vpr_ros.runtime.preprocess import preprocess

LOG = logging.getLogger(__name__)


class Embedder:
    """Turns H×W×3 uint8 RGB images of any size into (N, dim) float32 unit-norm descriptors.

    Subclasses implement `_run(batch)` on a preprocessed (B, 3, h, w) float32 batch; images are
    grouped by input size so that each forward pass sees one shape.
    """

    dim: int
    fingerprint: str
    backend: str = "base"

    def __init__(self, long_side: int, batch_size: int = 4):
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.long_side = long_side
        self.batch_size = batch_size

    def _run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 descriptors, rows L2-normalized, in the order of `images`."""
        out = np.empty((len(images), self.dim), dtype=np.float32)
        by_shape: Dict[tuple, List[int]] = defaultdict(list)
        tensors = [preprocess(image, self.long_side) for image in images]
        for i, tensor in enumerate(tensors):
            by_shape[tensor.shape].append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                out[chunk] = self._run(np.stack([tensors[i] for i in chunk]))
        return out


class TorchEmbedder(Embedder):
    """PyTorch backend: the reference implementation, CPU or CUDA."""

    backend = "torch"

    def __init__(self, model, batch_size: int = 4, device: str = "cpu",
                 threads: Optional[int] = None):
        import torch

        super().__init__(model.config.image_long_side, batch_size)
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.dim = model.output_dim
        self.fingerprint = model.fingerprint()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x = self._torch.from_numpy(batch).to(self.device)
            return self.model(x).float().cpu().numpy()


def load_embedder(checkpoint=None, backend: str = "auto", model=None, **kwargs) -> Embedder:
    """An Embedder for a checkpoint file (or an in-memory `model`) on the chosen backend.

    backend: "torch", "onnxruntime", "tensorrt" or "auto" (fastest available, see backends.py).
    """
    from vpr_ros.runtime.backends import create_embedder

    if model is None and checkpoint is None:
        raise ValueError("no model given: pass a checkpoint (--model model.pt); build an "
                         "off-the-shelf one with `vpr-ros eval --save-model model.pt`")
    if model is None and Path(checkpoint).suffix.lower() not in (".onnx", ".engine"):
        from vpr_ros.model.checkpoint import load_checkpoint
        model = load_checkpoint(checkpoint)
    return create_embedder(model, backend=backend, checkpoint=checkpoint, **kwargs)
