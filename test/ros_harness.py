"""Test helpers for vpr_node under a real rclpy: imports that skip (or fail, in scripts/test.sh)
without ROS 2, and a harness that spins nodes and a probe in one context.

scripts/test.sh sets VPR_ROS_REQUIRE_RCLPY=1 after installing the ros-jazzy-* wheels and building
vpr_ros_interfaces, so there a missing rclpy is an error, not a skip.
"""
import os
import threading
import time

import pytest

REQUIRED = os.environ.get("VPR_ROS_REQUIRE_RCLPY") == "1"
SKIP_REASON = ("rclpy and vpr_ros_interfaces are not importable here; run scripts/test.sh (it "
               "installs ROS 2 Jazzy's wheels and builds vpr_ros_interfaces), or source a ROS 2 "
               "workspace that has them")


def import_ros():
    """rclpy and the generated vpr_ros_interfaces, or skip the calling module (fail in test.sh)."""
    if REQUIRED:
        import rclpy
        import vpr_ros_interfaces.msg  # noqa: F401
        return rclpy
    rclpy = pytest.importorskip("rclpy", reason=SKIP_REASON)
    pytest.importorskip("vpr_ros_interfaces.msg", reason=SKIP_REASON)
    return rclpy


def wait_for(condition, timeout_s: float = 30.0):
    """Poll `condition` until it holds or `timeout_s` passes; its final value."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


RESEND_AFTER_S = 5.0
"""The node's image subscription is best effort (sensor-data QoS): a message sent right after
discovery may be lost, so one not answered in this time is sent again."""


def send_until_answered(publisher, msg, answers: list, timeout_s: float = 60.0,
                        resend_after_s: float = RESEND_AFTER_S):
    """Publish `msg` until a new entry of `answers` carries its header stamp; that entry."""
    count = len(answers)

    def answered():
        return any(a.header.stamp == msg.header.stamp for a in answers[count:])

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        publisher.publish(msg)
        if wait_for(answered, min(resend_after_s, deadline - time.monotonic())):
            return next(a for a in answers[count:] if a.header.stamp == msg.header.stamp)
    raise AssertionError(f"no answer to the image stamped {msg.header.stamp} in {timeout_s} s")


IMAGE_TOPIC = "/image/compressed"


class Stream:
    """Publishes frames (rosbags CompressedImage messages) on IMAGE_TOPIC one at a time, each
    after the node answered the previous one, and records its loop closures and poses."""

    def __init__(self, ros):
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import CompressedImage
        from vpr_ros_interfaces.msg import LoopClosure

        self.publisher = ros.probe.create_publisher(CompressedImage, IMAGE_TOPIC, 10)
        self.closures = ros.record(LoopClosure, "/vpr_node/loop_closures")
        self.poses = ros.record(PoseWithCovarianceStamped, "/vpr_node/relocalization")
        assert wait_for(lambda: self.publisher.get_subscription_count() > 0, 10.0)

    def send(self, msg):
        """Publish an rclpy message until the node answers it; its LoopClosure."""
        return send_until_answered(self.publisher, msg, self.closures)

    def send_all(self, messages) -> list:
        from sample_frames import to_rclpy_compressed

        return [self.send(to_rclpy_compressed(m)) for m in messages]


class RosHarness:
    """One rclpy context with a probe node that publishes images and records what the node under
    test sends. Every node spins in an executor and thread of its own, shut down before the node
    is destroyed: destroying a node that another thread's executor still waits on can kill that
    executor, and with it every later test."""

    def __init__(self, rclpy):
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self._spinning = {}
        self.crashed = []
        self.probe = self.add(rclpy.create_node("vpr_test_probe", context=self.context))

    def add(self, node):
        """Spin `node` in a multi-threaded executor of its own (as vpr_node's main() does)."""
        from rclpy.executors import MultiThreadedExecutor

        executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        executor.add_node(node)
        thread = threading.Thread(target=self._spin, args=(executor, node.get_name()),
                                  daemon=True)
        thread.start()
        self._spinning[node] = (executor, thread)
        return node

    def _spin(self, executor, name: str) -> None:
        """executor.spin, remembering why it ended early (a test then says so)."""
        try:
            executor.spin()
        except Exception as err:  # noqa: BLE001 - reported by the next call that waits
            self.crashed.append(f"{name}: {type(err).__name__}: {err}")

    def _stop(self, node) -> None:
        executor, thread = self._spinning.pop(node)
        executor.shutdown(timeout_sec=10.0)
        thread.join(timeout=10.0)

    def remove(self, node) -> None:
        """Stop spinning a vpr node, shut it down (as main() does) and destroy it."""
        self._stop(node)
        node.shutdown()
        node.destroy_node()

    def record(self, msg_type, topic: str, depth: int = 100) -> list:
        """A list that fills with the messages arriving on `topic`."""
        received = []
        self.probe.create_subscription(msg_type, topic, received.append, depth)
        return received

    def call(self, srv_type, name: str, request, timeout_s: float = 30.0):
        client = self.probe.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=10.0), f"service {name} not offered"
        future = client.call_async(request)
        assert wait_for(future.done, timeout_s), f"service {name} did not answer {self.crashed}"
        self.probe.destroy_client(client)
        return future.result()

    def close(self) -> None:
        for node in list(self._spinning):
            self._stop(node)
        self.probe.destroy_node()
        self.rclpy.shutdown(context=self.context)
