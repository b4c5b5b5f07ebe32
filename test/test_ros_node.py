"""vpr_node behaviour: ROS-free parts here; the rclpy end-to-end tests skip without ROS 2."""
import threading

import numpy as np
import pytest

from vpr_ros.ros.covariance import pose_covariance, sigma_scale
from vpr_ros.ros.diagnostics import OK, WARN, NodeStatistics
from vpr_ros.ros.latest_buffer import LatestOnlyBuffer
from vpr_ros.ros.match_image import compose_match_image, decode_thumbnail


# --- latest-only buffer --------------------------------------------------------------------

def test_buffer_keeps_only_the_newest_item_and_counts_drops():
    buffer = LatestOnlyBuffer()
    assert buffer.put(1) is False
    assert buffer.put(2) is True
    assert buffer.put(3) is True
    assert buffer.take(timeout=0) == 3
    assert (buffer.received, buffer.dropped) == (3, 2)
    assert buffer.take(timeout=0.01) is None


def test_buffer_take_wakes_when_an_item_arrives_from_another_thread():
    buffer = LatestOnlyBuffer()
    taken = []
    worker = threading.Thread(target=lambda: taken.append(buffer.take(timeout=5)))
    worker.start()
    buffer.put("frame")
    worker.join(timeout=5)
    assert taken == ["frame"]
    assert buffer.dropped == 0


def test_buffer_close_releases_a_waiting_worker_and_refuses_items():
    buffer = LatestOnlyBuffer()
    taken = []
    worker = threading.Thread(target=lambda: taken.append(buffer.take()))
    worker.start()
    buffer.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and taken == [None]
    assert buffer.put("late") is False and buffer.take(timeout=0) is None


def test_buffer_under_a_fast_producer_never_hands_out_stale_items():
    buffer = LatestOnlyBuffer()
    seen = []
    last = 1999

    def consume():
        while not seen or seen[-1] != last:
            item = buffer.take(timeout=5)
            if item is None:
                return
            seen.append(item)

    worker = threading.Thread(target=consume)
    worker.start()
    for i in range(last + 1):
        buffer.put(i)
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == last
    assert buffer.received == last + 1
    assert buffer.dropped + len(seen) == last + 1


# --- covariance from confidence ------------------------------------------------------------

def test_covariance_is_diagonal_with_the_configured_sigmas_at_full_confidence():
    cov = np.array(pose_covariance(1.0, position_sigma=2.0, rotation_sigma=0.1, max_scale=50.0))
    matrix = cov.reshape(6, 6)
    assert np.allclose(np.diag(matrix), [4.0, 4.0, 4.0, 0.01, 0.01, 0.01])
    assert np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0


def test_sigma_doubles_when_confidence_halves_and_saturates_at_max_scale():
    assert sigma_scale(0.5, 100.0) == pytest.approx(2.0)
    assert sigma_scale(0.25, 100.0) == pytest.approx(4.0)
    assert sigma_scale(0.001, 100.0) == 100.0
    assert sigma_scale(0.0, 100.0) == 100.0
    assert sigma_scale(float("nan"), 100.0) == 100.0
    assert sigma_scale(1.5, 100.0) == 1.0
    low = pose_covariance(0.2, 1.0, 0.1, 100.0)
    high = pose_covariance(0.9, 1.0, 0.1, 100.0)
    assert all(np.isfinite(low)) and low[0] > high[0] and low[35] > high[35]


def test_covariance_rejects_non_positive_sigmas():
    with pytest.raises(ValueError, match="sigmas must be positive"):
        pose_covariance(0.5, 0.0, 0.1, 10.0)
    with pytest.raises(ValueError, match="max_scale"):
        sigma_scale(0.5, 0.5)


# --- diagnostics ---------------------------------------------------------------------------

def _values(report):
    return dict(report.values)


def test_diagnostics_warn_when_no_image_arrived_for_too_long():
    stats = NodeStatistics(started_at=100.0)
    report = stats.report(104.0, dropped=0, map_size=10, mode="localization", no_image_warn_after=5.0)
    assert report.level == OK
    report = stats.report(106.0, dropped=0, map_size=10, mode="localization", no_image_warn_after=5.0)
    assert report.level == WARN and "no images received" in report.message
    stats.record_received(106.5)
    assert stats.report(107.0, dropped=0, map_size=10, mode="localization",
                        no_image_warn_after=5.0).level == OK
    report = stats.report(120.0, dropped=0, map_size=10, mode="localization", no_image_warn_after=5.0)
    assert report.level == WARN and "no new images" in report.message


def test_diagnostics_report_rate_latency_drops_and_match_age():
    stats = NodeStatistics(started_at=0.0)
    for i in range(11):
        stats.record_received(1.0 + 0.5 * i)          # 2 Hz
    stats.record_processed(received_at=5.0, started_at=5.02, finished_at=5.12, accepted=True,
                           keyframe_added=False)
    stats.record_processed(received_at=5.5, started_at=5.5, finished_at=5.7, accepted=False,
                           keyframe_added=True)
    stats.record_failed("cannot decode CompressedImage")
    values = _values(stats.report(8.0, dropped=3, map_size=42, mode="mapping", no_image_warn_after=5.0))
    assert float(values["input_rate_hz"]) == pytest.approx(2.0)
    assert float(values["latency_ms_mean"]) == pytest.approx(160.0)
    assert float(values["latency_ms_max"]) == pytest.approx(200.0)
    assert float(values["processing_ms_mean"]) == pytest.approx(150.0)
    assert float(values["last_match_age_s"]) == pytest.approx(2.9)
    assert values["frames_dropped"] == "3" and values["frames_failed"] == "1"
    assert values["map_keyframes"] == "42" and values["mode"] == "mapping"
    assert values["keyframes_added"] == "1" and values["matches_accepted"] == "1"
    assert "cannot decode" in values["last_error"]


# --- match image ---------------------------------------------------------------------------

def test_match_image_puts_query_beside_keyframe_with_a_coloured_caption():
    import cv2

    query = np.full((360, 640, 3), 10, dtype=np.uint8)
    keyframe_rgb = np.full((120, 160, 3), 200, dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", keyframe_rgb)
    keyframe = decode_thumbnail(jpeg.tobytes())
    image = compose_match_image(query, keyframe, "kf 7 score 0.81", accepted=True, height=120)
    assert image.dtype == np.uint8 and image.shape[0] == 120 + 28
    assert image.shape[1] == round(640 * 120 / 360) + 4 + 160
    assert image[60, 10].tolist() == [10, 10, 10]
    assert abs(int(image[60, -10, 0]) - 200) <= 3
    assert image[-2, 2].tolist() == [40, 170, 60]
    rejected = compose_match_image(query, None, "no match", accepted=False, height=120)
    assert rejected[-2, 2].tolist() == [200, 50, 40]
    assert decode_thumbnail(b"not a jpeg") is None and decode_thumbnail(None) is None
