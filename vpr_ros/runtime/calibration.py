"""INT8 calibration data: image folders → fixed-shape batches for the Q/DQ scale calibration.

Every batch has the same (B, 3, H, W) (the engine profile's opt shape): images go through the
runtime preprocessing at long side max(H, W) and are resized to exactly H×W when their aspect
differs. `vpr_ros.export.precision` feeds them to ONNX Runtime's static quantization.
"""
import hashlib
import logging
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from vpr_ros.io.images import list_images, read_image
from vpr_ros.runtime.preprocess import preprocess

LOG = logging.getLogger(__name__)

DEFAULT_MAX_IMAGES = 500        # TensorRT's guidance: ~500 representative images suffice


def calibration_images(folder, max_images: int = DEFAULT_MAX_IMAGES) -> List[Path]:
    """Up to `max_images` images spread evenly over `folder` (natural order), not just the first."""
    images = list_images(folder)
    if len(images) <= max_images:
        return images
    picks = np.linspace(0, len(images) - 1, max_images).round().astype(int)
    return [images[i] for i in picks]


def check_calibration_images(images: List[Path], batch_size: int, folder) -> None:
    """ValueError unless `images` fill at least one calibration batch."""
    if len(images) < batch_size:
        raise ValueError(f"INT8 calibration needs at least {batch_size} images (one batch) in "
                         f"{folder}, found {len(images)}; add frames from the robot's own camera "
                         f"or lower --calib-batch")


def calibration_id(images: List[Path], batch_size: int) -> str:
    """16 hex digits naming a calibration set (file names, sizes, batch): part of the engine key."""
    digest = hashlib.sha256(str(batch_size).encode())
    for path in images:
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def calibration_tensor(image: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, bool]:
    """(3×H×W float32 in [0, 1], whether it was resized): runtime preprocessing, then exact size.

    The preprocessing keeps the aspect, so an image of another aspect than H:W is resized to
    H×W afterwards (and reported, since it slightly distorts what calibration sees).
    """
    tensor = preprocess(image, max(height, width))
    if tensor.shape[1:] == (height, width):
        return tensor, False
    resized = cv2.resize(tensor.transpose(1, 2, 0), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)), True


def calibration_batches(folder, batch_size: int, height: int, width: int,
                        max_images: int = DEFAULT_MAX_IMAGES,
                        images: Optional[List[Path]] = None) -> Iterator[np.ndarray]:
    """(batch_size, 3, H, W) float32 batches from `folder`; a last partial batch is dropped.

    Raises ValueError when there are fewer images than one batch.
    """
    images = images if images is not None else calibration_images(folder, max_images)
    check_calibration_images(images, batch_size, folder)
    resized_count = 0
    for start in range(0, len(images) - batch_size + 1, batch_size):
        batch = np.empty((batch_size, 3, height, width), dtype=np.float32)
        for slot, path in enumerate(images[start:start + batch_size]):
            batch[slot], resized = calibration_tensor(read_image(path), height, width)
            resized_count += resized
        yield batch
    if resized_count:
        LOG.warning("%d calibration images had another aspect than %dx%d and were resized to it",
                    resized_count, width, height)
