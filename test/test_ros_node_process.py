"""vpr_node as a process (`python -m vpr_ros.ros.entry`, what the console script runs) with a real
model checkpoint: killed with SIGKILL while mapping it loses at most one autosave period, and
the map on disk loads; a configuration it cannot use ends it with exit code 2 and the reason."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ros_harness import RosHarness, import_ros, send_until_answered, wait_for
from sample_frames import sample_messages, small_checkpoint, to_rclpy_compressed
from vpr_ros.mapping import KeyframeMap
from vpr_ros.mapping.lock import MapWriterLock

rclpy = import_ros()

from sensor_msgs.msg import CompressedImage  # noqa: E402
from vpr_ros_interfaces.msg import LoopClosure  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AUTOSAVE_S = 1.0
STARTUP_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("model") / "model.pt")


def _start_node(log_path: Path, **parameters) -> subprocess.Popen:
    arguments = [arg for name, value in parameters.items() for arg in ("-p", f"{name}:={value}")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "vpr_ros.ros.entry", "--ros-args",
                                 *arguments], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)


def _map_size(map_dir: Path) -> int:
    try:
        return len(KeyframeMap.load(map_dir))
    except (FileNotFoundError, OSError):
        return 0


def test_sigkill_in_mapping_mode_loses_at_most_one_autosave_period(checkpoint, tmp_path):
    map_dir = tmp_path / "maps" / "campus"
    log = tmp_path / "node.log"
    node = _start_node(log, model=checkpoint, backend="torch", map_path=map_dir, mode="mapping",
                       autosave_interval=AUTOSAVE_S, use_compressed="true", pose_source="none",
                       keyframe_interval_s=0.5, exclusion_window_s=0.0)
    ros = RosHarness(rclpy)
    try:
        closures = ros.record(LoopClosure, "/vpr_node/loop_closures")
        images = ros.probe.create_publisher(CompressedImage, "/image/compressed", 10)
        assert wait_for(lambda: images.get_subscription_count() > 0 or node.poll() is not None,
                        STARTUP_TIMEOUT_S) and node.poll() is None, log.read_text()
        messages = sample_messages(8)
        for msg in messages:
            send_until_answered(images, to_rclpy_compressed(msg), closures, 120.0, 10.0)
        added = sum(c.keyframe_added >= 0 for c in closures)
        assert added == len(messages), "one keyframe per frame (keyframe_interval_s 0.5)"
        assert wait_for(lambda: _map_size(map_dir) == added, 10 * AUTOSAVE_S), log.read_text()
        for msg in sample_messages(3, "night_right"):  # more mapping, then killed mid-period
            send_until_answered(images, to_rclpy_compressed(msg), closures, 120.0, 10.0)
        node.send_signal(signal.SIGKILL)
        assert node.wait(timeout=30) == -signal.SIGKILL
    finally:
        ros.close()
        node.kill()
        node.wait()
    survived = KeyframeMap.load(map_dir)            # loads: saves are atomic
    assert added <= len(survived) <= added + 3, "lost at most what came after the last autosave"
    with MapWriterLock(map_dir):                    # and the kernel dropped the writer lock
        pass
    assert "autosaved" in log.read_text()


def test_a_node_process_without_its_map_exits_2_with_the_reason(checkpoint, tmp_path):
    log = tmp_path / "node.log"
    node = _start_node(log, model=checkpoint, backend="torch", map_path=tmp_path / "none")
    assert node.wait(timeout=STARTUP_TIMEOUT_S) == 2
    text = log.read_text()
    assert "localization mode needs a prior map" in text and "Traceback" not in text
