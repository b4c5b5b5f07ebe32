"""Field-by-field fills of the messages the node publishes (geometry, diagnostics, and
vpr_ros_interfaces/LoopClosure).

Duck-typed like vpr_ros.io.messages: they only touch ROS field names, so they work on rclpy
messages in the node and on plain objects in tests. Image conversions live in
vpr_ros.io.messages and are not repeated here.
"""
import math
from typing import Optional, Tuple

from vpr_ros.io.messages import seconds_to_stamp
from vpr_ros.localization.decision import ACCEPTED, Decision
from vpr_ros.ros.diagnostics import DiagnosticReport

Pose = Tuple[float, float, float, float, float, float, float]


def transform_to_pose(transform_stamped) -> Pose:
    """geometry_msgs/TransformStamped -> (x, y, z, qx, qy, qz, qw), the map's pose layout."""
    t, q = transform_stamped.transform.translation, transform_stamped.transform.rotation
    return (float(t.x), float(t.y), float(t.z), float(q.x), float(q.y), float(q.z), float(q.w))


def fill_pose(msg, pose: Pose) -> None:
    """Fill a geometry_msgs/Pose from (x, y, z, qx, qy, qz, qw)."""
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in pose[:3])
    orientation = msg.orientation
    orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in pose[3:])


def fill_pose_with_covariance(msg, stamp, frame_id: str, pose: Pose, covariance) -> None:
    """Fill a geometry_msgs/PoseWithCovarianceStamped; `stamp` is a builtin_interfaces/Time."""
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    fill_pose(msg.pose.pose, pose)
    msg.pose.covariance = [float(v) for v in covariance]


def fill_time(msg, seconds: float) -> None:
    """Fill a builtin_interfaces/Time from float seconds."""
    msg.sec, msg.nanosec = seconds_to_stamp(seconds)


VERIFICATION_NOT_RUN, VERIFICATION_PASSED, VERIFICATION_FAILED = 0, 1, 2
"""LoopClosure.VERIFICATION_* values."""


def fill_loop_closure(msg, decision: Decision, *, stamp, decision_mode: str, map_frame: str,
                      keyframe_pose: Optional[Pose], covariance) -> None:
    """Fill a vpr_ros_interfaces/LoopClosure from an engine decision.

    `stamp` is the query image's builtin_interfaces/Time, `keyframe_pose` the best keyframe's
    pose in the map (None when it has none), `covariance` the relocalization's 36 floats (used
    when the decision has a pose). The field-by-field mapping is tabled in
    docs/ros_interface.md.
    """
    msg.header.stamp = stamp
    msg.header.frame_id = decision.frame_id
    msg.frame_index = int(decision.frame_index)
    msg.status = 1 if decision.status == ACCEPTED else 0
    msg.reason = decision.reason or ""
    msg.detail = decision.detail
    msg.confidence = float(decision.confidence)
    best = decision.best
    msg.keyframe_id = -1 if best is None else int(best.keyframe_id)
    if best is not None:
        msg.keyframe_session = best.session
        fill_time(msg.keyframe_stamp, best.stamp)
        msg.score, msg.place_score = float(best.score), float(best.place_score)
    msg.decision = decision_mode
    msg.sequence_length = int(decision.temporal_count)
    sequence = decision.sequence or {}
    msg.margin = _number(sequence.get("margin"))
    msg.evidence = _number(sequence.get("evidence"))
    msg.has_keyframe_pose = keyframe_pose is not None
    if keyframe_pose is not None:
        msg.keyframe_pose.header.frame_id = map_frame
        fill_time(msg.keyframe_pose.header.stamp, best.stamp)
        fill_pose(msg.keyframe_pose.pose, keyframe_pose)
    msg.has_pose = decision.pose is not None
    if decision.pose is not None:
        fill_pose_with_covariance(msg.pose, stamp, map_frame, decision.pose, covariance)
    verification = decision.verification
    if verification is None:
        msg.verification = VERIFICATION_NOT_RUN
    else:
        msg.verification = VERIFICATION_PASSED if verification.passed else VERIFICATION_FAILED
        msg.inliers, msg.matches = int(verification.inliers), int(verification.matches)
        msg.verification_method = verification.method
    msg.has_relative_transform = False
    msg.relative_transform.rotation.w = 1.0
    msg.candidate_ids = [int(c.keyframe_id) for c in decision.candidates]
    msg.candidate_scores = [float(c.score) for c in decision.candidates]
    msg.keyframe_added = -1 if decision.keyframe_added is None else int(decision.keyframe_added)
    msg.latency_ms = float(decision.latency_ms)


def _number(value) -> float:
    """A JSON number of the event, NaN for null (the message has no optional floats)."""
    return math.nan if value is None else float(value)


def fill_diagnostic_status(status, key_value_type, report: DiagnosticReport, name: str,
                           hardware_id: str) -> None:
    """Fill a diagnostic_msgs/DiagnosticStatus from a report.

    `level` is a ROS `byte` field, which rclpy holds as a 1-byte `bytes` value.
    """
    status.level = bytes([report.level])
    status.name = name
    status.message = report.message
    status.hardware_id = hardware_id
    status.values = [key_value_type(key=key, value=value) for key, value in report.values]
