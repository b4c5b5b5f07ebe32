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


class RosHarness:
    """One rclpy context with a multi-threaded executor spinning in a thread, and a probe node
    that publishes images and records what the node under test sends."""

    def __init__(self, rclpy):
        from rclpy.executors import MultiThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        self.probe = rclpy.create_node("vpr_test_probe", context=self.context)
        self.executor.add_node(self.probe)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def add(self, node):
        self.executor.add_node(node)
        return node

    def remove(self, node) -> None:
        """Shut a vpr node down (as main() does) and take it out of the executor."""
        self.executor.remove_node(node)
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
        assert wait_for(future.done, timeout_s), f"service {name} did not answer"
        self.probe.destroy_client(client)
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.probe.destroy_node()
        self.rclpy.shutdown(context=self.context)
        self._spinner.join(timeout=10.0)
