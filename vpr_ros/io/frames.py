"""The unit every reader yields and every consumer (embedder, engine, map builder) takes."""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass
class Frame:
    """One camera image with where and when it came from.

    `index` is the position in its source (file order, video frame number, or message number
    on the bag topic, counting skipped messages), so ground truth keyed by index stays valid
    when a corrupt frame is dropped. `pose` (x, y, z, qx, qy, qz, qw) is where the robot was,
    when a trajectory says so (`vpr_ros.io.trajectory.PoseAttacher`).
    """

    image: np.ndarray
    stamp: float
    frame_id: str
    index: int
    name: str
    pose: Optional[Tuple[float, ...]] = None
