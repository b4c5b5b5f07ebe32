"""Helpers for tests: rosbag2 bags with images next to Odometry / PoseStamped / TF, written with rosbags."""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
T = TYPESTORE.types
IMAGE_TOPIC = "/camera/image_raw/compressed"


def header(stamp: float, frame_id: str):
    sec = int(np.floor(stamp))
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
        sec=sec, nanosec=int(round((stamp - sec) * 1e9))), frame_id=frame_id)


def _pose(pose: Sequence[float]):
    x, y, z, qx, qy, qz, qw = pose
    return T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                       orientation=T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))


def odometry(stamp: float, pose, frame_id="odom", child="base_link"):
    vector = T["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    return T["nav_msgs/msg/Odometry"](
        header=header(stamp, frame_id), child_frame_id=child,
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(pose), covariance=np.zeros(36)),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](linear=vector, angular=vector), covariance=np.zeros(36)))


def pose_stamped(stamp: float, pose, frame_id="map"):
    return T["geometry_msgs/msg/PoseStamped"](header=header(stamp, frame_id), pose=_pose(pose))


def pose_with_covariance(stamp: float, pose, frame_id="map"):
    return T["geometry_msgs/msg/PoseWithCovarianceStamped"](
        header=header(stamp, frame_id),
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=_pose(pose), covariance=np.zeros(36)))


def tf_message(stamp: float, edges: List[Tuple[str, str, Sequence[float]]]):
    """One TFMessage with a transform per (parent, child, pose) edge."""
    transforms = []
    for parent, child, (x, y, z, qx, qy, qz, qw) in edges:
        transforms.append(T["geometry_msgs/msg/TransformStamped"](
            header=header(stamp, parent), child_frame_id=child,
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                rotation=T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw))))
    return T["tf2_msgs/msg/TFMessage"](transforms=transforms)


def jpeg_image(stamp: float, rgb: np.ndarray):
    ok, payload = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return T["sensor_msgs/msg/CompressedImage"](header=header(stamp, "camera"), format="jpeg",
                                                 data=payload.reshape(-1))


def image_of(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def write_bag(bag_dir: Path, topics: Dict[str, List[Tuple[float, object]]],
              storage=StoragePlugin.SQLITE3) -> Path:
    """Write {topic: [(receive time s, message), ...]} as a rosbag2 (types from the messages)."""
    with Writer(bag_dir, version=8, storage_plugin=storage) as writer:
        for topic, entries in topics.items():
            msgtype = entries[0][1].__msgtype__
            connection = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            for stamp, msg in entries:
                writer.write(connection, int(round(stamp * 1e9)), TYPESTORE.serialize_cdr(msg, msgtype))
    return bag_dir
