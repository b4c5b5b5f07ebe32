"""Shared fixtures: where the real datasets and the bundled sample live."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"


def datasets_dir() -> Path:
    """`VPR_ROS_DATASETS`, else `../shared/datasets` beside the repository."""
    return Path(os.environ.get("VPR_ROS_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def gardens_point() -> Path:
    """Gardens Point Walking (day_left, day_right, night_right); skips when not present."""
    path = datasets_dir() / "gardens_point"
    if not (path / "day_right").is_dir():
        pytest.skip(f"Gardens Point not found at {path}; set VPR_ROS_DATASETS")
    return path


@pytest.fixture(scope="session")
def gardens_point_bags() -> Path:
    """The Gardens Point rosbag2 directories; skips when not present."""
    path = datasets_dir() / "gardens_point_bags"
    if not path.is_dir():
        pytest.skip(f"Gardens Point bags not found at {path}; set VPR_ROS_DATASETS")
    return path


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The small Gardens Point sample bundled in the repository (data/sample)."""
    return SAMPLE_DIR


@pytest.fixture(scope="module")
def messages(request):
    """The first FRAMES (a constant of the requesting test module) day_right frames of the
    bundled sample, as CompressedImage messages one second apart."""
    from sample_frames import sample_messages

    return sample_messages(request.module.FRAMES)


@pytest.fixture(scope="module")
def sample_map(messages, tmp_path_factory):
    """A map of `messages` with the pixel embedder, one keyframe per frame, saved by the
    processor."""
    from sample_frames import PixelEmbedder, build_map

    path = tmp_path_factory.mktemp("maps") / "day_right"
    assert build_map(PixelEmbedder(), messages, path) == len(messages)
    return path
