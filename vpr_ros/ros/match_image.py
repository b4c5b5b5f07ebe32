"""The `~/match_image` picture: the query beside its best-matching keyframe, for rqt / RViz.

Keyframes keep a small JPEG thumbnail in the map (vpr_ros.mapping.thumbnail); the query is
scaled to the same height.
A green bar marks an accepted loop closure, red a rejected candidate, with the score and
keyframe id written on it so a person can judge the match at a glance.
"""
from typing import Optional

import cv2
import numpy as np

HEIGHT = 240
BAR_HEIGHT = 28
ACCEPTED_RGB = (40, 170, 60)
REJECTED_RGB = (200, 50, 40)


def _to_height(image: np.ndarray, height: int) -> np.ndarray:
    width = max(1, int(round(image.shape[1] * height / image.shape[0])))
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _no_thumbnail(width: int, height: int) -> np.ndarray:
    tile = np.full((height, width, 3), 64, dtype=np.uint8)
    cv2.putText(tile, "no thumbnail in map", (8, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (220, 220, 220), 1, cv2.LINE_AA)
    return tile


def compose_match_image(query: np.ndarray, keyframe: Optional[np.ndarray], caption: str,
                        accepted: bool, height: int = HEIGHT) -> np.ndarray:
    """H×W×3 uint8 RGB: query left, keyframe right (placeholder tile when it has no thumbnail),
    and a caption bar coloured by the decision."""
    left = _to_height(query, height)
    right = _to_height(keyframe, height) if keyframe is not None else _no_thumbnail(left.shape[1], height)
    pictures = np.hstack([left, np.full((height, 4, 3), 255, dtype=np.uint8), right])
    bar = np.zeros((BAR_HEIGHT, pictures.shape[1], 3), dtype=np.uint8)
    bar[:] = ACCEPTED_RGB if accepted else REJECTED_RGB
    cv2.putText(bar, caption, (6, BAR_HEIGHT - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.vstack([pictures, bar]))
