"""sensor_msgs/Image and CompressedImage to RGB arrays and back, without cv_bridge.

One implementation for the offline readers (`rosbags` messages) and the rclpy node: the
functions only touch message fields (`height`, `width`, `encoding`, `step`, `data`, ...), so
any object with the ROS 2 field names works.

mono16 is mapped to 8 bits by a fixed linear scale, `value * 255 / mono16_max` (full 16-bit
range by default), not by per-frame min/max: a fixed mapping keeps the same scene the same
brightness from frame to frame, which descriptors need. Cameras that put 10/12-bit data in
mono16 should pass `mono16_max=1023/4095`.
"""
import array
import dataclasses
import sys
from typing import Dict, Tuple

import cv2
import numpy as np

# encoding -> (channels, bytes per channel, OpenCV conversion to RGB or None)
_RAW_LAYOUTS: Dict[str, Tuple[int, int, object]] = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "8uc1": (1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),
    "16uc1": (1, 2, cv2.COLOR_GRAY2RGB),
    # OpenCV names Bayer patterns by the second row; these pairs are the ones cv_bridge uses.
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2RGB),
    "yuv422": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
}
SUPPORTED_ENCODINGS = tuple(_RAW_LAYOUTS)

# encoding -> (channels, OpenCV conversion from RGB or None) for messages we publish
_OUTPUT_LAYOUTS: Dict[str, Tuple[int, object]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_RGB2BGR),
    "rgba8": (4, cv2.COLOR_RGB2RGBA),
    "bgra8": (4, cv2.COLOR_RGB2BGRA),
    "mono8": (1, cv2.COLOR_RGB2GRAY),
    "mono16": (1, cv2.COLOR_RGB2GRAY),
}
OUTPUT_ENCODINGS = tuple(_OUTPUT_LAYOUTS)


def stamp_to_seconds(stamp) -> float:
    """`builtin_interfaces/Time` (fields `sec`, `nanosec`) as float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def seconds_to_stamp(seconds: float) -> Tuple[int, int]:
    """Float seconds as (`sec`, `nanosec`), with 0 <= nanosec < 1e9 as ROS requires."""
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return int(sec), int(nanosec)


def _byte_view(data) -> np.ndarray:
    """Message `data` (numpy array, array.array, bytes or list) as flat uint8, no copy if possible."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    if isinstance(data, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)


def image_msg_to_rgb(msg, mono16_max: int = 65535) -> np.ndarray:
    """Decode a sensor_msgs/Image to an H×W×3 uint8 RGB array (a copy, safe to keep).

    Honours `step` (row padding) and `is_bigendian` (16-bit data). Raises ValueError for an
    unsupported encoding or a payload whose size does not match height, width and step.
    """
    encoding = str(msg.encoding)
    layout = _RAW_LAYOUTS.get(encoding.lower())
    if layout is None:
        raise ValueError(f"unsupported image encoding '{encoding}'; supported: "
                         f"{', '.join(SUPPORTED_ENCODINGS)} (or publish a CompressedImage)")
    channels, depth, conversion = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f"empty {encoding} image ({width}x{height}): the camera sent no pixels")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ValueError(f"{encoding} image {width}x{height}: step {step} is smaller than one "
                         f"row of pixels ({row_bytes} bytes); the message is garbled")
    data = _byte_view(msg.data)
    if data.size < step * height:
        raise ValueError(f"{encoding} image {width}x{height} with step {step} needs "
                         f"{step * height} bytes but data holds {data.size}; the message is garbled")
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    if depth == 2:
        byte_order = ">u2" if msg.is_bigendian else "<u2"
        pixels = _mono16_to_mono8(np.ascontiguousarray(rows).view(byte_order), mono16_max)
    else:
        pixels = rows.reshape((height, width, channels) if channels > 1 else (height, width))
    if conversion is None:
        return np.array(pixels)  # a copy: the result must not alias the message buffer
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def _mono16_to_mono8(pixels: np.ndarray, mono16_max: int) -> np.ndarray:
    """Scale 16-bit intensities linearly so that `mono16_max` becomes 255 (rounded, clipped)."""
    if not 0 < mono16_max <= 65535:
        raise ValueError(f"mono16_max must be in 1..65535, got {mono16_max}")
    scaled = (pixels.astype(np.uint32) * 255 + mono16_max // 2) // mono16_max
    return np.minimum(scaled, 255).astype(np.uint8)


def compressed_msg_to_rgb(msg) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG) to H×W×3 uint8 RGB with OpenCV.

    Works for every image_transport format string ("jpeg", "png", "rgb8; jpeg compressed
    bgr8", ...): the payload itself says what it is. Depth images ("compressedDepth") and
    undecodable payloads raise ValueError.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ValueError(f"CompressedImage format '{fmt}' is a depth image; place recognition "
                         f"needs a colour or grey camera topic (JPEG or PNG)")
    data = _byte_view(msg.data)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"cannot decode CompressedImage (format '{fmt}', {data.size} bytes): "
                         f"the payload is not a valid JPEG or PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def message_to_rgb(msg, mono16_max: int = 65535) -> np.ndarray:
    """Decode either image message type: CompressedImage has `format`, Image has `encoding`."""
    if hasattr(msg, "format"):
        return compressed_msg_to_rgb(msg)
    if hasattr(msg, "encoding"):
        return image_msg_to_rgb(msg, mono16_max=mono16_max)
    raise ValueError(f"{type(msg).__name__} is neither a sensor_msgs/Image nor a "
                     f"sensor_msgs/CompressedImage")


def rgb_to_image_msg(rgb: np.ndarray, msg_type, encoding: str = "rgb8", stamp: float = 0.0,
                     frame_id: str = ""):
    """Build a sensor_msgs/Image of class `msg_type` from an H×W×3 uint8 RGB array.

    `msg_type` is rclpy's `sensor_msgs.msg.Image` or a rosbags class such as
    `typestore.types["sensor_msgs/msg/Image"]`. mono16 stores grey × 257, so that 255 maps to
    65535 and decoding with the default `mono16_max` gives the grey values back exactly.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"expected a non-empty H×W×3 uint8 RGB image, got shape {rgb.shape} "
                         f"dtype {rgb.dtype}")
    layout = _OUTPUT_LAYOUTS.get(encoding)
    if layout is None:
        raise ValueError(f"cannot publish encoding '{encoding}'; supported: {', '.join(OUTPUT_ENCODINGS)}")
    channels, conversion = layout
    pixels = np.ascontiguousarray(rgb) if conversion is None else cv2.cvtColor(rgb, conversion)
    if encoding == "mono16":
        pixels = (pixels.astype(np.uint16) * 257).astype("<u2")
    height, width = rgb.shape[:2]
    sec, nanosec = seconds_to_stamp(stamp)
    fields = {
        "header": {"stamp": {"sec": sec, "nanosec": nanosec}, "frame_id": frame_id},
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * channels * pixels.itemsize,
        "data": np.frombuffer(pixels.tobytes(), dtype=np.uint8),
    }
    return _make_message(msg_type, fields)


def _make_message(msg_type, fields: dict):
    """Instantiate `msg_type` with nested `fields` (dicts for sub-messages).

    rosbags messages are dataclasses whose constructor needs every field and whose nested
    types are named in the field annotations; rclpy messages construct with defaults and take
    attribute assignment, with uint8[] fields held as array.array('B').
    """
    if dataclasses.is_dataclass(msg_type):
        field_types = {f.name: f.type for f in dataclasses.fields(msg_type)}
        values = {}
        for name, value in fields.items():
            if isinstance(value, dict):
                nested = field_types[name]
                if isinstance(nested, str):
                    nested = getattr(sys.modules[msg_type.__module__], nested)
                value = _make_message(nested, value)
            values[name] = value
        return msg_type(**values)
    msg = msg_type()
    _assign_fields(msg, fields)
    return msg


def _assign_fields(msg, fields: dict) -> None:
    """Set `fields` on a default-constructed rclpy-style message, recursing into sub-messages."""
    for name, value in fields.items():
        current = getattr(msg, name)
        if isinstance(value, dict):
            _assign_fields(current, value)
        elif isinstance(value, np.ndarray) and isinstance(current, array.array):
            setattr(msg, name, array.array(current.typecode, value.tobytes()))
        else:
            setattr(msg, name, value)
