"""Video files as frames, decoded with OpenCV (FFmpeg backend)."""
from pathlib import Path
from typing import Iterator, Union

import cv2

from vpr_ros.io.frames import Frame

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def _open_capture(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"OpenCV cannot open video {path}: unsupported codec or damaged file; "
                         f"re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4) or extract "
                         f"its frames to a folder")
    return capture


def read_video_frames(path: Union[str, Path], frame_id: str = "camera") -> Iterator[Frame]:
    """Frames of a video file; stamp = the frame's position in the video, in seconds.

    The file is opened now, so a missing or undecodable video fails at the call.
    """
    path = Path(path)
    return _frames(_open_capture(path), path.name, frame_id)


def _frames(capture: cv2.VideoCapture, file_name: str, frame_id: str) -> Iterator[Frame]:
    fps = capture.get(cv2.CAP_PROP_FPS)
    index = 0
    try:
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            if position_ms > 0 or index == 0:
                stamp = position_ms / 1000.0
            else:  # container without timestamps: fall back to the nominal rate
                stamp = index / fps if fps > 0 else float(index)
            yield Frame(image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), stamp=stamp,
                        frame_id=frame_id, index=index, name=f"{file_name}#{index}")
            index += 1
    finally:
        capture.release()


def count_video_frames(path: Union[str, Path]) -> int:
    """Frame count from the container header (an estimate for some codecs; for progress bars)."""
    capture = _open_capture(Path(path))
    try:
        return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    finally:
        capture.release()
