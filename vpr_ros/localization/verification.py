"""Geometric verification of a place match: local features, ratio test, RANSAC on the epipolar geometry.

Two images of the same place share many local features that agree with one rigid camera motion;
a look-alike place does not. We extract ORB (binary, fast; default) or SIFT features at a fixed
working resolution, keep matches that pass Lowe's ratio test, and count the inliers of a
fundamental matrix fitted with RANSAC (USAC MAGSAC++ when OpenCV has it). The match is verified
when at least `min_inliers` survive.
"""
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from vpr_ros.mapping.records import LocalFeatures

FEATURE_TYPES = ("orb", "sift")
MIN_POINTS_FOR_MODEL = 8


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of verifying one query/keyframe pair."""

    passed: bool
    inliers: int
    matches: int
    method: str

    def to_dict(self) -> dict:
        return {"passed": self.passed, "inliers": self.inliers, "matches": self.matches,
                "method": self.method}


class GeometricVerifier:
    """Extracts local features and checks two feature sets for a consistent two-view geometry."""

    def __init__(self, feature_type: str = "orb", max_features: int = 1000, working_size: int = 640,
                 ratio: float = 0.8, ransac_threshold_px: float = 3.0, min_inliers: int = 25):
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"unknown feature type {feature_type!r}; choose one of {FEATURE_TYPES}")
        self.feature_type = feature_type
        self.max_features = max_features
        self.working_size = working_size
        self.ratio = ratio
        self.ransac_threshold_px = ransac_threshold_px
        self.min_inliers = min_inliers
        if feature_type == "orb":
            self._detector = cv2.ORB_create(nfeatures=max_features)
            self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        else:
            self._detector = cv2.SIFT_create(nfeatures=max_features)
            self._matcher = cv2.BFMatcher(cv2.NORM_L2)
        self._ransac_method = getattr(cv2, "USAC_MAGSAC", cv2.FM_RANSAC)

    @property
    def method(self) -> str:
        return f"{self.feature_type}+{'magsac' if self._ransac_method != cv2.FM_RANSAC else 'ransac'}"

    def extract(self, image: np.ndarray) -> LocalFeatures:
        """Local features of an RGB uint8 image, computed at `working_size` pixels on the long side."""
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        scale = self.working_size / max(gray.shape)
        if scale < 1.0:
            gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        keypoints, descriptors = self._detector.detectAndCompute(gray, None)
        width = self._detector.descriptorSize()
        dtype = np.uint8 if self.feature_type == "orb" else np.float32
        if descriptors is None:
            descriptors = np.zeros((0, width), dtype=dtype)
        points = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
        return LocalFeatures(points, descriptors.astype(dtype), (gray.shape[1], gray.shape[0]))

    def verify(self, query: LocalFeatures, keyframe: Optional[LocalFeatures]) -> VerificationResult:
        """Count RANSAC inliers of the ratio-test matches between two feature sets."""
        if keyframe is None or len(query) < MIN_POINTS_FOR_MODEL or len(keyframe) < MIN_POINTS_FOR_MODEL:
            return VerificationResult(False, 0, 0, self.method)
        if query.descriptors.dtype != keyframe.descriptors.dtype \
                or query.descriptors.shape[1] != keyframe.descriptors.shape[1]:
            raise ValueError(f"keyframe features are not {self.feature_type}; set the engine's "
                             f"verification features to the type the map was built with")
        pairs = self._matcher.knnMatch(query.descriptors, keyframe.descriptors, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if len(good) < MIN_POINTS_FOR_MODEL:
            return VerificationResult(False, 0, len(good), self.method)
        src = query.keypoints[[m.queryIdx for m in good]]
        dst = keyframe.keypoints[[m.trainIdx for m in good]]
        _, mask = cv2.findFundamentalMat(src, dst, self._ransac_method, self.ransac_threshold_px, 0.999)
        inliers = int(mask.sum()) if mask is not None else 0
        return VerificationResult(inliers >= self.min_inliers, inliers, len(good), self.method)
