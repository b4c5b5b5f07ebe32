"""Make the bundled sample (data/sample) from the full Gardens Point Walking copy.

Keeps every `--every`-th index of day_right and night_right, resizes so the long side is
`--long-side` pixels (INTER_AREA) and re-encodes as JPEG at `--quality`. File names keep the
original index (ImageNNN.jpg), so the index is still the place label. Writes are atomic.

    python tools/make_sample.py --source ../shared/datasets/gardens_point --out data/sample
"""
import argparse
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vpr_ros.io.atomic import atomic_write_bytes  # noqa: E402
from vpr_ros.io.images import read_image  # noqa: E402

CONDITIONS = ("day_right", "night_right")
FRAMES_PER_CONDITION = 200


def shrink(rgb, long_side: int):
    """Resize so the longer side is `long_side` pixels, keeping the aspect ratio."""
    height, width = rgb.shape[:2]
    scale = long_side / max(height, width)
    size = (round(width * scale), round(height * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(rgb, quality: int) -> bytes:
    ok, payload = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode a JPEG")
    return payload.tobytes()


def make_sample(source: Path, out: Path, every: int, long_side: int, quality: int) -> int:
    """Write the sample; returns its total size in bytes."""
    missing = [c for c in CONDITIONS if not (source / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}; point --source at the "
                                f"Gardens Point folder that holds {', '.join(CONDITIONS)}")
    jobs = [(c, i) for c in CONDITIONS for i in range(0, FRAMES_PER_CONDITION, every)]
    total = 0
    for condition, index in tqdm(jobs, desc="sample", unit="img"):
        name = f"Image{index:03d}.jpg"
        payload = encode_jpeg(shrink(read_image(source / condition / name), long_side), quality)
        atomic_write_bytes(out / condition / name, payload)
        total += len(payload)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "datasets" / "gardens_point",
                        help="Gardens Point folder with day_right/ and night_right/")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "sample", help="output folder")
    parser.add_argument("--every", type=int, default=2, help="keep every N-th index (default 2)")
    parser.add_argument("--long-side", type=int, default=480, help="long image side in pixels")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality 1-100")
    args = parser.parse_args(argv)
    if args.every < 1 or args.long_side < 32 or not 1 <= args.quality <= 100:
        parser.error("need --every >= 1, --long-side >= 32 and --quality in 1..100")
    total = make_sample(args.source, args.out, args.every, args.long_side, args.quality)
    print(f"wrote {args.out}: {total / 1e6:.2f} MB of JPEG")
    return 0


if __name__ == "__main__":
    sys.exit(main())
