"""launch_testing test of localize.launch.py on the bundled sample: the node starts on a map and
a model made from data/sample, relocalizes published frames and exits cleanly on shutdown.

Runs wherever ROS 2 is sourced and vpr_ros is installed (`colcon test` runs it, see
scripts/test.sh); skips, saying why, elsewhere.
"""
import json
import shutil
import tempfile
import time
import unittest
from pathlib import Path

import pytest

launch_testing = pytest.importorskip(
    "launch_testing", reason="ROS 2 launch_testing is not installed here; source ROS 2 Humble or "
    "Jazzy to run the localize.launch.py test")
ament_index = pytest.importorskip("ament_index_python.packages",
                                  reason="ament_index_python (ROS 2) is not installed here")
try:
    ament_index.get_package_share_directory("vpr_ros")
except ament_index.PackageNotFoundError:
    pytest.skip("vpr_ros is not installed in the sourced workspace; colcon build it first",
                allow_module_level=True)

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from sample_frames import build_map, sample_messages, to_rclpy_compressed  # noqa: E402
from vpr_ros.model import ModelConfig, build_model  # noqa: E402
from vpr_ros.model.checkpoint import save_checkpoint  # noqa: E402
from vpr_ros.runtime.embedder import load_embedder  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "localize.launch.py"
IMAGE_TOPIC = "/vpr_launch_test/image"
FRAMES = 12
PUBLISHED = 6
STARTUP_TIMEOUT_S = 180.0
EVENT_TIMEOUT_S = 30.0
WORKDIR = Path(tempfile.mkdtemp(prefix="vpr_launch_test_"))


def _sample_model_and_map():
    """An untrained small model and a map of the sample's first day_right frames made with it."""
    checkpoint = WORKDIR / "model.pt"
    save_checkpoint(checkpoint, build_model(ModelConfig(image_long_side=128, num_clusters=8),
                                            pretrained=False))
    build_map(load_embedder(checkpoint, backend="torch"), sample_messages(FRAMES), WORKDIR / "map")
    return checkpoint, WORKDIR / "map"


@pytest.mark.launch_test
def generate_test_description():
    checkpoint, map_dir = _sample_model_and_map()
    localize = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"image": IMAGE_TOPIC, "model": str(checkpoint), "map": str(map_dir),
                          "backend": "torch", "use_compressed": "true"}.items())
    return LaunchDescription([localize, launch_testing.actions.ReadyToTest()])


class TestLocalizeLaunch(unittest.TestCase):
    """Frames in, loop-closure events and a relocalization out."""

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.probe = rclpy.create_node("vpr_launch_test_probe")

    @classmethod
    def tearDownClass(cls):
        cls.probe.destroy_node()
        rclpy.shutdown()

    def _spin_until(self, condition, timeout_s):
        deadline = time.monotonic() + timeout_s
        while not condition() and time.monotonic() < deadline:
            rclpy.spin_once(self.probe, timeout_sec=0.1)
        return condition()

    def test_node_relocalizes_published_sample_frames(self, proc_output):
        proc_output.assertWaitFor(f"localization mode, {FRAMES} keyframes",
                                  timeout=STARTUP_TIMEOUT_S)
        events, poses = [], []
        self.probe.create_subscription(String, "/vpr_node/loop_closures",
                                       lambda m: events.append(json.loads(m.data)), 100)
        self.probe.create_subscription(PoseWithCovarianceStamped, "/vpr_node/relocalization",
                                       poses.append, 10)
        images = self.probe.create_publisher(CompressedImage, IMAGE_TOPIC + "/compressed", 10)
        self.assertTrue(self._spin_until(lambda: images.get_subscription_count() > 0, 30.0))
        for msg in sample_messages(PUBLISHED):      # one at a time: the node keeps only the newest
            count = len(events)
            images.publish(to_rclpy_compressed(msg))
            self.assertTrue(self._spin_until(lambda: len(events) > count, EVENT_TIMEOUT_S))
        self.assertEqual([e["reason"] for e in events[:2]], ["temporal_inconsistent"] * 2)
        self.assertEqual([e["status"] for e in events[2:]], ["accepted"] * (PUBLISHED - 2))
        self.assertEqual([e["best"]["keyframe_id"] for e in events[2:]], list(range(2, PUBLISHED)))
        self.assertTrue(self._spin_until(lambda: len(poses) >= PUBLISHED - 2, EVENT_TIMEOUT_S))
        self.assertEqual(poses[0].header.frame_id, "map")


@launch_testing.post_shutdown_test()
class TestLocalizeLaunchShutdown(unittest.TestCase):
    """Ctrl-C (SIGINT from launch) ends the node with exit code 0."""

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(WORKDIR, ignore_errors=True)

    def test_node_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
