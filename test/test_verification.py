"""Geometric verification on real Gardens Point images, alone and inside the engine."""
import numpy as np
import pytest

from vpr_ros.io.frames import Frame
from vpr_ros.io.images import read_image
from vpr_ros.localization import EngineConfig, GeometricVerifier, LocalizationEngine
from vpr_ros.mapping import Keyframe, KeyframeMap


@pytest.fixture(scope="module")
def verifier() -> GeometricVerifier:
    return GeometricVerifier("orb", min_inliers=25)


def image(root, traverse: str, index: int) -> np.ndarray:
    return read_image(root / traverse / f"Image{index:03d}.jpg")


def test_same_place_from_the_other_side_of_the_path_verifies(gardens_point, verifier):
    result = verifier.verify(verifier.extract(image(gardens_point, "day_right", 180)),
                             verifier.extract(image(gardens_point, "day_left", 180)))
    assert result.passed and result.inliers >= 50


@pytest.mark.parametrize("query, other", [(180, 60), (50, 150), (120, 20)])
def test_different_places_do_not_verify(gardens_point, verifier, query, other):
    result = verifier.verify(verifier.extract(image(gardens_point, "day_right", query)),
                             verifier.extract(image(gardens_point, "day_left", other)))
    assert not result.passed and result.inliers < 25


def test_missing_or_textureless_features_fail_without_error(verifier):
    blank = verifier.extract(np.full((360, 640, 3), 128, np.uint8))
    assert len(blank) == 0
    assert not verifier.verify(blank, None).passed
    assert not verifier.verify(blank, blank).passed


def test_sift_features_are_refused_against_an_orb_map(gardens_point, verifier):
    sift = GeometricVerifier("sift", max_features=200)
    img = image(gardens_point, "day_left", 10)
    with pytest.raises(ValueError, match="not orb"):
        verifier.verify(verifier.extract(img), sift.extract(img))


class ConstantEmbedder:
    """Fake embedder that finds every frame equally similar to keyframe 0, so only geometry decides."""

    dim = 4
    fingerprint = "constant"

    def embed(self, images):
        return np.tile(np.array([[1.0, 0.0, 0.0, 0.0]], np.float32), (len(images), 1))


def test_engine_accepts_only_geometrically_verified_matches(gardens_point):
    config = EngineConfig(verify=True, decision="single", score_threshold=0.5)
    keyframe_image = image(gardens_point, "day_left", 180)
    kf_map = KeyframeMap.create(4, "constant")
    features = GeometricVerifier().extract(keyframe_image)
    kf_map.add(np.array([[1.0, 0, 0, 0]], np.float32),
               [Keyframe("day", 90.0, pose=(1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0), features=features)])
    engine = LocalizationEngine(kf_map, ConstantEmbedder(), config)
    same = engine.process(Frame(image(gardens_point, "day_right", 180), 500.0, "camera", 180, "r180"))
    assert same.accepted and same.verification.passed and same.pose == (1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    assert same.confidence > 0.5
    other = engine.process(Frame(image(gardens_point, "day_right", 60), 501.0, "camera", 60, "r060"))
    assert other.reason == "verification_failed" and not other.verification.passed
