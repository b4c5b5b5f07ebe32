"""Image folders as frames: files in natural order, stamps from a nominal frame rate."""
import logging
from pathlib import Path
from typing import Iterator, Union

from vpr_ros.io.frames import Frame
from vpr_ros.io.images import list_images, read_image

LOG = logging.getLogger(__name__)


def read_folder_frames(folder: Union[str, Path], rate_hz: float = 1.0,
                       frame_id: str = "camera") -> Iterator[Frame]:
    """Frames of the images in `folder`; file k gets stamp k / `rate_hz` (files carry no time).

    Listing happens now, so a missing or empty folder fails at the call; an unreadable file
    is skipped with a warning and keeps its index, so index-based ground truth stays aligned.
    """
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    paths = list_images(folder)
    return _frames(paths, rate_hz, frame_id)


def _frames(paths, rate_hz: float, frame_id: str) -> Iterator[Frame]:
    for index, path in enumerate(paths):
        try:
            image = read_image(path)
        except (ValueError, FileNotFoundError) as err:
            LOG.warning("skipping frame %d: %s", index, err)
            continue
        yield Frame(image=image, stamp=index / rate_hz, frame_id=frame_id, index=index, name=path.name)
