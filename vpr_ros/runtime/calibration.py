"""INT8 calibration data for TensorRT: image folders → fixed-shape batches, and the calibrator.

TensorRT calibrates a dynamic-shape network at one shape (the calibration profile), so every
batch has the same (B, 3, H, W): images go through the runtime preprocessing at long side
max(H, W) and are resized to exactly H×W when their aspect differs. TensorRT 10.1 deprecated
this implicit (calibrator-based) quantization in favour of explicit Q/DQ graphs; it still
works in 10.x, see `vpr_ros.export.tensorrt_build` for how the builder reports that.
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
    if len(images) < batch_size:
        raise ValueError(f"INT8 calibration needs at least {batch_size} images in {folder}, "
                         f"found {len(images)}; add images from the robot's own camera")
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


def create_entropy_calibrator(batches: Iterator[np.ndarray], batch_shape, cache_path,
                              num_batches: int):
    """A `tensorrt.IInt8EntropyCalibrator2` feeding `batches` and caching its table at `cache_path`.

    Needs tensorrt and pycuda, and a current CUDA context (the builder pushes one).
    """
    import pycuda.driver as cuda
    import tensorrt as trt
    from tqdm import tqdm

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Copies one host batch at a time into a device buffer TensorRT reads from."""

        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = batches
            self.shape = tuple(batch_shape)
            self.device_input = cuda.mem_alloc(int(np.prod(self.shape)) * 4)
            self.cache_path = Path(cache_path)
            self.progress = tqdm(total=num_batches, desc="INT8 calibration", unit="batch")

        def get_batch_size(self):
            return self.shape[0]

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                self.progress.close()
                return None
            cuda.memcpy_htod(self.device_input, np.ascontiguousarray(batch, dtype=np.float32))
            self.progress.update(1)
            return [int(self.device_input)]

        def read_calibration_cache(self):
            if self.cache_path.is_file():
                LOG.info("using INT8 calibration cache %s", self.cache_path)
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            from vpr_ros.io.atomic import atomic_write_bytes

            atomic_write_bytes(self.cache_path, bytes(cache))
            LOG.info("wrote INT8 calibration cache %s", self.cache_path)

    return EntropyCalibrator()
