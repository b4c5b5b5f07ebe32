"""Per-frame localization engine (no ROS imports): search, re-rank, temporal check, verify, decide."""
from vpr_ros.localization.config import EngineConfig
from vpr_ros.localization.decision import SCHEMA_VERSION, Candidate, Decision
from vpr_ros.localization.engine import LocalizationEngine, check_compatible
from vpr_ros.localization.replay import replay
from vpr_ros.localization.verification import GeometricVerifier, VerificationResult

__all__ = ["Candidate", "Decision", "EngineConfig", "GeometricVerifier", "LocalizationEngine",
           "SCHEMA_VERSION", "VerificationResult", "check_compatible", "replay"]
