"""Image preprocessing shared by every backend: resize by the long side to multiples of 32."""
from typing import Tuple

import cv2
import numpy as np

STRIDE = 32
"""Total stride of every backbone: input sides are multiples of it (kept torch-free for ORT/TRT)."""


def target_size(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(H, W) with the long side near `long_side`, aspect kept, both rounded to multiples of 32.

    Rounding to the network stride keeps TF-"same" padding static (see backbones.py) and costs
    at most 16 px of aspect distortion.
    """
    scale = long_side / max(height, width)
    return (max(STRIDE, int(round(height * scale / STRIDE)) * STRIDE),
            max(STRIDE, int(round(width * scale / STRIDE)) * STRIDE))


def check_image(image: np.ndarray) -> None:
    """Raise ValueError unless `image` is a non-empty H×W×3 uint8 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3 or image.shape[0] < 8 or image.shape[1] < 8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected an H×W×3 uint8 RGB image of at least 8×8, got shape {shape} "
                         f"dtype {dtype}")


def resize_rgb(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """`image` resized to (H, W): area averaging when shrinking, bilinear when enlarging.

    Training uses it too, so the network is trained on the pixels the robot will feed it.
    """
    height, width = size
    shrink = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def preprocess(image: np.ndarray, long_side: int) -> np.ndarray:
    """H×W×3 uint8 RGB → 3×h×w float32 in [0, 1] at the network's input size."""
    check_image(image)
    resized = resize_rgb(image, target_size(image.shape[0], image.shape[1], long_side))
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32) / 255.0
