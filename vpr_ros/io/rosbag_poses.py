"""Trajectories from rosbag2 recordings: a pose topic, or the /tf + /tf_static chain between two frames.

Read with `rosbags` like the images (`vpr_ros.io.rosbag`). Stamps come from `header.stamp`, or
the recording time when a driver left it at zero.
"""
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np

from vpr_ros.io import quaternion
from vpr_ros.io.messages import stamp_to_seconds
from vpr_ros.io.rosbag import message_typestore, open_reader
from vpr_ros.io.trajectory import Trajectory

POSE_MSGTYPES = ("nav_msgs/msg/Odometry", "geometry_msgs/msg/PoseStamped",
                 "geometry_msgs/msg/PoseWithCovarianceStamped")
TF_MSGTYPE = "tf2_msgs/msg/TFMessage"
TF_TOPICS = ("/tf", "/tf_static")


def _topic_list(reader) -> str:
    return ", ".join(f"{name} ({info.msgtype})" for name, info in sorted(reader.topics.items())) or "none"


def _pose_of(msg) -> List[float]:
    """x y z qx qy qz qw of an Odometry / PoseStamped / PoseWithCovarianceStamped message."""
    pose = msg.pose.pose if hasattr(msg.pose, "pose") else msg.pose
    p, q = pose.position, pose.orientation
    return [p.x, p.y, p.z, q.x, q.y, q.z, q.w]


def _stamp(header, recorded_ns: int) -> float:
    return stamp_to_seconds(header.stamp) or recorded_ns * 1e-9


def read_pose_topic(bag: Union[str, Path], topic: str) -> Trajectory:
    """The poses published on `topic` (Odometry, PoseStamped or PoseWithCovarianceStamped).

    A missing topic, or one of another type, is an error listing the topics the bag has.
    """
    bag = Path(bag)
    typestore = message_typestore()
    stamps, poses, labels, frames = [], [], [], set()
    with open_reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise ValueError(f"pose topic '{topic}' is not in bag {bag}; its topics: {_topic_list(reader)}")
        wrong = [c.msgtype for c in connections if c.msgtype not in POSE_MSGTYPES]
        if wrong:
            raise ValueError(f"topic '{topic}' in bag {bag} carries {wrong[0]}, not one of "
                             f"{', '.join(POSE_MSGTYPES)}; its topics: {_topic_list(reader)}")
        for index, (connection, recorded_ns, raw) in enumerate(reader.messages(connections=connections)):
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            stamps.append(_stamp(msg.header, recorded_ns))
            poses.append(_pose_of(msg))
            labels.append(f"message {index}")
            frames.add(msg.header.frame_id)
    if not stamps:
        raise ValueError(f"pose topic '{topic}' in bag {bag} has no messages")
    return Trajectory.from_samples(stamps, poses, f"{bag} {topic}", labels,
                                   frame_id=frames.pop() if len(frames) == 1 else "")


def _strip(frame: str) -> str:
    return frame.lstrip("/")


class _TfTree:
    """Every parent -> child edge of a bag's TF: a constant pose (static) or timed samples."""

    def __init__(self, bag: Path):
        self.bag = bag
        self.parent: Dict[str, str] = {}
        self.static: Dict[str, np.ndarray] = {}
        self.samples: Dict[str, List[Tuple[float, List[float]]]] = defaultdict(list)
        typestore = message_typestore()
        with open_reader(bag) as reader:
            connections = [c for c in reader.connections
                           if c.topic in TF_TOPICS and c.msgtype == TF_MSGTYPE]
            if not connections:
                raise ValueError(f"bag {bag} has no {' or '.join(TF_TOPICS)} topic ({TF_MSGTYPE}); "
                                 f"its topics: {_topic_list(reader)}")
            for connection, recorded_ns, raw in reader.messages(connections=connections):
                for transform in typestore.deserialize_cdr(raw, connection.msgtype).transforms:
                    self._add(transform, recorded_ns, connection.topic == "/tf_static")

    def _add(self, transform, recorded_ns: int, static: bool) -> None:
        parent, child = _strip(transform.header.frame_id), _strip(transform.child_frame_id)
        known = self.parent.setdefault(child, parent)
        if known != parent:
            raise ValueError(f"TF in bag {self.bag} gives frame '{child}' two parents, '{known}' and "
                             f"'{parent}'; a TF tree has one parent per frame")
        t, r = transform.transform.translation, transform.transform.rotation
        pose = [t.x, t.y, t.z, r.x, r.y, r.z, r.w]
        if static:
            self.static[child] = np.asarray(pose, dtype=np.float64)
        else:
            self.samples[child].append((_stamp(transform.header, recorded_ns), pose))

    def path_to_root(self, frame: str) -> List[str]:
        """`frame`, its parent, ... up to the root of its tree."""
        path = [frame]
        while path[-1] in self.parent:
            path.append(self.parent[path[-1]])
            if len(path) > len(self.parent) + 1:
                raise ValueError(f"TF in bag {self.bag} has a cycle through frame '{frame}'")
        return path

    def describe(self) -> str:
        edges = ", ".join(f"{p} -> {c}" for c, p in sorted(self.parent.items(), key=lambda e: (e[1], e[0])))
        return edges or "none"


def read_tf_chain(bag: Union[str, Path], parent: str, child: str, max_gap_s: float) -> Trajectory:
    """The pose of frame `child` in frame `parent` over time, from /tf and /tf_static.

    The chain between the two frames may hold several transforms (map -> odom -> base_link,
    a static base_link -> camera). It is evaluated at every stamp of its moving transforms,
    each interpolated from its own messages with at most `max_gap_s` between them; stamps where
    one of them has no value are left out. Missing frames are an error listing the TF edges.
    """
    bag = Path(bag)
    parent, child = _strip(parent), _strip(child)
    tree = _TfTree(bag)
    for frame in (parent, child):
        if frame not in tree.parent and frame not in tree.parent.values():
            raise ValueError(f"frame '{frame}' is not in the TF of bag {bag}; its transforms: {tree.describe()}")
    up_child, up_parent = tree.path_to_root(child), tree.path_to_root(parent)
    common = next((f for f in up_child if f in up_parent), None)
    if common is None:
        raise ValueError(f"frames '{parent}' and '{child}' are in separate TF trees in bag {bag}; "
                         f"its transforms: {tree.describe()}")
    # edges below `common`, named by their child frame, top-down
    child_edges = up_child[:up_child.index(common)][::-1]
    parent_edges = up_parent[:up_parent.index(common)][::-1]
    moving = {}
    for frame in child_edges + parent_edges:
        if frame in tree.samples:
            stamps, poses = zip(*tree.samples[frame])
            moving[frame] = Trajectory.from_samples(stamps, poses, f"{bag} TF {tree.parent[frame]} -> {frame}")
    if not moving:
        raise ValueError(f"only static transforms connect '{parent}' and '{child}' in bag {bag}; "
                         f"a trajectory needs a moving transform on /tf")
    stamps = np.unique(np.concatenate([t.stamps for t in moving.values()]))

    def chain(edges: List[str]) -> np.ndarray:
        pose = np.tile([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], (len(stamps), 1))
        for frame in edges:
            edge = moving[frame].poses_at(stamps, max_gap_s) if frame in moving else tree.static[frame]
            pose = quaternion.compose(pose, edge)
        return pose

    poses = quaternion.compose(quaternion.invert(chain(parent_edges)), chain(child_edges))
    known = np.all(np.isfinite(poses), axis=1)
    if not known.any():
        edges = ", ".join(f"{tree.parent[frame]} -> {frame}" for frame in moving)
        raise ValueError(f"the TF chain {parent} -> {child} in bag {bag} is never complete: its moving "
                         f"transforms ({edges}) never overlap within {max_gap_s:g} s")
    return Trajectory.from_samples(stamps[known], poses[known], f"{bag} TF {parent} -> {child}",
                                   frame_id=parent)
