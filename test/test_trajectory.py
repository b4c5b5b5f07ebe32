"""Trajectories: TUM files, times files, bag pose topics and TF chains, interpolation at frame stamps."""
import logging
import math

import numpy as np
import pytest

from bag_poses import (IMAGE_TOPIC, image_of, jpeg_image, odometry, pose_stamped, pose_with_covariance,
                       tf_message, write_bag)
from vpr_ros.io import open_source, quaternion
from vpr_ros.io.rosbag_poses import read_pose_topic, read_tf_chain
from vpr_ros.io.trajectory import PoseAttacher, Trajectory, read_times, read_tum

IDENTITY = (0.0, 0.0, 0.0, 1.0)


def yaw(angle: float):
    return (0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2))


def test_quaternion_helpers_compose_invert_and_rotate():
    a = np.array([1.0, 2.0, 0.0, *yaw(math.pi / 2)])
    b = np.array([1.0, 0.0, 0.0, *yaw(math.pi / 2)])
    ab = quaternion.compose(a, b)
    np.testing.assert_allclose(ab[:3], [1.0, 3.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(ab[3:], yaw(math.pi), atol=1e-12)
    np.testing.assert_allclose(quaternion.compose(quaternion.invert(a), a), [0, 0, 0, *IDENTITY], atol=1e-12)
    np.testing.assert_allclose(quaternion.rotation_vector(np.array(yaw(-0.3))), [0, 0, -0.3], atol=1e-12)
    np.testing.assert_allclose(quaternion.rotation_vector(np.array(IDENTITY)), [0, 0, 0])


# ------------------------------------------------------------------------- TUM files

def test_tum_file_with_comments_is_read_and_interpolated(tmp_path):
    path = tmp_path / "traj.tum"
    path.write_text("# timestamp tx ty tz qx qy qz qw\n\n"
                    f"10.0 0 0 0 {' '.join(map(str, IDENTITY))}\n"
                    f"11.0 2 4 0 {' '.join(map(str, yaw(math.pi / 2)))}  # turned left\n")
    trajectory = read_tum(path)
    assert len(trajectory) == 2 and trajectory.source == str(path)
    pose = trajectory.pose_at(10.5, max_gap_s=2.0)
    np.testing.assert_allclose(pose[:3], [1.0, 2.0, 0.0])
    np.testing.assert_allclose(pose[3:], yaw(math.pi / 4), atol=1e-12)
    assert trajectory.pose_at(10.0, 2.0)[:3] == (0.0, 0.0, 0.0)
    assert trajectory.pose_at(11.0, 2.0)[:3] == (2.0, 4.0, 0.0)


def test_slerp_takes_the_short_way_round():
    trajectory = Trajectory(np.array([0.0, 1.0]),
                            np.array([[0, 0, 0, *yaw(math.radians(170))],
                                      [0, 0, 0, *(-np.array(yaw(math.radians(-170))))]]))
    angle = quaternion.rotation_vector(np.array(trajectory.pose_at(0.5, 5.0)[3:]))[2]
    assert abs(abs(angle) - math.pi) < 1e-9, "halfway between 170 and -170 degrees is 180, not 0"


def test_frames_outside_the_trajectory_or_in_a_gap_get_no_pose():
    stamps = np.array([0.0, 1.0, 2.0, 10.0, 11.0])
    poses = np.column_stack([stamps, np.zeros((5, 5)), np.ones(5)])
    trajectory = Trajectory(stamps, poses)
    got = trajectory.poses_at([-0.1, 0.0, 0.5, 2.0, 5.0, 10.5, 11.0, 11.1], max_gap_s=1.5)
    np.testing.assert_allclose(got[:, 0], [np.nan, 0.0, 0.5, 2.0, np.nan, 10.5, 11.0, np.nan])
    assert trajectory.pose_at(5.0, max_gap_s=9.0)[0] == pytest.approx(5.0), "a larger gap bridges it"
    with pytest.raises(ValueError, match="max_gap_s must be positive"):
        trajectory.poses_at([0.5], 0.0)


def test_single_pose_trajectory_answers_only_its_own_stamp():
    trajectory = Trajectory(np.array([3.0]), np.array([[1, 2, 3, *IDENTITY]], dtype=float))
    assert trajectory.pose_at(3.0, 1.0) == (1.0, 2.0, 3.0, *IDENTITY)
    assert trajectory.pose_at(3.1, 1.0) is None


def test_unsorted_tum_file_is_sorted_with_a_warning_naming_the_line(tmp_path, caplog):
    path = tmp_path / "traj.txt"
    q = " ".join(map(str, IDENTITY))
    path.write_text(f"1.0 1 0 0 {q}\n3.0 3 0 0 {q}\n2.0 2 0 0 {q}\n")
    with caplog.at_level(logging.WARNING, logger="vpr_ros.io.trajectory"):
        trajectory = read_tum(path)
    np.testing.assert_array_equal(trajectory.stamps, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(trajectory.poses[:, 0], [1.0, 2.0, 3.0])
    assert "not in time order (line 3 goes back in time" in caplog.text


@pytest.mark.parametrize("lines, message", [
    (["1.0 0 0 0 0 0 0 1", "2.0 0 0 0 0 0 1"], r"traj.tum, line 2: expected 8 numbers 'timestamp tx ty tz qx qy qz qw', got 7"),
    (["# header", "1.0 0 0 0 0 0 0 1", "2.0 0 0 zero 0 0 0 1"], r"line 3: not a number in '2.0 0 0 zero"),
    (["1.0 0 0 0 0 0 0 2"], r"line 1: quaternion norm 2.0000 is not 1; expected a unit quaternion in the order qx qy qz qw"),
    (["1.0 0 0 0 0 0 0 1", "1.0 5 0 0 0 0 0 1"], r"line 1 and line 2 give different poses for the same stamp"),
    (["1.0 nan 0 0 0 0 0 1"], r"line 1: stamp and pose must be finite"),
    (["# only a comment"], r"has no poses"),
])
def test_malformed_tum_file_names_the_line(tmp_path, lines, message):
    path = tmp_path / "traj.tum"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        read_tum(path)


def test_rounded_quaternions_are_renormalized_and_repeats_merged(tmp_path):
    path = tmp_path / "traj.tum"
    path.write_text("1.0 0 0 0 0 0 0.7071 0.7071\n1.0 0 0 0 0 0 0.7071 0.7071\n2.0 1 0 0 0 0 0 1\n")
    trajectory = read_tum(path)
    assert len(trajectory) == 2
    assert np.linalg.norm(trajectory.poses[0, 3:]) == pytest.approx(1.0, abs=1e-12)


def test_missing_trajectory_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="trajectory file not found: .*nope.tum"):
        read_tum(tmp_path / "nope.tum")


# ------------------------------------------------------------------------- image folders

def _three_images(folder, sample_dir):
    folder.mkdir()
    for name in ("Image000.jpg", "Image002.jpg", "Image004.jpg"):
        (folder / name).write_bytes((sample_dir / "day_right" / name).read_bytes())
    return folder


def test_times_file_stamps_a_folder_one_line_per_image(tmp_path, sample_dir):
    folder = _three_images(tmp_path / "imgs", sample_dir)
    times = tmp_path / "times.txt"
    times.write_text("# stamp per image\n100.0\n100.5\n101.25\n")
    frames = list(open_source(folder, times=times))
    assert [f.stamp for f in frames] == [100.0, 100.5, 101.25]
    assert [f.stamp for f in open_source(folder, rate_hz=4.0)] == [0.0, 0.25, 0.5]
    times.write_text("100.0\n100.5\n")
    with pytest.raises(ValueError, match="2 stamps for 3 images .* one line per image"):
        open_source(folder, times=times)
    times.write_text("100.0\n99.0\n101.0\n")
    with pytest.raises(ValueError, match=r"times.txt, line 2: stamp 99.0 is not after 100.0 \(line 1\)"):
        read_times(times)
    times.write_text("100.0 extra\n")
    with pytest.raises(ValueError, match="line 1: expected one stamp in seconds"):
        read_times(times)


def test_times_file_is_refused_for_a_bag(tmp_path, sample_dir):
    bag = write_bag(tmp_path / "bag", {IMAGE_TOPIC: [(1.0, jpeg_image(1.0, image_of(sample_dir / "day_right" / "Image000.jpg")))]})
    (tmp_path / "times.txt").write_text("1.0\n")
    with pytest.raises(ValueError, match="times files apply to image folders only"):
        open_source(bag, times=tmp_path / "times.txt")


def test_pose_attacher_keeps_frames_without_pose_and_counts_them(tmp_path, sample_dir):
    folder = _three_images(tmp_path / "imgs", sample_dir)
    trajectory = Trajectory(np.array([0.0, 1.0]), np.array([[0, 0, 0, *IDENTITY], [4, 0, 0, *IDENTITY]], float))
    attacher = PoseAttacher(trajectory, max_gap_s=2.0)
    frames = list(attacher.attach(open_source(folder, rate_hz=2.0)))  # stamps 0, 0.5, 1.0
    assert [f.pose[0] for f in frames] == [0.0, 2.0, 4.0]
    frames = list(PoseAttacher(trajectory, 2.0).attach(open_source(folder, rate_hz=1.0)))  # 0, 1, 2
    assert [f.pose is None for f in frames] == [False, False, True]
    attacher = PoseAttacher(trajectory, 2.0)
    list(attacher.attach(open_source(folder, rate_hz=1.0)))
    assert (attacher.with_pose, attacher.without_pose) == (2, 1)
    assert "2 frames with a pose, 1 kept without one (outside the trajectory or in a gap > 2 s)" in attacher.summary()


# ------------------------------------------------------------------------- bags

def _image_entries(sample_dir, stamps):
    image = image_of(sample_dir / "day_right" / "Image000.jpg")
    return [(t, jpeg_image(t, image)) for t in stamps]


@pytest.mark.parametrize("make", [odometry, pose_stamped, pose_with_covariance])
def test_pose_topic_of_each_type_is_read(tmp_path, sample_dir, make):
    stamps = [100.0 + 0.1 * i for i in range(11)]
    bag = write_bag(tmp_path / "bag", {
        IMAGE_TOPIC: _image_entries(sample_dir, [100.0, 100.55]),
        "/pose": [(t, make(t, (t - 100.0, 0.0, 0.0, *IDENTITY))) for t in stamps]})
    trajectory = read_pose_topic(bag, "/pose")
    assert len(trajectory) == 11
    assert trajectory.pose_at(100.55, 0.5)[0] == pytest.approx(0.55)
    assert trajectory.frame_id == ("odom" if make is odometry else "map")


def test_missing_pose_topic_lists_the_topics_the_bag_has(tmp_path, sample_dir):
    bag = write_bag(tmp_path / "bag", {IMAGE_TOPIC: _image_entries(sample_dir, [1.0]),
                                       "/odom": [(1.0, odometry(1.0, (0, 0, 0, *IDENTITY)))]})
    with pytest.raises(ValueError, match=r"pose topic '/odometry' is not in bag .*; its topics: "
                                         r"/camera/image_raw/compressed \(sensor_msgs/msg/CompressedImage\), "
                                         r"/odom \(nav_msgs/msg/Odometry\)"):
        read_pose_topic(bag, "/odometry")
    with pytest.raises(ValueError, match="carries sensor_msgs/msg/CompressedImage, not one of nav_msgs/msg/Odometry"):
        read_pose_topic(bag, IMAGE_TOPIC)


def _tf_bag(tmp_path, sample_dir, name="bag"):
    """map -> odom (1 Hz, drifting +y), odom -> base_link (10 Hz, +x at 1 m/s, turning), static base_link -> camera."""
    tf, static = [], []
    for i in range(31):
        t = 100.0 + 0.1 * i
        edges = [("odom", "base_link", (t - 100.0, 0.0, 0.0, *yaw(0.1 * (t - 100.0))))]
        if i % 10 == 0:
            edges.append(("map", "odom", (0.0, 0.1 * (t - 100.0), 0.0, *IDENTITY)))
        tf.append((t, tf_message(t, edges)))
    static.append((100.0, tf_message(0.0, [("base_link", "camera", (0.5, 0.0, 0.2, *yaw(math.pi / 2)))])))
    return write_bag(tmp_path / name, {IMAGE_TOPIC: _image_entries(sample_dir, [100.0, 101.5, 102.0]),
                                       "/tf": tf, "/tf_static": static})


def test_tf_chain_composes_moving_and_static_transforms(tmp_path, sample_dir):
    bag = _tf_bag(tmp_path, sample_dir)
    base = read_tf_chain(bag, "map", "base_link", max_gap_s=1.5)
    assert base.frame_id == "map" and base.stamps[0] == pytest.approx(100.0)
    pose = base.pose_at(101.5, 0.5)
    np.testing.assert_allclose(pose[:3], [1.5, 0.15, 0.0], atol=1e-9)
    np.testing.assert_allclose(pose[3:], yaw(0.15), atol=1e-9)
    camera = read_tf_chain(bag, "map", "camera", max_gap_s=1.5).pose_at(102.0, 0.5)
    expected = quaternion.compose(np.array([2.0, 0.2, 0.0, *yaw(0.2)]), np.array([0.5, 0, 0.2, *yaw(math.pi / 2)]))
    np.testing.assert_allclose(camera, expected, atol=1e-9)
    # the reverse direction inverts the chain
    back = read_tf_chain(bag, "camera", "map", max_gap_s=1.5).pose_at(102.0, 0.5)
    np.testing.assert_allclose(quaternion.compose(expected, np.array(back)), [0, 0, 0, *IDENTITY], atol=1e-9)


def test_tf_chain_leaves_out_stamps_where_a_slow_transform_has_a_gap(tmp_path, sample_dir):
    bag = _tf_bag(tmp_path, sample_dir)
    strict = read_tf_chain(bag, "map", "base_link", max_gap_s=0.5)
    np.testing.assert_allclose(strict.stamps, [100.0, 101.0, 102.0, 103.0]), "only where map -> odom was sent"
    assert strict.pose_at(101.5, 0.5) is None
    assert len(read_tf_chain(bag, "odom", "base_link", max_gap_s=0.5)) == 31


def test_tf_errors_name_the_frames_or_topics_the_bag_has(tmp_path, sample_dir):
    bag = _tf_bag(tmp_path, sample_dir)
    with pytest.raises(ValueError, match=r"frame 'base_footprint' is not in the TF of bag .*; its transforms: "
                                         r"base_link -> camera, map -> odom, odom -> base_link"):
        read_tf_chain(bag, "map", "base_footprint", 1.0)
    with pytest.raises(ValueError, match="only static transforms connect 'base_link' and 'camera'"):
        read_tf_chain(bag, "base_link", "camera", 1.0)
    plain = write_bag(tmp_path / "plain", {IMAGE_TOPIC: _image_entries(sample_dir, [1.0])})
    with pytest.raises(ValueError, match=r"has no /tf or /tf_static topic .*its topics: /camera/image_raw/compressed"):
        read_tf_chain(plain, "map", "base_link", 1.0)


def test_tf_chain_whose_moving_transforms_never_overlap_is_an_error(tmp_path, sample_dir):
    tf = [(100.0 + 0.1 * i, tf_message(100.0 + 0.1 * i, [("odom", "base_link", (0.1 * i, 0, 0, *IDENTITY))]))
          for i in range(5)]
    tf.append((105.0, tf_message(105.0, [("map", "odom", (0, 0, 0, *IDENTITY))])))
    bag = write_bag(tmp_path / "bag", {IMAGE_TOPIC: _image_entries(sample_dir, [100.0]), "/tf": tf})
    with pytest.raises(ValueError, match=r"chain map -> base_link .* never complete: its moving transforms "
                                         r"\(map -> odom, odom -> base_link\) never overlap within 1 s"):
        read_tf_chain(bag, "map", "base_link", max_gap_s=1.0)
