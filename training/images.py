"""Training inputs: dataset images at the training resolution (and synthetic night renderings of
them), and the outputs of the model's frozen layers, each computed once."""
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Hashable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from training.augment import synthetic_night
from vpr_ros.io.images import read_image
from vpr_ros.runtime.preprocess import STRIDE, resize_rgb


@dataclass(frozen=True)
class SyntheticImage:
    """The night rendering `training.augment.synthetic_night` makes of `source` with `seed`."""

    source: Path
    seed: int


ImageKey = Union[Path, SyntheticImage]


class ImageStore:
    """Reads images resized to a fixed (height, width) and turns batches into float tensors in [0, 1].

    Tuples are batched, so every image gets the same size; the trainer derives it from the first
    training image and the model's `image_long_side`, as the robot's preprocessing would.
    Synthetic images are rendered from their resized source, so they look the same at any
    source resolution.

    Mining touches every image once per cache refresh and each tuple re-reads a dozen images, so
    keeping the resized uint8 images in memory (`cache=True`) removes JPEG decoding from the loop;
    Gardens Point at 224×384 takes about 150 MB.
    """

    start = 0  # the model's input is the image itself

    def __init__(self, size: Tuple[int, int], cache: bool = True):
        height, width = int(size[0]), int(size[1])
        if height <= 0 or width <= 0 or height % STRIDE or width % STRIDE:
            raise ValueError(f"image size must be positive multiples of {STRIDE} (height, width), "
                             f"got {size}")
        self.size = (height, width)
        self.cache = cache
        self._images: Dict[ImageKey, np.ndarray] = {}

    def load(self, key: ImageKey) -> np.ndarray:
        """H×W×3 uint8 RGB at the store's size."""
        image = self._images.get(key)
        if image is None:
            if isinstance(key, SyntheticImage):
                image = synthetic_night(self.load(key.source), np.random.default_rng(key.seed))
            else:
                image = resize_rgb(read_image(key), self.size)
            if self.cache:
                self._images[key] = image
        return image

    def batch(self, keys: Sequence) -> torch.Tensor:
        """(B, 3, H, W) float32 in [0, 1], the model's input convention."""
        stacked = np.stack([self.load(k if isinstance(k, SyntheticImage) else Path(k)) for k in keys])
        return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)


class PrefixStore:
    """Outputs of backbone trunk modules 0..`start`-1, which training keeps frozen, per image.

    With BatchNorm statistics fixed and those weights frozen, their output for an image never
    changes during a run, so it is computed once and only the trainable rest of the network runs
    per step (4.8× faster steps on this CPU, bench/training_step_speed.py). Memory: about 58 KB per image for
    EfficientNet-Lite2 block 16 with 2 trainable blocks at 320×192 (float16 storage). A shared
    `cache` dict lets several runs reuse the features; entries are keyed by a hash of the frozen
    weights, so runs with other frozen weights never read them.
    """

    def __init__(self, images: ImageStore, backbone: nn.Module, start: int,
                 cache: Optional[dict] = None, batch_size: int = 16):
        if start < 1:
            raise ValueError(f"PrefixStore needs at least one frozen trunk module, got start={start}")
        self.images = images
        self.backbone = backbone
        self.start = start
        self.batch_size = batch_size
        shared = {} if cache is None else cache
        self._features: Dict[Hashable, torch.Tensor] = shared.setdefault(self._prefix_key(), {})

    def _prefix_key(self) -> Tuple[str, int, Tuple[int, int]]:
        digest = hashlib.sha256()
        for module in self.backbone.trunk()[: self.start]:
            for tensor in module.state_dict().values():
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest(), self.start, self.images.size

    @torch.no_grad()
    def batch(self, keys: Sequence) -> torch.Tensor:
        """(B, C, h, w) float32 outputs of the frozen prefix for `keys` (image paths or
        `SyntheticImage`s), on the backbone's device."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._features]
        device = next(self.backbone.parameters()).device
        if missing:
            was_training = self.backbone.training
            self.backbone.eval()
            for i in range(0, len(missing), self.batch_size):
                chunk = missing[i:i + self.batch_size]
                out = self.backbone.run_trunk(self.images.batch(chunk).to(device), 0, self.start)
                for key, features in zip(chunk, out.half().cpu()):
                    self._features[key] = features.clone()
            self.backbone.train(was_training)
        return torch.stack([self._features[k] for k in keys]).float().to(device)
