"""Read images from disk as RGB uint8 arrays, with errors that name the file."""
import re
from pathlib import Path
from typing import List, Union

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def list_images(folder: Union[str, Path]) -> List[Path]:
    """Image files directly in `folder`, in natural order (Image2 before Image10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}")
    return sorted(files, key=_natural_key)


def read_image(path: Union[str, Path]) -> np.ndarray:
    """Decode `path` to an H×W×3 uint8 RGB array (grey images are expanded to 3 channels)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f"cannot decode image {path}: the file is empty or not an image; "
                         f"replace or remove it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
