"""Field-by-field fills of the geometry and diagnostic messages the node publishes.

Duck-typed like vpr_ros.io.messages: they only touch ROS field names, so they work on rclpy
messages in the node and on plain objects in tests. Image conversions live in
vpr_ros.io.messages and are not repeated here.
"""
from typing import Tuple

from vpr_ros.ros.diagnostics import DiagnosticReport

Pose = Tuple[float, float, float, float, float, float, float]


def transform_to_pose(transform_stamped) -> Pose:
    """geometry_msgs/TransformStamped -> (x, y, z, qx, qy, qz, qw), the map's pose layout."""
    t, q = transform_stamped.transform.translation, transform_stamped.transform.rotation
    return (float(t.x), float(t.y), float(t.z), float(q.x), float(q.y), float(q.z), float(q.w))


def fill_pose_with_covariance(msg, stamp, frame_id: str, pose: Pose, covariance) -> None:
    """Fill a geometry_msgs/PoseWithCovarianceStamped; `stamp` is a builtin_interfaces/Time."""
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    position, orientation = msg.pose.pose.position, msg.pose.pose.orientation
    position.x, position.y, position.z = (float(v) for v in pose[:3])
    orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in pose[3:])
    msg.pose.covariance = [float(v) for v in covariance]


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
