"""Reject frames that carry no place information before they reach the network."""
from typing import Optional

import numpy as np

MIN_SIDE_PX = 32
MIN_STD = 2.0


def frame_problem(image) -> Optional[str]:
    """None for a usable H×W×3 uint8 RGB image, else what is wrong with it (for the decision)."""
    if not isinstance(image, np.ndarray):
        return f"image is {type(image).__name__}, not a numpy array"
    if image.ndim != 3 or image.shape[2] != 3:
        return f"image must be H×W×3 RGB, got shape {image.shape}"
    if image.dtype != np.uint8:
        return f"image must be uint8, got {image.dtype}"
    if min(image.shape[:2]) < MIN_SIDE_PX:
        return f"image is {image.shape[1]}×{image.shape[0]}, smaller than {MIN_SIDE_PX} px on a side"
    step = max(1, min(image.shape[:2]) // 64)
    if float(image[::step, ::step].std()) < MIN_STD:
        return "image is uniform (blank, covered lens or garbled decode)"
    return None
