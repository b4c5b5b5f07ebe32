"""ROS-free parts of vpr_node's inputs and outputs: odometry poses at image stamps, the
relocalization gate and the map writer lock."""
import math
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from vpr_ros.mapping.lock import MapLockedError, MapWriterLock, lock_path
from vpr_ros.ros.parameters import NodeSettings
from vpr_ros.ros.pose_sources import OdometryPoses
from vpr_ros.ros.relocalization_gate import RelocalizationGate, yaw_of


def _stamp(seconds):
    sec = math.floor(seconds)
    return SimpleNamespace(sec=sec, nanosec=round((seconds - sec) * 1e9))


def _odometry(seconds, x, yaw=0.0, frame="odom"):
    """A nav_msgs/Odometry look-alike at (x, 0, 0) heading `yaw`."""
    orientation = SimpleNamespace(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))
    pose = SimpleNamespace(position=SimpleNamespace(x=x, y=0.0, z=0.0), orientation=orientation)
    return SimpleNamespace(header=SimpleNamespace(stamp=_stamp(seconds), frame_id=frame),
                           pose=SimpleNamespace(pose=pose))


def test_odometry_pose_is_interpolated_between_the_messages_around_the_stamp():
    poses = OdometryPoses(timeout_s=0.0)
    poses.add(_odometry(10.0, 0.0, 0.0))
    poses.add(_odometry(10.5, 5.0, math.pi / 2))
    pose = poses.pose_at(_stamp(10.25), "localization")
    assert pose[0] == pytest.approx(2.5) and yaw_of(pose) == pytest.approx(math.pi / 4)
    assert poses.pose_at(_stamp(9.0), "localization") is None, "before the first message"
    assert poses.pose_at(_stamp(11.0), "localization") is None, "no extrapolation"
    assert poses.frame_id == "odom"


def test_odometry_pose_waits_briefly_for_the_message_after_the_stamp():
    poses = OdometryPoses(timeout_s=5.0)
    poses.add(_odometry(10.0, 0.0))
    later = threading.Timer(0.1, lambda: poses.add(_odometry(11.0, 10.0)))
    later.start()
    started = time.monotonic()
    assert poses.pose_at(_stamp(10.5), "mapping")[0] == pytest.approx(5.0)
    assert time.monotonic() - started < 4.0, "returns as soon as the message arrives"
    later.join()


def test_odometry_gaps_and_old_messages_give_no_pose():
    poses = OdometryPoses(timeout_s=0.0, horizon_s=10.0, max_gap_s=1.0)
    poses.add(_odometry(10.0, 0.0))
    poses.add(_odometry(13.0, 3.0))
    assert poses.pose_at(_stamp(11.0), "localization") is None, "3 s gap > max_gap_s"
    poses.add(_odometry(12.0, 99.0))                  # older than the newest: dropped
    poses.add(_odometry(25.0, 4.0))
    assert poses.pose_at(_stamp(13.0), "localization") is None, "beyond the horizon"
    assert len(poses._samples) == 1


def _gate(**settings):
    return RelocalizationGate(NodeSettings(**settings))


POSE = (10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
COVARIANCE = [0.04 if i in (0, 7) else 0.0 for i in range(36)]


def test_min_interval_holds_relocalizations_that_come_too_soon():
    gate = _gate(relocalization_min_interval=2.0)
    assert gate.decide(POSE, now=100.0)[0]
    assert gate.decide(POSE, now=101.0) == (False, "within relocalization_min_interval of the "
                                                   "last one")
    assert gate.decide(POSE, now=102.5)[0]


@pytest.mark.parametrize("current, age_s, std_m, publish, why", [
    (None, 0.0, 0.2, True, "no current pose"),
    ((10.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), 0.0, 0.2, False, "agrees"),
    ((10.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), 9.0, 0.2, True, "silent"),
    ((10.5, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), 0.0, 3.0, True, "uncertain"),
    ((20.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0), 0.0, 0.2, True, "m from the current pose"),
    ((10.0, 0.0, 0.0, 0.0, 0.0, math.sin(0.5), math.cos(0.5)), 0.0, 0.2, True, "heading"),
])
def test_lost_or_disagreeing_gate(current, age_s, std_m, publish, why):
    gate = _gate(relocalization_gate="lost_or_disagreeing", relocalization_min_interval=0.0,
                 lost_after=5.0, lost_position_std=1.0, disagreement_distance=2.0,
                 disagreement_yaw=0.5)
    if current is not None:
        covariance = [std_m ** 2 if i in (0, 7) else 0.0 for i in range(36)]
        gate.update_current(current, covariance, now=100.0)
    decided, reason = gate.decide(POSE, now=100.0 + age_s)
    assert decided == publish and why in reason


def test_yaw_wraps_around_pi():
    gate = _gate(relocalization_gate="lost_or_disagreeing", relocalization_min_interval=0.0)
    near_pi = (10.0, 0.0, 0.0, 0.0, 0.0, math.sin(3.1 / 2), math.cos(3.1 / 2))
    minus_pi = (10.0, 0.0, 0.0, 0.0, 0.0, math.sin(-3.1 / 2), math.cos(-3.1 / 2))
    gate.update_current(near_pi, COVARIANCE, now=0.0)
    assert gate.decide(minus_pi, now=0.0)[0] is False, "3.1 and -3.1 rad are 0.08 rad apart"


def test_the_writer_lock_refuses_a_second_writer_and_names_it(tmp_path):
    map_dir = tmp_path / "maps" / "campus"
    with MapWriterLock(map_dir) as lock:
        assert lock.held and lock_path(map_dir) == tmp_path / "maps" / ".campus.lock"
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from vpr_ros.mapping.lock import MapWriterLock; "
             "MapWriterLock(sys.argv[1]).acquire()", str(map_dir)],
            capture_output=True, text=True)
        assert other.returncode != 0 and "MapLockedError" in other.stderr
        assert "being written by another process" in other.stderr
        with pytest.raises(MapLockedError, match=r"pid \d+"):
            MapWriterLock(map_dir).acquire()
    with MapWriterLock(map_dir):
        pass


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    map_dir = tmp_path / "campus"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vpr_ros.mapping.lock import MapWriterLock; "
         "MapWriterLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(map_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MapLockedError):
            MapWriterLock(map_dir).acquire()
    finally:
        holder.kill()
        holder.wait()
    with MapWriterLock(map_dir):
        pass
