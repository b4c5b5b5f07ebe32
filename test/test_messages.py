"""ROS image message conversions, exercised on real ROS 2 message classes from `rosbags`.

Every message goes through CDR serialization and back first, so the decoder sees exactly the
objects the bag reader hands it.
"""
import array

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from vpr_ros.io.messages import (
    OUTPUT_ENCODINGS,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    message_to_rgb,
    rgb_to_image_msg,
    seconds_to_stamp,
    stamp_to_seconds,
)

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
IMAGE = TYPESTORE.types["sensor_msgs/msg/Image"]
COMPRESSED = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
HEADER = TYPESTORE.types["std_msgs/msg/Header"]
TIME = TYPESTORE.types["builtin_interfaces/msg/Time"]

HEIGHT, WIDTH = 4, 5  # odd width: rows of 3-byte pixels are not 4-byte aligned


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _through_cdr(msg):
    """Serialize and deserialize, as a bag or a DDS wire would."""
    return TYPESTORE.deserialize_cdr(TYPESTORE.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def _raw_msg(rows: np.ndarray, encoding: str, width: int, padding: int = 0, big_endian: bool = False):
    """An Image whose rows are `rows` (H × row_bytes uint8) followed by `padding` junk bytes each."""
    height, row_bytes = rows.shape
    padded = np.concatenate([rows, np.full((height, padding), 0xAB, np.uint8)], axis=1)
    header = HEADER(stamp=TIME(sec=12, nanosec=500_000_000), frame_id="cam")
    msg = IMAGE(header=header, height=height, width=width, encoding=encoding,
                is_bigendian=int(big_endian), step=row_bytes + padding, data=padded.reshape(-1))
    return _through_cdr(msg)


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding,to_wire", [
    ("rgb8", lambda im: im),
    ("bgr8", lambda im: im[..., ::-1]),
    ("rgba8", lambda im: np.dstack([im, np.full(im.shape[:2], 7, np.uint8)])),
    ("bgra8", lambda im: np.dstack([im[..., ::-1], np.full(im.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_decode_to_rgb(rgb, encoding, to_wire, padding):
    wire = np.ascontiguousarray(to_wire(rgb))
    msg = _raw_msg(wire.reshape(HEIGHT, -1), encoding, WIDTH, padding)
    out = image_msg_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (HEIGHT, WIDTH, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("padding", [0, 1])
def test_mono8_expands_to_three_equal_channels(padding):
    grey = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH) * 9
    out = image_msg_to_rgb(_raw_msg(grey, "mono8", WIDTH, padding))
    np.testing.assert_array_equal(out, np.dstack([grey] * 3))


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("padding", [0, 2])
def test_mono16_honours_byte_order_and_scales_full_range(big_endian, padding):
    values = np.array([[0, 257, 32896, 65535, 128]] * HEIGHT, dtype=np.uint16)
    wire = values.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(HEIGHT, -1)
    out = image_msg_to_rgb(_raw_msg(wire, "mono16", WIDTH, padding, big_endian))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 128, 255, 0])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_mono16_max_stretches_12_bit_cameras():
    values = np.array([[0, 4095, 2048, 65535, 16]] * HEIGHT, dtype="<u2")
    msg = _raw_msg(values.view(np.uint8).reshape(HEIGHT, -1), "mono16", WIDTH)
    out = image_msg_to_rgb(msg, mono16_max=4095)
    np.testing.assert_array_equal(out[0, :, 1], [0, 255, 128, 255, 1])


@pytest.mark.parametrize("encoding,pattern", [
    ("bayer_rggb8", "rggb"), ("bayer_bggr8", "bggr"), ("bayer_gbrg8", "gbrg"), ("bayer_grbg8", "grbg"),
])
def test_bayer_mosaics_demosaic_to_the_right_colour(encoding, pattern):
    colour = (200, 100, 30)
    mosaic = np.zeros((8, 8), np.uint8)
    for (dy, dx), channel in zip(((0, 0), (0, 1), (1, 0), (1, 1)), pattern):
        mosaic[dy::2, dx::2] = colour["rgb".index(channel)]
    out = image_msg_to_rgb(_raw_msg(mosaic, encoding, 8))
    np.testing.assert_array_equal(out[2:6, 2:6], np.broadcast_to(colour, (4, 4, 3)))


@pytest.mark.parametrize("encoding,to_yuv", [
    ("yuv422", cv2.COLOR_RGB2YUV_UYVY), ("yuv422_yuy2", cv2.COLOR_RGB2YUV_YUY2),
])
def test_packed_yuv422_decodes_close_to_the_source(encoding, to_yuv):
    flat = np.zeros((4, 8, 3), np.uint8)
    flat[...] = (180, 90, 40)
    packed = cv2.cvtColor(flat, to_yuv)
    out = image_msg_to_rgb(_raw_msg(packed.reshape(4, -1), encoding, 8))
    assert np.abs(out.astype(int) - flat).max() <= 3


def test_decoded_image_does_not_alias_the_message_buffer(rgb):
    msg = _raw_msg(rgb.reshape(HEIGHT, -1), "rgb8", WIDTH)
    out = image_msg_to_rgb(msg)
    out[...] = 0
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("encoding", OUTPUT_ENCODINGS)
def test_round_trip_through_rosbags_message(rgb, encoding):
    msg = _through_cdr(rgb_to_image_msg(rgb, IMAGE, encoding=encoding, stamp=3.25, frame_id="match"))
    assert (msg.height, msg.width, msg.encoding, msg.header.frame_id) == (HEIGHT, WIDTH, encoding, "match")
    assert stamp_to_seconds(msg.header.stamp) == 3.25
    out = image_msg_to_rgb(msg)
    if encoding.startswith("mono"):
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(out, np.dstack([grey] * 3))
    else:
        np.testing.assert_array_equal(out, rgb)


class _RosidlStyleTime:
    def __init__(self):
        self.sec, self.nanosec = 0, 0


class _RosidlStyleHeader:
    def __init__(self):
        self.stamp, self.frame_id = _RosidlStyleTime(), ""


class _RosidlStyleImage:
    """Mimics how rosidl_generator_py builds sensor_msgs/Image: default-constructible,
    nested members pre-built, uint8[] stored as array.array('B') and type-checked on set."""

    def __init__(self):
        self.header = _RosidlStyleHeader()
        self.height = self.width = self.step = self.is_bigendian = 0
        self.encoding = ""
        self._data = array.array("B")

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        assert isinstance(value, array.array) and value.typecode == "B"
        self._data = value


def test_builds_rclpy_style_messages(rgb):
    msg = rgb_to_image_msg(rgb, _RosidlStyleImage, encoding="bgr8", stamp=7.5, frame_id="cam")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (7, 500_000_000, "cam")
    assert msg.step == WIDTH * 3 and len(msg.data) == HEIGHT * WIDTH * 3
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_builds_real_rclpy_messages_when_ros_is_installed(rgb):
    ros_image = pytest.importorskip("sensor_msgs.msg", reason="ROS 2 sensor_msgs not installed").Image
    msg = rgb_to_image_msg(rgb, ros_image, stamp=1.5, frame_id="cam")
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


@pytest.mark.parametrize("ext,fmt,tolerance", [
    (".png", "png", 0),
    (".png", "rgb8; png compressed bgr8", 0),
    (".jpg", "jpeg", 12),
    (".jpg", "rgb8; jpeg compressed bgr8", 12),
])
def test_compressed_jpeg_and_png_decode_to_rgb(ext, fmt, tolerance):
    smooth = np.zeros((32, 48, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 48, dtype=np.uint8)
    smooth[..., 1] = 200
    smooth[..., 2] = np.linspace(255, 0, 32, dtype=np.uint8)[:, None]
    ok, payload = cv2.imencode(ext, cv2.cvtColor(smooth, cv2.COLOR_RGB2BGR))
    assert ok
    msg = _through_cdr(COMPRESSED(header=HEADER(stamp=TIME(sec=1, nanosec=0), frame_id="cam"),
                                  format=fmt, data=payload.reshape(-1)))
    out = compressed_msg_to_rgb(msg)
    assert out.shape == smooth.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - smooth).max() <= tolerance
    np.testing.assert_array_equal(message_to_rgb(msg), out)


def _compressed(data: bytes, fmt: str = "jpeg"):
    return COMPRESSED(header=HEADER(stamp=TIME(sec=0, nanosec=0), frame_id=""), format=fmt,
                      data=np.frombuffer(data, np.uint8))


@pytest.mark.parametrize("payload", [b"", b"\xff\xd8\xff\xe0 definitely not a jpeg"])
def test_undecodable_compressed_payload_is_a_clear_error(payload):
    with pytest.raises(ValueError, match=rf"format 'jpeg', {len(payload)} bytes.*JPEG or PNG"):
        compressed_msg_to_rgb(_compressed(payload))


def test_compressed_depth_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="depth image"):
        compressed_msg_to_rgb(_compressed(b"\x00" * 16, "16UC1; compressedDepth png"))


def test_unsupported_encoding_names_it_and_the_supported_ones(rgb):
    msg = _raw_msg(rgb.reshape(HEIGHT, -1), "32FC1", WIDTH)
    with pytest.raises(ValueError, match=r"'32FC1'.*rgb8.*mono16"):
        image_msg_to_rgb(msg)


def test_short_payload_names_the_sizes(rgb):
    msg = _raw_msg(rgb.reshape(HEIGHT, -1), "rgb8", WIDTH)
    msg.data = msg.data[:-1]
    size = HEIGHT * WIDTH * 3
    with pytest.raises(ValueError, match=rf"needs {size} bytes but data holds {size - 1}"):
        image_msg_to_rgb(msg)


def test_step_shorter_than_a_row_is_garbled(rgb):
    msg = _raw_msg(rgb.reshape(HEIGHT, -1), "rgb8", WIDTH)
    msg.step = WIDTH * 3 - 1
    with pytest.raises(ValueError, match="step 14 is smaller than one row"):
        image_msg_to_rgb(msg)


def test_empty_image_is_refused():
    msg = _raw_msg(np.zeros((0, 0), np.uint8), "rgb8", 0)
    with pytest.raises(ValueError, match="empty rgb8 image"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("bad", [np.zeros((4, 5), np.uint8), np.zeros((4, 5, 3), np.float32),
                                 np.zeros((0, 5, 3), np.uint8)])
def test_rgb_to_image_msg_refuses_non_rgb_input(bad):
    with pytest.raises(ValueError, match="H×W×3 uint8 RGB"):
        rgb_to_image_msg(bad, IMAGE)


def test_rgb_to_image_msg_refuses_unknown_encoding(rgb):
    with pytest.raises(ValueError, match="cannot publish encoding 'yuv422'"):
        rgb_to_image_msg(rgb, IMAGE, encoding="yuv422")


def test_message_to_rgb_refuses_other_message_types():
    with pytest.raises(ValueError, match="neither a sensor_msgs/Image"):
        message_to_rgb(TIME(sec=1, nanosec=2))


@pytest.mark.parametrize("seconds,expected", [
    (0.0, (0, 0)),
    (1700000000.5, (1700000000, 500_000_000)),
    (1.9999999999, (2, 0)),
    (-0.25, (-1, 750_000_000)),
])
def test_stamp_conversion_keeps_nanosec_in_range(seconds, expected):
    assert seconds_to_stamp(seconds) == expected
    sec, nanosec = expected
    assert stamp_to_seconds(TIME(sec=sec, nanosec=nanosec)) == pytest.approx(seconds, abs=1e-9)
