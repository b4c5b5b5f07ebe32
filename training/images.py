"""Load dataset images at the training resolution, optionally kept in memory between epochs."""
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from vpr_ros.io.images import read_image
from vpr_ros.runtime.preprocess import STRIDE, resize_rgb


class ImageStore:
    """Reads images resized to a fixed (height, width) and turns batches into float tensors in [0, 1].

    Tuples are batched, so every image gets the same size; the trainer derives it from the first
    training image and the model's `image_long_side`, as the robot's preprocessing would.

    Mining touches every image once per cache refresh and each tuple re-reads a dozen images, so
    keeping the resized uint8 images in memory (`cache=True`) removes JPEG decoding from the loop;
    Gardens Point at 224×384 takes about 150 MB.
    """

    def __init__(self, size: Tuple[int, int], cache: bool = True):
        height, width = int(size[0]), int(size[1])
        if height <= 0 or width <= 0 or height % STRIDE or width % STRIDE:
            raise ValueError(f"image size must be positive multiples of {STRIDE} (height, width), "
                             f"got {size}")
        self.size = (height, width)
        self.cache = cache
        self._images: Dict[Path, np.ndarray] = {}

    def load(self, path: Path) -> np.ndarray:
        """H×W×3 uint8 RGB at the store's size."""
        image = self._images.get(path)
        if image is None:
            image = resize_rgb(read_image(path), self.size)
            if self.cache:
                self._images[path] = image
        return image

    def batch(self, paths: Sequence[Path]) -> torch.Tensor:
        """(B, 3, H, W) float32 in [0, 1], the model's input convention."""
        stacked = np.stack([self.load(Path(p)) for p in paths])
        return torch.from_numpy(stacked).permute(0, 3, 1, 2).float().div_(255.0)
