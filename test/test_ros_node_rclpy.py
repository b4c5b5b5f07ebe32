"""vpr_node under a real rclpy and DDS (the ros-jazzy-* wheels that scripts/test.sh installs):
images in on a topic, typed loop closures and relocalizations out, services, parameters, pose
sources, the relocalization gate, the lifecycle node, saving and the writer lock.

The engine embeds with a raw-pixel embedder (sample_frames.PixelEmbedder) so each node starts
in a fraction of a second; the model-loading path runs in test_ros_node_process.py.
"""
import json
import math

import pytest

from ros_harness import RosHarness, Stream, import_ros, send_until_answered, wait_for
from sample_frames import (PixelEmbedder, processor_for, sample_messages,
                           to_rclpy_compressed, trajectory_pose)
from vpr_ros.localization import EngineConfig, LocalizationEngine
from vpr_ros.mapping import KeyframeMap
from vpr_ros.mapping.lock import MapLockedError, MapWriterLock

rclpy = import_ros()

from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from vpr_ros_interfaces.msg import LoopClosure  # noqa: E402
from vpr_ros_interfaces.srv import SaveMap  # noqa: E402

from vpr_ros.ros.lifecycle_node import VprLifecycleNode  # noqa: E402
from vpr_ros.ros.node import VprNode  # noqa: E402

FRAMES = 12
SINGLE = {"decision": "single", "score_threshold": 0.9}
"""A frame identical to a keyframe scores 1: accepted at once, whatever came before."""


class TrajectoryPoses:
    """Injected pose source: the made-up trajectory of sample_frames, by image stamp."""

    def __init__(self):
        self.asked = []

    def pose_at(self, stamp, mode):
        self.asked.append(mode)
        return trajectory_pose(stamp.sec - sample_messages(1)[0].header.stamp.sec)


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(rclpy)
    yield harness
    harness.close()


def _start(ros, node_class=VprNode, poses=None, **parameters):
    """A node of `node_class` with these parameter overrides and the pixel embedder; `poses`
    replaces the pose source the parameters name."""
    parameters.setdefault("use_compressed", True)
    parameters.setdefault("pose_source", "none")
    overrides = [Parameter(name, value=value) for name, value in parameters.items()]
    node = node_class(embedder=PixelEmbedder(), pose_source=poses,
                      context=ros.context, parameter_overrides=overrides)
    return ros.add(node)


def _assert_same_number(value, event_value):
    """A message float equals the event's number; the event's null is the message's NaN."""
    if event_value is None:
        assert math.isnan(value)
    else:
        assert value == pytest.approx(event_value, abs=1e-5)


@pytest.fixture
def node_cleanup(ros):
    started = []
    yield started
    for node in started:
        ros.remove(node)


def test_typed_loop_closures_carry_the_decisions_of_the_offline_engine(ros, messages, sample_map,
                                                                      node_cleanup):
    """Round trip: what the node publishes equals what the same engine decides offline."""
    node_cleanup.append(_start(ros, map_path=str(sample_map)))
    received = Stream(ros).send_all(messages)
    offline = LocalizationEngine(KeyframeMap.load(sample_map), PixelEmbedder(), EngineConfig())
    processor, _ = processor_for(offline)
    for i, (msg, closure) in enumerate(zip(messages, received)):
        event = json.loads(processor.process(msg, i, received_at=0.0).event_json)
        assert closure.status == (LoopClosure.STATUS_ACCEPTED if event["status"] == "accepted"
                                  else LoopClosure.STATUS_REJECTED)
        assert closure.reason == (event["reason"] or "")
        assert closure.keyframe_id == event["best"]["keyframe_id"]
        assert closure.score == pytest.approx(event["best"]["score"], abs=1e-6)
        assert list(closure.candidate_ids) == [c["keyframe_id"] for c in event["candidates"]]
        assert closure.sequence_length == event["temporal_count"]
        _assert_same_number(closure.margin, event["sequence"]["margin"])
        _assert_same_number(closure.evidence, event["sequence"]["evidence"])
        assert closure.decision == "sequence" and closure.header.frame_id == "camera"
        assert (closure.header.stamp.sec, closure.frame_index) == (msg.header.stamp.sec, i)
        assert closure.keyframe_stamp.sec == messages[closure.keyframe_id].header.stamp.sec
        assert closure.has_keyframe_pose and closure.keyframe_pose.header.frame_id == "map"
        assert closure.keyframe_pose.pose.position.x == trajectory_pose(closure.keyframe_id)[0]
        assert closure.verification == LoopClosure.VERIFICATION_NOT_RUN
        assert not closure.has_relative_transform and closure.relative_transform.rotation.w == 1.0
        assert closure.keyframe_added == -1
    assert received[0].reason == "sequence_short", "one frame is too short a sequence"
    accepted = [c for c in received if c.status == LoopClosure.STATUS_ACCEPTED]
    assert accepted, "the sequence decision accepts once it has evidence"
    for closure in accepted:
        assert closure.has_pose and closure.pose.header.frame_id == "map"
        assert closure.confidence > 0.0 and closure.pose.pose.covariance[0] > 0.0


def test_a_garbled_frame_is_a_rejected_loop_closure_and_the_node_goes_on(ros, messages,
                                                                       sample_map, node_cleanup):
    node_cleanup.append(_start(ros, map_path=str(sample_map), **SINGLE))
    stream = Stream(ros)
    garbled = to_rclpy_compressed(messages[0])
    garbled.data = bytes(b"\xff\xd8 not a jpeg")
    closure = stream.send(garbled)
    assert (closure.status, closure.reason) == (LoopClosure.STATUS_REJECTED, "bad_frame")
    assert "cannot decode" in closure.detail and closure.keyframe_id == -1
    assert math.isnan(closure.margin)
    assert stream.send(to_rclpy_compressed(messages[3])).status == LoopClosure.STATUS_ACCEPTED


def test_relocalizations_are_map_frame_poses_at_most_one_per_min_interval(ros, messages,
                                                                        sample_map, node_cleanup):
    node_cleanup.append(_start(ros, map_path=str(sample_map), relocalization_min_interval=3600.0,
                               **SINGLE))
    stream = Stream(ros)
    closures = stream.send_all(messages[:4])
    assert all(c.status == LoopClosure.STATUS_ACCEPTED for c in closures)
    assert wait_for(lambda: len(stream.poses) >= 1, 5.0)
    pose = stream.poses[0]
    assert pose.header.frame_id == "map" and pose.header.stamp == closures[0].header.stamp
    assert pose.pose.covariance[0] > 0.0
    assert abs(pose.pose.pose.position.x - trajectory_pose(0)[0]) < 3.0
    assert len(stream.poses) == 1, "the other three came within relocalization_min_interval"


def test_lost_or_disagreeing_gate_publishes_only_when_the_localizer_needs_it(ros, messages,
                                                                           sample_map,
                                                                           node_cleanup):
    node_cleanup.append(_start(ros, map_path=str(sample_map), relocalization_min_interval=0.0,
                               relocalization_gate="lost_or_disagreeing", **SINGLE))
    stream = Stream(ros)
    current = ros.probe.create_publisher(PoseWithCovarianceStamped, "/current_pose", 10)
    assert wait_for(lambda: current.get_subscription_count() > 0, 10.0)

    def localizer_says(x):
        msg = PoseWithCovarianceStamped()
        msg.header.frame_id = "map"
        msg.pose.pose.position.x, msg.pose.pose.orientation.w = float(x), 1.0
        msg.pose.covariance[0] = msg.pose.covariance[7] = 0.1
        current.publish(msg)

    stream.send(to_rclpy_compressed(messages[2]))
    assert wait_for(lambda: len(stream.poses) == 1, 5.0), "no current pose yet: the robot is lost"
    estimate = stream.poses[0].pose.pose.position.x
    localizer_says(estimate + 0.2)
    assert wait_for(lambda: node_cleanup[0]._gate._current is not None, 5.0)
    stream.send(to_rclpy_compressed(messages[2]))
    localizer_says(estimate + 50.0)
    assert wait_for(lambda: node_cleanup[0]._gate._current[1][0] == estimate + 50.0, 5.0)
    stream.send(to_rclpy_compressed(messages[2]))
    assert wait_for(lambda: len(stream.poses) == 2, 5.0)
    assert len(stream.poses) == 2, "the agreeing localizer got nothing, the disagreeing one did"


def test_services_save_reset_and_switch_mode_and_parameters_are_validated(ros, messages,
                                                                        sample_map, tmp_path,
                                                                        node_cleanup):
    copy = tmp_path / "map"
    KeyframeMap.load(sample_map).save(copy)
    poses = TrajectoryPoses()
    node = _start(ros, poses=poses, map_path=str(copy), keyframe_interval_s=0.5, **SINGLE)
    node_cleanup.append(node)
    stream = Stream(ros)

    def mode():
        answer = ros.call(GetParameters, "/vpr_node/get_parameters", GetParameters.Request(names=["mode"]))
        return answer.values[0].string_value

    def set_parameter(name, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return ros.call(SetParameters, "/vpr_node/set_parameters", request).results[0]

    assert mode() == "localization"
    answer = ros.call(SetBool, "/vpr_node/set_mapping_mode", SetBool.Request(data=True))
    assert answer.success and answer.message == "mapping mode" and mode() == "mapping"
    night = sample_messages(2, "night_right")
    added = [c.keyframe_added for c in stream.send_all(night)]
    assert added == [FRAMES, FRAMES + 1], "night frames become keyframes in mapping mode"
    assert poses.asked[-1] == "mapping"
    refused = set_parameter("mode", "slam")
    assert not refused.successful and "must be one of" in refused.reason
    refused = set_parameter("top_k", 3)
    assert not refused.successful and "read-only" in refused.reason
    assert set_parameter("mode", "localization").successful and mode() == "localization"

    saved = ros.call(SaveMap, "/vpr_node/save_map", SaveMap.Request())
    assert saved.success and saved.keyframes == FRAMES + 2 and saved.path == str(copy)
    stored = KeyframeMap.load(copy)
    assert len(stored) == FRAMES + 2 and stored.record(FRAMES).pose == trajectory_pose(0)
    assert ros.call(Trigger, "/vpr_node/reset", Trigger.Request()).success


def test_odometry_topic_poses_are_interpolated_at_the_image_stamp(ros, messages, tmp_path,
                                                                 node_cleanup):
    map_dir = tmp_path / "odometry_map"
    node = _start(ros, map_path=str(map_dir), mode="mapping", pose_source="odometry",
                  tf_timeout=0.5, keyframe_interval_s=0.5, exclusion_window_s=0.0)
    node_cleanup.append(node)
    odometry = ros.probe.create_publisher(Odometry, "/odom", 50)
    assert wait_for(lambda: odometry.get_subscription_count() > 0, 10.0)
    stream = Stream(ros)
    first = messages[0].header.stamp.sec
    for k in range(-2, 8):                          # odometry at x = 10 t, every 0.5 s
        msg = Odometry()
        msg.header.frame_id = "map"
        msg.header.stamp.sec, msg.header.stamp.nanosec = first + k // 2, 500_000_000 * (k % 2)
        msg.pose.pose.position.x, msg.pose.pose.orientation.w = 5.0 * k, 1.0
        odometry.publish(msg)
    assert wait_for(lambda: len(node._pose_source._samples) == 10, 5.0)
    closures = stream.send_all(messages[:3])
    assert [c.keyframe_added for c in closures] == [0, 1, 2]
    image = to_rclpy_compressed(messages[4])        # 4 s after the first: beyond the odometry
    assert stream.send(image).keyframe_added == 3
    assert ros.call(SaveMap, "/vpr_node/save_map", SaveMap.Request()).success
    stored = KeyframeMap.load(map_dir)
    assert [stored.record(i).pose[0] for i in range(3)] == [0.0, 10.0, 20.0]
    assert stored.record(3).pose is None, "no odometry after the stamp: no made-up pose"


def test_diagnostics_and_match_image_are_published(ros, messages, sample_map, node_cleanup):
    node_cleanup.append(_start(ros, map_path=str(sample_map), diagnostics_period=0.2, **SINGLE))
    diagnostics = ros.record(DiagnosticArray, "/diagnostics")
    pictures = ros.record(Image, "/vpr_node/match_image", 5)
    stream = Stream(ros)
    assert wait_for(lambda: ros.probe.count_subscribers("/vpr_node/match_image") > 0, 5.0)
    stream.send(to_rclpy_compressed(messages[1]))
    assert wait_for(lambda: pictures, 10.0)
    assert pictures[-1].encoding == "rgb8" and pictures[-1].height > 0
    assert wait_for(lambda: any(dict((v.key, v.value) for v in a.status[0].values)
                                .get("matches_accepted") == "1" for a in diagnostics), 10.0)
    status = diagnostics[-1].status[0]
    assert status.name == "/vpr_node: place recognition"
    assert dict((v.key, v.value) for v in status.values)["map_keyframes"] == str(FRAMES)


def test_lifecycle_node_loads_on_configure_and_listens_only_while_active(ros, messages,
                                                                        sample_map, tmp_path,
                                                                        node_cleanup):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    map_dir = tmp_path / "lifecycle_map"
    node = _start(ros, VprLifecycleNode, map_path=str(map_dir), mode="mapping",
                  keyframe_interval_s=0.5, exclusion_window_s=0.0)
    node_cleanup.append(node)

    def transition(transition_id):
        request = ChangeState.Request()
        request.transition.id = transition_id
        return ros.call(ChangeState, "/vpr_node/change_state", request).success

    def state():
        return ros.call(GetState, "/vpr_node/get_state", GetState.Request()).current_state.label

    assert state() == "unconfigured" and node._processor is None
    assert transition(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
    assert node._processor.map_size == 0 and node._subscription is None
    assert MapWriterLock(map_dir).path.exists()
    with pytest.raises(MapLockedError):
        MapWriterLock(map_dir).acquire()
    assert transition(Transition.TRANSITION_ACTIVATE) and state() == "active"
    stream = Stream(ros)
    assert [c.keyframe_added for c in stream.send_all(messages[:2])] == [0, 1]
    assert transition(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
    assert wait_for(lambda: stream.publisher.get_subscription_count() == 0, 5.0)
    assert transition(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
    assert len(KeyframeMap.load(map_dir)) == 2, "cleanup saves what mapping added"
    with MapWriterLock(map_dir):
        pass                                        # and lets go of the writer lock


def test_lifecycle_configure_fails_with_the_reason_when_the_map_is_missing(ros, tmp_path,
                                                                         node_cleanup):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    node = _start(ros, VprLifecycleNode, map_path=str(tmp_path / "absent"))
    node_cleanup.append(node)
    request = ChangeState.Request()
    request.transition.id = Transition.TRANSITION_CONFIGURE
    assert not ros.call(ChangeState, "/vpr_node/change_state", request).success
    assert node._processor is None


def test_a_second_writer_of_the_same_map_is_refused(ros, messages, sample_map, tmp_path,
                                                   node_cleanup):
    copy = tmp_path / "shared_map"
    KeyframeMap.load(sample_map).save(copy)
    with MapWriterLock(copy):                       # another process maps into it
        with pytest.raises(MapLockedError, match="being written by another process"):
            _start(ros, map_path=str(copy), mode="mapping")
        node = _start(ros, map_path=str(copy))
        node_cleanup.append(node)
        answer = ros.call(SetBool, "/vpr_node/set_mapping_mode", SetBool.Request(data=True))
        assert not answer.success and "being written by another process" in answer.message
    answer = ros.call(SetBool, "/vpr_node/set_mapping_mode", SetBool.Request(data=True))
    assert answer.success, "once the other writer is gone, mapping may start"


def test_mapping_saves_on_shutdown_and_on_the_autosave_timer(ros, messages, tmp_path):
    map_dir = tmp_path / "autosaved"
    node = _start(ros, map_path=str(map_dir), mode="mapping", autosave_interval=0.3,
                  keyframe_interval_s=0.5, exclusion_window_s=0.0)
    stream = Stream(ros)
    stream.send_all(messages[:2])
    assert wait_for(lambda: map_dir.is_dir() and len(KeyframeMap.load(map_dir)) == 2, 10.0)
    stream.send_all(messages[2:3])
    ros.remove(node)                                # save_map_on_shutdown is true by default
    assert len(KeyframeMap.load(map_dir)) == 3


def test_tf_pose_source_looks_up_the_mode_frames(ros, messages, sample_map, node_cleanup):
    pytest.importorskip("tf2_ros", reason="tf2_ros is not on PyPI; this test runs where ROS 2 "
                                          "Humble or Jazzy is installed")
    from geometry_msgs.msg import TransformStamped
    from tf2_ros.static_transform_broadcaster import StaticTransformBroadcaster

    node = _start(ros, map_path=str(sample_map), pose_source="tf", odom_frame="odom", **SINGLE)
    node_cleanup.append(node)
    assert node._pose_source.listening, "odom_frame set: localization listens to TF"
    transform = TransformStamped()
    transform.header.frame_id, transform.child_frame_id = "odom", "base_link"
    transform.transform.translation.x, transform.transform.rotation.w = 4.0, 1.0
    StaticTransformBroadcaster(ros.probe).sendTransform(transform)
    stamp = to_rclpy_compressed(messages[0]).header.stamp
    assert wait_for(lambda: node._pose_source.pose_at(stamp, "localization") is not None, 10.0)
    assert node._pose_source.pose_at(stamp, "localization")[0] == 4.0
    assert node._pose_source.pose_at(stamp, "mapping") is None, "no map -> base_link transform"


def test_no_pose_source_and_no_odom_frame_listen_to_no_tf(ros, sample_map, node_cleanup):
    node = _start(ros, map_path=str(sample_map), pose_source="none")
    node_cleanup.append(node)
    assert node._pose_source is None
    assert not any(name == "/tf" for name, _ in node.get_subscriber_names_and_types_by_node(
        "vpr_node", "/")), "no TF subscription without a pose source"
