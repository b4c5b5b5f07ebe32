"""Image folders as frames: files in natural order, stamps from a times file or a nominal rate."""
import logging
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

from vpr_ros.io.frames import Frame
from vpr_ros.io.images import list_images, read_image

LOG = logging.getLogger(__name__)


def read_folder_frames(folder: Union[str, Path], rate_hz: float = 1.0, frame_id: str = "camera",
                       stamps: Optional[Sequence[float]] = None) -> Iterator[Frame]:
    """Frames of the images in `folder`; file k gets `stamps[k]`, else k / `rate_hz`.

    Files carry no time: `stamps` (one per image, in file order, e.g. from a times file) or the
    nominal rate gives it. Listing happens now, so a missing or empty folder, or a stamp count
    that is not the image count, fails at the call; an unreadable file is skipped with a
    warning and keeps its index, so index-based ground truth stays aligned.
    """
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    paths = list_images(folder)
    if stamps is None:
        stamps = [index / rate_hz for index in range(len(paths))]
    elif len(stamps) != len(paths):
        raise ValueError(f"{len(stamps)} stamps for {len(paths)} images in {folder}; "
                         f"a times file needs one line per image")
    return _frames(paths, [float(s) for s in stamps], frame_id)


def _frames(paths, stamps, frame_id: str) -> Iterator[Frame]:
    for index, (path, stamp) in enumerate(zip(paths, stamps)):
        try:
            image = read_image(path)
        except (ValueError, FileNotFoundError) as err:
            LOG.warning("skipping frame %d: %s", index, err)
            continue
        yield Frame(image=image, stamp=stamp, frame_id=frame_id, index=index, name=path.name)
