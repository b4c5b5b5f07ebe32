"""The map's sessions as tracks: keyframes of one session in stamp order, with travelled distance.

The sequence matcher walks along them; the pose estimate reads keyframe spacing from them. They
follow the map as it grows (mapping mode) by taking in new keyframes on `sync`.
"""
from typing import Dict, List, Optional

import numpy as np

STEP_TIME = "time"
STEP_DISTANCE = "distance"


class Track:
    """Keyframes of one session in stamp order; `distance` is travelled metres when all have poses."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.stamps = np.zeros(0)
        self.xyz = np.zeros((0, 3))
        self.has_distance = True
        self.distance = np.zeros(0)
        self.spacing = {STEP_TIME: 0.0, STEP_DISTANCE: 0.0}

    def extend(self, ids: np.ndarray, stamps: np.ndarray, poses: np.ndarray) -> None:
        """Add keyframes (any stamp order; `poses` (n, 7), NaN rows for none) and recompute
        coordinates and median spacing."""
        self.ids = np.concatenate([self.ids, ids])
        self.stamps = np.concatenate([self.stamps, stamps])
        self.has_distance = self.has_distance and not np.isnan(poses).any()
        self.xyz = np.concatenate([self.xyz, poses[:, :3]])
        order = np.argsort(self.stamps, kind="stable")
        self.ids, self.stamps, self.xyz = self.ids[order], self.stamps[order], self.xyz[order]
        if self.has_distance:
            steps = np.linalg.norm(np.diff(self.xyz, axis=0), axis=1)
            self.distance = np.concatenate([[0.0], np.cumsum(steps)])
        for step in (STEP_TIME, STEP_DISTANCE):
            if step == STEP_DISTANCE and not self.has_distance:
                continue
            coords = self.coordinates(step)
            self.spacing[step] = float(np.median(np.diff(coords))) if len(coords) > 1 else 0.0

    def coordinates(self, step: str) -> np.ndarray:
        """Position of each keyframe along the track: stamp (s) or travelled distance (m)."""
        return self.stamps if step == STEP_TIME else self.distance


class SessionTracks:
    """One `Track` per session of `keyframe_map`; `session_of[id]`, `position_of[id]` index them."""

    def __init__(self, keyframe_map) -> None:
        self.map = keyframe_map
        self._tracks: List[Track] = []
        self._names: Dict[str, int] = {}
        self.session_of = np.zeros(0, np.int64)
        self.position_of = np.zeros(0, np.int64)
        self._synced = 0

    def track(self, session: int) -> Track:
        return self._tracks[session]

    def sync(self) -> None:
        """Take in keyframes added to the map since the last call, read from the record columns
        (building a `Keyframe` per record would take seconds on a map of 1e6)."""
        size = len(self.map)
        if size == self._synced:
            return
        records, new = self.map.records, slice(self._synced, size)
        codes, stamps, poses = records.session_codes[new], records.stamps[new], records.poses[new]
        names = records.session_names
        grow = np.zeros(size - self._synced, np.int64)
        self.session_of = np.concatenate([self.session_of, grow])
        self.position_of = np.concatenate([self.position_of, grow])
        present, first = np.unique(codes, return_index=True)
        for code in present[np.argsort(first)]:
            name = names[code]
            if name not in self._names:
                self._names[name] = len(self._tracks)
                self._tracks.append(Track())
            track = self._tracks[self._names[name]]
            rows = np.flatnonzero(codes == code)
            track.extend(rows + self._synced, stamps[rows], poses[rows])
            self.session_of[track.ids] = self._names[name]
            self.position_of[track.ids] = np.arange(len(track.ids))
        self._synced = size

    def spacing_m(self, keyframe_id: int) -> Optional[float]:
        """Mean distance from a keyframe to its neighbours on its track (None without poses)."""
        self.sync()
        track = self._tracks[self.session_of[keyframe_id]]
        at = int(self.position_of[keyframe_id])
        here = track.xyz[at]
        gaps = [float(np.linalg.norm(track.xyz[j] - here)) for j in (at - 1, at + 1)
                if 0 <= j < len(track.ids)]
        gaps = [g for g in gaps if np.isfinite(g) and g > 0]
        return float(np.mean(gaps)) if gaps else None
