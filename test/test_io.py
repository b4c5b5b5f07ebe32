"""Frame readers: image folders, videos and rosbag2 (.db3 and .mcap) behind open_source."""
import importlib.util
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from vpr_ros.io import Frame, count_frames, open_source, source_kind
from vpr_ros.io.images import read_image
from vpr_ros.io.messages import rgb_to_image_msg
from vpr_ros.io.rosbag import list_image_topics

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
IMAGE = TYPESTORE.types["sensor_msgs/msg/Image"]
COMPRESSED = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
HEADER = TYPESTORE.types["std_msgs/msg/Header"]
TIME = TYPESTORE.types["builtin_interfaces/msg/Time"]
STRING = TYPESTORE.types["std_msgs/msg/String"]

T0 = 1_700_000_000


def _tiny_image(value: int) -> np.ndarray:
    image = np.zeros((16, 24, 3), np.uint8)
    image[..., 0] = value
    image[4:12, 6:18, 1] = 255 - value
    return image


def _write_png(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _compressed(image: np.ndarray, sec: int, nanosec: int = 0):
    ok, payload = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return COMPRESSED(header=HEADER(stamp=TIME(sec=sec, nanosec=nanosec), frame_id="cam"),
                      format="png", data=payload.reshape(-1))


def _write_bag(bag_dir: Path, topics: dict, storage=StoragePlugin.SQLITE3) -> Path:
    """Write {topic: [(msgtype, msg or raw bytes, receive_ns), ...]} as a rosbag2."""
    with Writer(bag_dir, version=8, storage_plugin=storage) as writer:
        for topic, entries in topics.items():
            connection = writer.add_connection(topic, entries[0][0], typestore=TYPESTORE)
            for msgtype, msg, receive_ns in entries:
                raw = msg if isinstance(msg, bytes) else TYPESTORE.serialize_cdr(msg, msgtype)
                writer.write(connection, receive_ns, raw)
    return bag_dir


def _frames_of(source, **kwargs):
    return list(open_source(source, **kwargs))


# ---------------------------------------------------------------- image folders

def test_folder_frames_come_in_natural_order_with_nominal_stamps(tmp_path):
    for number in (10, 2, 1):
        _write_png(tmp_path / f"img{number}.png", _tiny_image(number * 20))
    frames = _frames_of(tmp_path, rate_hz=4.0, frame_id="front")
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img10.png"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.stamp for f in frames] == [0.0, 0.25, 0.5]
    assert all(isinstance(f, Frame) and f.frame_id == "front" for f in frames)
    np.testing.assert_array_equal(frames[2].image, _tiny_image(200))
    assert count_frames(tmp_path) == 3


def test_folder_skips_an_unreadable_file_and_keeps_indices(tmp_path, caplog):
    for number in range(3):
        _write_png(tmp_path / f"Image{number:03d}.png", _tiny_image(number))
    (tmp_path / "Image001.png").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="vpr_ros.io"):
        frames = _frames_of(tmp_path)
    assert [f.index for f in frames] == [0, 2]
    assert "Image001.png" in caplog.text


def test_gardens_point_folder(gardens_point):
    folder = gardens_point / "night_right"
    assert count_frames(folder) == 200
    frames = open_source(folder)
    first = next(frames)
    assert first.name == "Image000.jpg" and first.image.shape == (360, 640, 3)
    np.testing.assert_array_equal(first.image, read_image(folder / "Image000.jpg"))


# ---------------------------------------------------------------- video

def test_video_reads_back_every_frame_with_increasing_stamps(tmp_path):
    path = tmp_path / "walk.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (24, 16))
    assert writer.isOpened(), "OpenCV in this environment cannot write MJPG/AVI"
    written = [_tiny_image(value) for value in range(0, 240, 20)]
    for image in written:
        writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    writer.release()

    assert source_kind(path) == "video"
    assert count_frames(path) == len(written)
    frames = _frames_of(path)
    assert len(frames) == len(written)
    assert [f.name for f in frames[:2]] == ["walk.avi#0", "walk.avi#1"]
    np.testing.assert_allclose([f.stamp for f in frames], np.arange(len(written)) / 10.0, atol=1e-6)
    for frame, image in zip(frames, written):
        assert frame.image.shape == image.shape
        assert np.abs(frame.image.astype(int) - image).mean() < 8  # MJPG is lossy


def test_undecodable_video_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="cannot open video"):
        open_source(path)


# ---------------------------------------------------------------- rosbag2: the shared Gardens Point bags

@pytest.mark.parametrize("bag,condition,t0", [
    ("day_left_compressed_sqlite3", "day_left", 1_700_000_000),
    ("night_right_compressed_mcap", "night_right", 1_700_100_000),
])
def test_compressed_bags_give_the_jpeg_files_pixels(gardens_point_bags, gardens_point, bag, condition, t0):
    source = gardens_point_bags / bag
    assert source_kind(source) == "rosbag2"
    assert count_frames(source) == 200
    frames = _frames_of(source)
    assert [f.index for f in frames] == list(range(200))
    for frame in frames[::9]:
        assert frame.frame_id == "camera"
        assert frame.name == f"/camera/image_raw/compressed#{frame.index}"
        assert frame.stamp == pytest.approx(t0 + 0.5 * frame.index, abs=1e-6)
        np.testing.assert_array_equal(
            frame.image, read_image(gardens_point / condition / f"Image{frame.index:03d}.jpg"))


def test_raw_bag_gives_the_decoded_pixels(gardens_point_bags, gardens_point):
    frames = _frames_of(gardens_point_bags / "night_right_raw_every20_sqlite3")
    assert len(frames) == 10
    for frame in frames[::3]:
        reference = read_image(gardens_point / "night_right" / f"Image{frame.index * 20:03d}.jpg")
        np.testing.assert_array_equal(frame.image, reference)


def test_storage_file_path_reads_like_its_directory(gardens_point_bags):
    storage_file = gardens_point_bags / "night_right_compressed_mcap" / "night_right_compressed_mcap.mcap"
    assert source_kind(storage_file) == "rosbag2"
    first = next(open_source(storage_file))
    assert first.index == 0 and first.image.shape == (360, 640, 3)


# ---------------------------------------------------------------- rosbag2: small bags written here

@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_bag_skips_an_undecodable_message_with_a_warning(tmp_path, caplog, storage):
    entries = [("sensor_msgs/msg/CompressedImage", _compressed(_tiny_image(v), T0 + i), (T0 + i) * 10**9)
               for i, v in enumerate((10, 60, 110, 160))]
    broken = COMPRESSED(header=HEADER(stamp=TIME(sec=T0 + 1, nanosec=0), frame_id="cam"),
                        format="jpeg", data=np.frombuffer(b"\xff\xd8garbage", np.uint8))
    entries[1] = ("sensor_msgs/msg/CompressedImage", broken, (T0 + 1) * 10**9)
    entries[2] = ("sensor_msgs/msg/CompressedImage", b"\x00\x01\x00\x00\x07", (T0 + 2) * 10**9)
    bag = _write_bag(tmp_path / "bag", {"/cam/compressed": entries}, storage)

    with caplog.at_level(logging.WARNING, logger="vpr_ros.io"):
        frames = _frames_of(bag)
    assert [f.index for f in frames] == [0, 3]
    assert [f.stamp for f in frames] == [T0, T0 + 3]
    np.testing.assert_array_equal(frames[1].image, _tiny_image(160))
    assert "/cam/compressed#1" in caplog.text and "/cam/compressed#2" in caplog.text
    assert "2 message(s)" in caplog.text
    assert count_frames(bag) == 4


def test_bag_with_several_image_topics_needs_a_topic(tmp_path):
    image = _tiny_image(90)
    raw = rgb_to_image_msg(image, IMAGE, encoding="bgr8", stamp=T0, frame_id="cam")
    bag = _write_bag(tmp_path / "bag", {
        "/cam/image_raw": [("sensor_msgs/msg/Image", raw, T0 * 10**9)],
        "/cam/image_raw/compressed": [
            ("sensor_msgs/msg/CompressedImage", _compressed(image, T0), T0 * 10**9)],
        "/chatter": [("std_msgs/msg/String", STRING(data="hi"), T0 * 10**9)],
    })
    assert list_image_topics(bag) == ["/cam/image_raw", "/cam/image_raw/compressed"]
    both = r"\(/cam/image_raw, /cam/image_raw/compressed\)"
    with pytest.raises(ValueError, match=rf"several image topics {both}"):
        open_source(bag)
    with pytest.raises(ValueError, match="several image topics"):
        count_frames(bag)
    for topic in list_image_topics(bag):
        (frame,) = _frames_of(bag, topic=topic)
        np.testing.assert_array_equal(frame.image, image)
        assert frame.name == f"{topic}#0" and frame.frame_id == "cam"
    with pytest.raises(ValueError, match="'/missing' is not in bag.*image topics: /cam/image_raw"):
        open_source(bag, topic="/missing")
    with pytest.raises(ValueError, match="'/chatter'.*carries std_msgs/msg/String"):
        open_source(bag, topic="/chatter")


def test_bag_without_image_topics_lists_what_it_has(tmp_path):
    bag = _write_bag(tmp_path / "bag", {"/chatter": [("std_msgs/msg/String", STRING(data="hi"), T0 * 10**9)]})
    with pytest.raises(ValueError, match=r"no sensor_msgs/Image or CompressedImage topic \(topics: /chatter"):
        open_source(bag)


def test_zero_header_stamp_falls_back_to_the_recording_time(tmp_path):
    msg = _compressed(_tiny_image(5), sec=0)
    receive_ns = T0 * 10**9 + 250_000_000
    bag = _write_bag(tmp_path / "bag", {"/cam": [("sensor_msgs/msg/CompressedImage", msg, receive_ns)]})
    (frame,) = _frames_of(bag)
    assert frame.stamp == pytest.approx(T0 + 0.25)


# ---------------------------------------------------------------- dispatch errors

def test_missing_source_names_the_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        open_source(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        count_frames(missing)


def test_unknown_source_kind_lists_the_supported_kinds(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ValueError, match=r"image folder, a video file \(.mp4.*rosbag2"):
        open_source(notes)


def test_topic_on_a_folder_is_refused(tmp_path):
    _write_png(tmp_path / "a.png", _tiny_image(1))
    with pytest.raises(ValueError, match="topics apply to rosbag2 only"):
        open_source(tmp_path, topic="/cam")


def test_folder_that_holds_no_images_is_a_clear_error(tmp_path):
    shutil.copy(__file__, tmp_path / "not_an_image.py")
    with pytest.raises(ValueError, match="no images"):
        open_source(tmp_path)


# ---------------------------------------------------------------- bundled sample

def test_bundled_sample_pairs_day_and_night_by_index(sample_dir):
    day = [f.name for f in open_source(sample_dir / "day_right")]
    night = [f.name for f in open_source(sample_dir / "night_right")]
    assert day == night == [f"Image{i:03d}.jpg" for i in range(0, 200, 2)]
    assert read_image(sample_dir / "night_right" / "Image198.jpg").shape == (270, 480, 3)
    total_bytes = sum(p.stat().st_size for p in sample_dir.rglob("*") if p.is_file())
    assert total_bytes < 5_000_000


def test_make_sample_rebuilds_a_subset(gardens_point, tmp_path):
    script = Path(__file__).resolve().parents[1] / "tools" / "make_sample.py"
    spec = importlib.util.spec_from_file_location("make_sample", script)
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)
    total = make_sample.make_sample(gardens_point, tmp_path, every=50, long_side=240, quality=75)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg"))
    conditions, indices = ("day_right", "night_right"), (0, 50, 100, 150)
    assert written == [f"{c}/Image{i:03d}.jpg" for c in conditions for i in indices]
    assert total == sum((tmp_path / name).stat().st_size for name in written)
    assert read_image(tmp_path / "day_right" / "Image050.jpg").shape == (135, 240, 3)
