"""Node health figures and the diagnostic status built from them (ROS-free).

The node feeds events in (frame received, frame processed, frame failed, match accepted) with
monotonic times; a timer turns the figures into one status: level, message and key/values,
which `node.py` copies into a diagnostic_msgs/DiagnosticStatus on `/diagnostics`.
"""
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Tuple

OK, WARN, ERROR = 0, 1, 2
"""Levels, numbered as diagnostic_msgs/DiagnosticStatus numbers them."""

RATE_WINDOW_S = 10.0
LATENCY_WINDOW = 50


@dataclass
class DiagnosticReport:
    """What the node publishes as one DiagnosticStatus."""

    level: int
    message: str
    values: List[Tuple[str, str]] = field(default_factory=list)


class NodeStatistics:
    """Thread-safe counters and sliding windows: the subscription callback and the worker
    thread write, the diagnostics timer reads."""

    def __init__(self, started_at: float):
        self._lock = threading.Lock()
        self.started_at = started_at
        self._receive_times: Deque[float] = deque()
        self._latencies_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._processing_ms: Deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.received = 0
        self.processed = 0
        self.failed = 0
        self.accepted = 0
        self.keyframes_added = 0
        self.last_image_at: Optional[float] = None
        self.last_match_at: Optional[float] = None
        self.last_error = ""

    def record_received(self, now: float) -> None:
        with self._lock:
            self.received += 1
            self.last_image_at = now
            self._receive_times.append(now)
            while self._receive_times and now - self._receive_times[0] > RATE_WINDOW_S:
                self._receive_times.popleft()

    def record_processed(self, received_at: float, started_at: float, finished_at: float,
                         accepted: bool, keyframe_added: bool) -> None:
        with self._lock:
            self.processed += 1
            self._latencies_ms.append((finished_at - received_at) * 1e3)
            self._processing_ms.append((finished_at - started_at) * 1e3)
            if accepted:
                self.accepted += 1
                self.last_match_at = finished_at
            if keyframe_added:
                self.keyframes_added += 1

    def record_failed(self, error: str) -> None:
        with self._lock:
            self.failed += 1
            self.last_error = error

    def input_rate_hz(self, now: float) -> float:
        """Images per second over the last RATE_WINDOW_S seconds."""
        with self._lock:
            recent = [t for t in self._receive_times if now - t <= RATE_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0

    def report(self, now: float, *, dropped: int, map_size: int, mode: str,
               no_image_warn_after: float) -> DiagnosticReport:
        """The status for `/diagnostics`: WARN when no image came for `no_image_warn_after` s."""
        rate = self.input_rate_hz(now)
        with self._lock:
            last_image = self.last_image_at if self.last_image_at is not None else self.started_at
            silent_for = now - last_image
            latencies = list(self._latencies_ms)
            processing = list(self._processing_ms)
            values = [
                ("mode", mode),
                ("map_keyframes", str(map_size)),
                ("input_rate_hz", f"{rate:.2f}"),
                ("latency_ms_mean", _mean(latencies)),
                ("latency_ms_max", f"{max(latencies):.1f}" if latencies else "n/a"),
                ("processing_ms_mean", _mean(processing)),
                ("frames_received", str(self.received)),
                ("frames_processed", str(self.processed)),
                ("frames_dropped", str(dropped)),
                ("frames_failed", str(self.failed)),
                ("matches_accepted", str(self.accepted)),
                ("keyframes_added", str(self.keyframes_added)),
                ("last_match_age_s", "never" if self.last_match_at is None
                 else f"{now - self.last_match_at:.1f}"),
                ("seconds_since_last_image", f"{silent_for:.1f}"),
                ("last_error", self.last_error or "none"),
            ]
        if silent_for > no_image_warn_after:
            received = "no images received" if self.last_image_at is None else "no new images"
            return DiagnosticReport(WARN, f"{received} for {silent_for:.0f} s: check the image "
                                          f"topic remapping and the camera driver", values)
        return DiagnosticReport(OK, f"{rate:.1f} Hz in, {map_size} keyframes, "
                                    f"{dropped} dropped", values)


def _mean(values: List[float]) -> str:
    return f"{sum(values) / len(values):.1f}" if values else "n/a"
