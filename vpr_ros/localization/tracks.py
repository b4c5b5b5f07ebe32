"""The map's sessions as tracks, and which keyframes show one place.

A track is the keyframes of one session in stamp order, with travelled distance: the sequence
matcher walks along it, the pose estimate reads keyframe spacing from it. A *place* is where a
keyframe lies on the track of the keyframe it is linked to (`Keyframe.link`, followed to the
oldest): day and night keyframes of one place, or two passes of one loop, are one place, not
rivals. Tracks and places follow the map as it grows (mapping mode) on `sync`.
"""
from typing import Dict, List, Optional

import numpy as np

STEP_TIME = "time"
STEP_DISTANCE = "distance"


class Track:
    """Keyframes of one session in stamp order.

    `time` is the session's clock with its stops taken out: a keyframe that shows the view of
    the one before it (`still`, the robot had not moved) lies at that one's time, so a robot
    that waited while mapping does not stretch the map under a constant-speed trajectory.
    `distance` is travelled metres along the keyframes that have poses; a keyframe without one
    (a missed TF lookup while mapping) takes the distance interpolated at its stamp, so it does
    not cost the session its distance coordinate. `has_distance` needs poses on at least two
    keyframes and on half of them.
    """

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.stamps = np.zeros(0)
        self.still = np.zeros(0, bool)
        self.time = np.zeros(0)
        self.xyz = np.zeros((0, 3))
        self.has_distance = False
        self.distance = np.zeros(0)
        self.spacing = {STEP_TIME: 0.0, STEP_DISTANCE: 0.0}

    def extend(self, ids: np.ndarray, stamps: np.ndarray, poses: np.ndarray, still: np.ndarray) -> None:
        """Add keyframes (any stamp order; `poses` (n, 7), NaN rows for none; `still`: shows the
        view of the keyframe added before it) and recompute coordinates and median spacing (over
        distinct coordinates: a robot parked while mapping adds keyframes at one spot)."""
        self.ids = np.concatenate([self.ids, ids])
        self.stamps = np.concatenate([self.stamps, stamps])
        self.still = np.concatenate([self.still, still])
        self.xyz = np.concatenate([self.xyz, poses[:, :3]])
        order = np.argsort(self.stamps, kind="stable")
        self.ids, self.stamps, self.xyz = self.ids[order], self.stamps[order], self.xyz[order]
        self.still = self.still[order]
        moving = np.diff(self.stamps) * ~self.still[1:]
        self.time = self.stamps[:1].sum() + np.concatenate([[0.0], np.cumsum(moving)])
        posed = ~np.isnan(self.xyz).any(axis=1)
        self.has_distance = posed.sum() >= 2 and posed.mean() >= 0.5
        if self.has_distance:
            hops = np.linalg.norm(np.diff(self.xyz[posed], axis=0), axis=1)
            along = np.concatenate([[0.0], np.cumsum(hops)])
            self.distance = np.interp(self.stamps, self.stamps[posed], along)
            self.distance[posed] = along
        for step in (STEP_TIME, STEP_DISTANCE):
            if step == STEP_DISTANCE and not self.has_distance:
                continue
            gaps = np.diff(self.coordinates(step))
            gaps = gaps[gaps > 0]
            self.spacing[step] = float(np.median(gaps)) if len(gaps) else 0.0

    def coordinates(self, step: str) -> np.ndarray:
        """Position of each keyframe along the track: moving time (s) or travelled distance (m)."""
        return self.time if step == STEP_TIME else self.distance


class SessionTracks:
    """One `Track` per session of `keyframe_map`; `session_of[id]`, `position_of[id]` index them,
    `place_track[id]`, `place_time[id]` say which place a keyframe shows (see `apart`).

    `link_window_s`: how far along its track an unlinked keyframe takes a linked neighbour's
    place; `stop_similarity`: a keyframe at least this cosine-similar to the one added before it
    in its session shows a stop (see `Track.time`; 1: never)."""

    def __init__(self, keyframe_map, link_window_s: float, stop_similarity: float) -> None:
        self.map = keyframe_map
        self.link_window_s = link_window_s
        self.stop_similarity = stop_similarity
        self._tracks: List[Track] = []
        self._names: Dict[str, int] = {}
        self.session_of = np.zeros(0, np.int64)
        self.position_of = np.zeros(0, np.int64)
        self.time_of = np.zeros(0)
        self.place_track = np.zeros(0, np.int64)
        self.place_time = np.zeros(0)
        self._synced = 0
        self._links_revision = -1

    def track(self, session: int) -> Track:
        return self._tracks[session]

    def sync(self) -> None:
        """Take in keyframes added to the map, and links set, since the last call, read from the
        record columns (building a `Keyframe` per record would take seconds on a map of 1e6)."""
        records, size = self.map.records, len(self.map)
        if size == self._synced and records.links_revision == self._links_revision:
            return
        if size != self._synced:
            self._take_in(records, size)
        self._places(records)
        self._links_revision = records.links_revision

    def _take_in(self, records, size: int) -> None:
        new = slice(self._synced, size)
        codes, stamps, poses = records.session_codes[new], records.stamps[new], records.poses[new]
        still = (records.prev_similarities[new] >= self.stop_similarity) & (self.stop_similarity < 1.0)
        names = records.session_names
        grow = np.zeros(size - self._synced, np.int64)
        self.session_of = np.concatenate([self.session_of, grow])
        self.position_of = np.concatenate([self.position_of, grow])
        self.time_of = np.concatenate([self.time_of, np.zeros(len(grow))])
        present, first = np.unique(codes, return_index=True)
        for code in present[np.argsort(first)]:
            name = names[code]
            if name not in self._names:
                self._names[name] = len(self._tracks)
                self._tracks.append(Track())
            track = self._tracks[self._names[name]]
            rows = np.flatnonzero(codes == code)
            track.extend(rows + self._synced, stamps[rows], poses[rows], still[rows])
            self.session_of[track.ids] = self._names[name]
            self.position_of[track.ids] = np.arange(len(track.ids))
            self.time_of[track.ids] = track.time
        self._synced = size

    def _places(self, records) -> None:
        """Each keyframe's place: its link followed to the oldest keyframe, on that one's track
        and (moving) time. An unlinked keyframe takes the place of its linked track neighbours within
        `link_window_s` (interpolated by stamp between two that agree on the track), else its own:
        a session is linked where its sequences were accepted, not at every keyframe."""
        links = records.links
        self.place_track, self.place_time = self.session_of.copy(), self.time_of.copy()
        if not np.any(links >= 0):
            return
        root = np.where(links >= 0, links, np.arange(len(links)))
        while True:                                  # links point to older ids: pointer jumping
            deeper = root[root]
            if np.array_equal(deeper, root):
                break
            root = deeper
        linked = links >= 0
        self.place_track[linked] = self.session_of[root[linked]]
        self.place_time[linked] = self.time_of[root[linked]]
        for track in self._tracks:
            self._fill_between_links(track, linked[track.ids])

    def _fill_between_links(self, track: Track, linked: np.ndarray) -> None:
        """Give the unlinked keyframes of `track` the place of their linked neighbours."""
        if linked.all() or not linked.any():
            return
        at = np.flatnonzero(linked)
        unlinked = np.flatnonzero(~linked)
        after = np.searchsorted(at, unlinked)
        before = after - 1
        has_before, has_after = before >= 0, after < len(at)
        prev_pos, next_pos = at[np.maximum(before, 0)], at[np.minimum(after, len(at) - 1)]
        stamps, window = track.time, self.link_window_s
        near_prev = has_before & (stamps[unlinked] - stamps[prev_pos] <= window)
        near_next = has_after & (stamps[next_pos] - stamps[unlinked] <= window)
        prev_ids, next_ids = track.ids[prev_pos], track.ids[next_pos]
        prev_track, next_track = self.place_track[prev_ids], self.place_track[next_ids]
        both = near_prev & near_next & (prev_track == next_track)
        span = np.maximum(stamps[next_pos] - stamps[prev_pos], 1e-9)
        share = np.clip((stamps[unlinked] - stamps[prev_pos]) / span, 0.0, 1.0)
        between = (1 - share) * self.place_time[prev_ids] + share * self.place_time[next_ids]
        nearest_prev = near_prev & (~near_next | (stamps[unlinked] - stamps[prev_pos]
                                                  <= stamps[next_pos] - stamps[unlinked]))
        one_side = (near_prev | near_next) & ~both
        source = np.where(nearest_prev, prev_ids, next_ids)
        ids = track.ids[unlinked]
        self.place_track[ids] = np.where(both, prev_track,
                                         np.where(one_side, self.place_track[source], self.place_track[ids]))
        self.place_time[ids] = np.where(both, between,
                                         np.where(one_side, self.place_time[source], self.place_time[ids]))

    def apart(self, keyframes, others, window_s: float, window_m: float) -> np.ndarray:
        """Elementwise (arrays broadcast): whether `others` show another place than `keyframes`.

        By position when both have poses (map frame: farther than `window_m`), else by place:
        on another track, or farther than `window_s` along the same one (its moving time).
        """
        a, b = np.broadcast_arrays(np.asarray(keyframes, np.int64), np.asarray(others, np.int64))
        xyz = self.map.records.poses[:, :3]
        delta = xyz[b] - xyz[a]
        metric = ~np.isnan(delta).any(axis=-1)
        far_m = np.linalg.norm(np.where(metric[..., None], delta, 0.0), axis=-1) > window_m
        far_place = ((self.place_track[b] != self.place_track[a])
                     | (np.abs(self.place_time[b] - self.place_time[a]) > window_s))
        return np.where(metric, far_m, far_place)

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
