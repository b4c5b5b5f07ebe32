"""Raw-pixel baseline (64×32 grey, z-normalized, cosine): the floor every descriptor must beat."""
from typing import Sequence

import cv2
import numpy as np


def raw_pixel_descriptors(images: Sequence[np.ndarray], size=(64, 32)) -> np.ndarray:
    """(N, 64·32) float32 unit-norm descriptors of downsampled, z-normalized grey images."""
    out = np.empty((len(images), size[0] * size[1]), dtype=np.float32)
    for i, image in enumerate(images):
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
        small -= small.mean()
        out[i] = small / (np.linalg.norm(small) + 1e-6)
    return out
