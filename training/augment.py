"""Synthetic night and dusk from day images: the cheap form of 24/7 view synthesis.

Real night images are few (Gardens Point has one night walk), so training would see day↔night
pairs for only a handful of places. `synthetic_night` renders any day image as a plausible night
or dusk frame from a small camera model, so SARE sees a day↔night pair for every place:

1. to linear light (sRGB gamma 2.2); at night the bright sky goes black and the scene is lit
   unevenly: a dim ambient floor plus a few broad pools of lamp light;
2. exposure cut to 2–30 % (night) or 25–60 % (dusk);
3. street-light colour: a sodium-orange or cool-white cast, and desaturation toward grey;
4. light sources: a few bright warm blobs with a soft glare halo, mostly in the upper half;
5. auto-gain back to a usable brightness (at night past clipping, as the night walk's camera
   does), which amplifies shot and read noise;
6. defocus or motion blur, back to sRGB, and JPEG at quality 30–90.

Every draw comes from the `rng` passed in, so a (image, seed) pair is one fixed image.
"""
import cv2
import numpy as np

GAMMA = 2.2
NIGHT_SHARE = 0.75


def synthetic_night(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H×W×3 uint8 RGB day image → the same scene at night (p 0.75) or dusk, uint8 RGB."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"synthetic_night needs an H×W×3 uint8 RGB image, got {image.dtype} "
                         f"of shape {image.shape}")
    height, width = image.shape[:2]
    night = rng.random() < NIGHT_SHARE
    linear = (image.astype(np.float32) / 255.0) ** GAMMA
    if night:
        linear = linear * _dark_sky(linear)[..., None] * _lamp_pools(height, width, rng)[..., None]
    linear *= rng.uniform(0.02, 0.3) if night else rng.uniform(0.25, 0.6)
    linear = _street_light(linear, rng, saturation=rng.uniform(0.0, 0.5) if night else 0.9)
    if night:
        linear += _light_sources(height, width, rng)
    target = rng.uniform(0.8, 1.6) if night else rng.uniform(0.5, 0.9)
    gain = target / max(float(np.percentile(linear, 99)), 1e-4)
    linear = _sensor_noise(np.clip(linear, 0.0, 1.0), gain, rng)
    linear = _blur(np.clip(linear * gain, 0.0, 1.0), rng)
    rendered = (np.clip(linear, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0 + 0.5).astype(np.uint8)
    return _jpeg(rendered, int(rng.integers(30, 91)))


def _dark_sky(linear: np.ndarray) -> np.ndarray:
    """Per-pixel factor that puts out the daylight sky: bright, bluish pixels in the upper 60 %."""
    red, blue = linear[..., 0], linear[..., 2]
    luma = linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    sky = (blue >= red) & (luma > 0.35)
    sky[int(0.6 * len(sky)):] = False
    mask = cv2.GaussianBlur(sky.astype(np.float32), (0, 0), 2.0)
    return 1.0 - 0.97 * mask


def _lamp_pools(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Uneven night lighting: an ambient floor plus 1–3 broad pools of lamp light."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    light = np.full((height, width), rng.uniform(0.05, 0.25), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.3, 1.0) * height, rng.uniform(0.0, 1.0) * width
        sigma = rng.uniform(0.15, 0.5) * width
        light += rng.uniform(0.5, 1.5) * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma ** 2))
    return light


def _street_light(linear: np.ndarray, rng: np.random.Generator, saturation: float) -> np.ndarray:
    """Sodium (orange) or LED (cool) white balance, then mixing toward grey by `saturation`."""
    sodium = np.array([1.0, 0.72, 0.42], np.float32)
    cool = np.array([0.85, 0.95, 1.0], np.float32)
    mix = rng.random()
    cast = mix * sodium + (1 - mix) * cool
    lit = linear * cast
    grey = lit @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    return grey[..., None] + saturation * (lit - grey[..., None])


def _light_sources(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A few warm point lights with a Gaussian glare halo (linear light, to add)."""
    lights = np.zeros((height, width, 3), np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.poisson(2.5))):
        cy = rng.uniform(0.0, 0.6) * height
        cx = rng.uniform(0.0, 1.0) * width
        core = rng.uniform(1.0, 3.0) * height / 192
        halo = core * rng.uniform(4.0, 10.0)
        r2 = (ys - cy) ** 2 + (xs - cx) ** 2
        glow = np.exp(-r2 / (2 * core ** 2)) + rng.uniform(0.05, 0.25) * np.exp(-r2 / (2 * halo ** 2))
        colour = np.array([1.0, rng.uniform(0.6, 0.9), rng.uniform(0.3, 0.7)], np.float32)
        lights += rng.uniform(0.3, 1.0) * glow[..., None] * colour
    return lights


def _sensor_noise(linear: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise (Poisson in photo-electrons) and read noise, in pre-gain units."""
    electrons = rng.uniform(200.0, 2000.0) / gain          # full well seen at this exposure
    shot = rng.poisson(linear * electrons).astype(np.float32) / electrons
    read = rng.normal(0.0, rng.uniform(0.002, 0.02) / gain, size=linear.shape).astype(np.float32)
    return shot + read


def _blur(linear: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Defocus (Gaussian) or horizontal-ish motion blur from a long exposure."""
    if rng.random() < 0.5:
        sigma = rng.uniform(0.3, 1.5)
        return cv2.GaussianBlur(linear, (0, 0), sigma)
    length = int(rng.integers(2, 8))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    angle = rng.uniform(-30.0, 30.0)
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return cv2.filter2D(linear, -1, kernel / max(float(kernel.sum()), 1e-6))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round trip through JPEG at `quality` (RGB in, RGB out)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the synthetic image")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
