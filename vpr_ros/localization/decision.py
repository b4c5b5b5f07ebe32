"""What the engine says about one frame: the JSONL event schema (versioned) and its parts."""
import math
from dataclasses import dataclass, field
from typing import List, Optional

from vpr_ros.localization.verification import VerificationResult
from vpr_ros.mapping.records import Pose

SCHEMA_VERSION = 2

ACCEPTED = "accepted"
REJECTED = "rejected"

REASON_BAD_FRAME = "bad_frame"
REASON_EMPTY_MAP = "empty_map"
REASON_BELOW_THRESHOLD = "below_threshold"
REASON_TEMPORAL = "temporal_inconsistent"
REASON_VERIFICATION = "verification_failed"
REASON_SEQUENCE_SHORT = "sequence_short"
REASON_SEQUENCE_AMBIGUOUS = "sequence_ambiguous"
REASON_SEQUENCE_SPEED_EDGE = "sequence_speed_edge"
REASON_SEQUENCE_END_UNCERTAIN = "sequence_end_uncertain"
REASON_SEQUENCE_PACE = "sequence_pace_mismatch"


@dataclass(frozen=True)
class Candidate:
    """A retrieved keyframe: cosine `score`, and `place_score` used for ranking after re-ranking."""

    keyframe_id: int
    session: str
    stamp: float
    score: float
    place_score: float

    def to_dict(self) -> dict:
        return {"keyframe_id": int(self.keyframe_id), "session": self.session,
                "stamp": float(self.stamp), "score": round(float(self.score), 6),
                "place_score": round(float(self.place_score), 6)}


@dataclass
class Decision:
    """The engine's verdict on one frame; `to_dict()` is the JSON event (schema 2).

    status is "accepted" or "rejected"; `reason` says why a frame was rejected (bad_frame,
    empty_map, below_threshold, temporal_inconsistent, sequence_short, sequence_ambiguous,
    sequence_speed_edge, sequence_end_uncertain, sequence_pace_mismatch, verification_failed)
    and `detail` adds a human-readable explanation. `sequence` holds the sequence matcher's
    figures (SequenceResult.to_dict) when the decision mode is "sequence". `pose` is the
    relocalization in the map frame (estimated from the supporting keyframes' poses) and
    `covariance` its 6x6 covariance (x y z rot_x rot_y rot_z), when the keyframes have poses.
    `confidence` is in [0, 1], 0 for rejections.
    """

    stamp: float
    frame_id: str = ""
    frame_index: int = -1
    frame_name: str = ""
    status: str = REJECTED
    reason: Optional[str] = None
    detail: str = ""
    candidates: List[Candidate] = field(default_factory=list)
    best: Optional[Candidate] = None
    temporal_count: int = 0
    verification: Optional[VerificationResult] = None
    sequence: Optional[dict] = None
    pose: Optional[Pose] = None
    covariance: Optional[List[List[float]]] = None
    confidence: float = 0.0
    keyframe_added: Optional[int] = None
    latency_ms: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    def to_dict(self) -> dict:
        """JSON-safe dict (plain Python types only)."""
        return {
            "schema": SCHEMA_VERSION,
            "stamp": float(self.stamp) if math.isfinite(self.stamp) else None,
            "frame_id": self.frame_id,
            "frame_index": int(self.frame_index),
            "frame_name": self.frame_name,
            "status": self.status,
            "reason": self.reason,
            "detail": self.detail,
            "best": self.best.to_dict() if self.best else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "temporal_count": int(self.temporal_count),
            "verification": self.verification.to_dict() if self.verification else None,
            "sequence": self.sequence,
            "pose": [float(v) for v in self.pose] if self.pose is not None else None,
            "covariance": self.covariance,
            "confidence": round(float(self.confidence), 6),
            "keyframe_added": None if self.keyframe_added is None else int(self.keyframe_added),
            "latency_ms": round(float(self.latency_ms), 3),
        }
