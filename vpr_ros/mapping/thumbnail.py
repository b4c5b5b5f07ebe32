"""Small JPEG thumbnails kept with keyframes, for match images and map inspection."""
import cv2
import numpy as np


def encode_thumbnail(image: np.ndarray, long_side: int = 160, quality: int = 80) -> bytes:
    """JPEG bytes of an RGB uint8 image shrunk to `long_side` pixels on its long side."""
    scale = min(1.0, long_side / max(image.shape[:2]))
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not JPEG-encode a thumbnail of an image of shape {image.shape}")
    return data.tobytes()


def decode_thumbnail(data: bytes) -> np.ndarray:
    """RGB uint8 image from thumbnail JPEG bytes."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("thumbnail bytes are not a decodable JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
