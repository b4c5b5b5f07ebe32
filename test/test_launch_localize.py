"""launch_testing test of localize.launch.py on the bundled sample: the node starts on a map and
a model made from data/sample, publishes for each published frame the typed loop closure the
engine decides offline (sample_frames.replay, with the same parameters), relocalizes, and exits
cleanly on shutdown.

Runs wherever ROS 2 is sourced and vpr_ros is installed (`colcon test` runs it, see
scripts/test.sh); skips, saying why, elsewhere.
"""
import shutil
import tempfile
import time
import unittest
from pathlib import Path

import pytest
import yaml

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
from vpr_ros_interfaces.msg import LoopClosure  # noqa: E402

from sample_frames import (build_map, node_parameters, replay, sample_messages,  # noqa: E402
                           small_checkpoint, to_rclpy_compressed)
from vpr_ros.runtime.embedder import load_embedder  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "localize.launch.py"
IMAGE_TOPIC = "/vpr_launch_test/image"
FRAMES = 12
PUBLISHED = 6
STARTUP_TIMEOUT_S = 180.0
EVENT_TIMEOUT_S = 30.0
WORKDIR = Path(tempfile.mkdtemp(prefix="vpr_launch_test_"))


def _sample_model_and_map():
    """A small model and a map of the sample's first day_right frames made with it."""
    checkpoint = small_checkpoint(WORKDIR / "model.pt")
    build_map(load_embedder(checkpoint, backend="torch"), sample_messages(FRAMES), WORKDIR / "map")
    return checkpoint, WORKDIR / "map"


def _params_file(checkpoint, map_dir) -> Path:
    """config/vpr_node.yaml with the launch test's changes (sample_frames.node_parameters)."""
    path = WORKDIR / "vpr_node.yaml"
    values = node_parameters(model=str(checkpoint), map_path=str(map_dir), backend="torch",
                             use_compressed=True)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}), encoding="utf-8")
    return path


@pytest.mark.launch_test
def generate_test_description():
    checkpoint, map_dir = _sample_model_and_map()
    localize = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"image": IMAGE_TOPIC, "model": str(checkpoint), "map": str(map_dir),
                          "backend": "torch", "use_compressed": "true",
                          "params_file": str(_params_file(checkpoint, map_dir))}.items())
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
        closures, poses = [], []
        self.probe.create_subscription(LoopClosure, "/vpr_node/loop_closures", closures.append,
                                       100)
        self.probe.create_subscription(PoseWithCovarianceStamped, "/vpr_node/relocalization",
                                       poses.append, 10)
        images = self.probe.create_publisher(CompressedImage, IMAGE_TOPIC + "/compressed", 10)
        self.assertTrue(self._spin_until(lambda: images.get_subscription_count() > 0, 30.0))
        messages = sample_messages(PUBLISHED)
        for msg in messages:                        # one at a time: the node keeps only the newest
            count = len(closures)
            images.publish(to_rclpy_compressed(msg))
            self.assertTrue(self._spin_until(lambda: len(closures) > count, EVENT_TIMEOUT_S))
        expected = replay(node_parameters(model=str(WORKDIR / "model.pt"),
                                          map_path=str(WORKDIR / "map"), backend="torch",
                                          use_compressed=True), messages)
        self.assertEqual([(c.status == LoopClosure.STATUS_ACCEPTED, c.reason, c.keyframe_id)
                          for c in closures],
                         [(d.accepted, d.reason or "", d.best.keyframe_id) for d in expected])
        self.assertEqual([c.keyframe_id for c in closures], list(range(PUBLISHED)))
        self.assertTrue(self._spin_until(lambda: len(poses) >= PUBLISHED, EVENT_TIMEOUT_S))
        self.assertEqual(poses[0].header.frame_id, "map")


@launch_testing.post_shutdown_test()
class TestLocalizeLaunchShutdown(unittest.TestCase):
    """Ctrl-C (SIGINT from launch) ends the node with exit code 0."""

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(WORKDIR, ignore_errors=True)

    def test_node_exits_cleanly(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
