"""Synthetic night renderings: a fixed image per (source, seed), darker and noisier than the day."""
import numpy as np
import pytest

from training.augment import synthetic_night


@pytest.fixture()
def day():
    """A bright daylight-like scene: blue sky over a textured ground, 96×160 RGB."""
    rng = np.random.default_rng(0)
    image = np.empty((96, 160, 3), np.uint8)
    image[:40] = (120, 170, 235)
    image[40:] = rng.integers(90, 200, (56, 160, 3))
    return image


def _luma(image):
    return (image.astype(np.float64) @ [0.2126, 0.7152, 0.0722]).mean()


def test_same_seed_same_image_other_seed_other_image(day):
    first = synthetic_night(day, np.random.default_rng(7))
    again = synthetic_night(day, np.random.default_rng(7))
    other = synthetic_night(day, np.random.default_rng(8))
    assert first.shape == day.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 5


def test_night_puts_out_the_sky_and_loses_colour(day):
    renders = [synthetic_night(day, np.random.default_rng(s)) for s in range(12)]
    sky_ratio = [_luma(r[:30]) / _luma(r[50:]) for r in renders]
    assert np.median(sky_ratio) < 0.9 * _luma(day[:30]) / _luma(day[50:])
    saturation = [np.ptp(r.reshape(-1, 3).mean(axis=0)) for r in renders]
    assert np.median(saturation) < np.ptp(day.reshape(-1, 3).mean(axis=0))


def test_non_rgb_input_is_refused_by_name():
    with pytest.raises(ValueError, match="H×W×3 uint8 RGB"):
        synthetic_night(np.zeros((8, 8), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match="float32"):
        synthetic_night(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))
