"""The per-frame engine: embed → search → re-rank → decide (single, chain or sequence) → verify
→ pose estimate (→ add keyframe).

Pure Python + numpy + OpenCV; the ROS node and the CLI feed it frames and publish its decisions.
"""
import logging
import time
from collections import deque
from typing import Deque, List, Optional, Sequence, Tuple

import faiss
import numpy as np

from vpr_ros.localization import decision as d
from vpr_ros.localization.config import EngineConfig
from vpr_ros.localization.decision import Candidate, Decision
from vpr_ros.localization.frame_check import frame_problem
from vpr_ros.localization.keyframe_policy import KeyframePolicy
from vpr_ros.localization.pose_estimate import estimate_pose
from vpr_ros.localization.rerank import place_voting
from vpr_ros.localization.sequence import END_AGREEMENT, SequenceMatcher
from vpr_ros.localization.tracks import STEP_DISTANCE
from vpr_ros.localization.temporal import TemporalConsistency
from vpr_ros.localization.verification import GeometricVerifier, VerificationResult
from vpr_ros.mapping.keyframe_map import NORM_TOLERANCE, KeyframeMap
from vpr_ros.mapping.records import Keyframe, LocalFeatures, Pose, check_pose
from vpr_ros.mapping.thumbnail import encode_thumbnail

LOG = logging.getLogger(__name__)
EXCLUDED_ALL = "every keyframe is inside the exclusion window"


def check_compatible(embedder, keyframe_map: KeyframeMap) -> None:
    """Refuse an embedder whose descriptors cannot be compared with the map's."""
    if embedder.dim != keyframe_map.dim or embedder.fingerprint != keyframe_map.fingerprint:
        raise ValueError(
            f"the model (fingerprint {embedder.fingerprint}, dim {embedder.dim}) is not the one the map "
            f"was built with (fingerprint {keyframe_map.fingerprint}, dim {keyframe_map.dim}); "
            f"use the map's model or rebuild the map")


class LocalizationEngine:
    """Turns frames (or precomputed descriptors) into decisions against a keyframe map.

    `embedder` follows the Embedder contract (dim, fingerprint, embed); it may be None when only
    `process_descriptor` is used. In mapping mode the engine adds keyframes to `keyframe_map`.
    """

    def __init__(self, keyframe_map: KeyframeMap, embedder=None, config: Optional[EngineConfig] = None):
        self.config = config or EngineConfig()
        faiss.omp_set_num_threads(self.config.search_threads)
        if embedder is not None:
            check_compatible(embedder, keyframe_map)
        self.map = keyframe_map
        self.embedder = embedder
        cfg = self.config
        self.temporal = TemporalConsistency(cfg.temporal_max_jump_s, cfg.temporal_speed_ratio,
                                            cfg.temporal_max_gap_s)
        self.policy = KeyframePolicy(cfg.keyframe_novelty_threshold, cfg.keyframe_interval_s,
                                     cfg.keyframe_distance_m)
        self.verifier = GeometricVerifier(cfg.verification_features, cfg.verification_max_features,
                                          ratio=cfg.verification_ratio,
                                          ransac_threshold_px=cfg.verification_ransac_px,
                                          min_inliers=cfg.verification_min_inliers)
        self.sequence = SequenceMatcher(keyframe_map, cfg.sequence_settings(),
                                        threads=cfg.search_threads)
        self.tracks = self.sequence.tracks
        self._recent: Deque[Tuple[int, float, float]] = deque()
        self._travelled = 0.0
        self._last_position: Optional[np.ndarray] = None

    def reset(self) -> None:
        """Forget chains and the query sequence (relocalization, map switch).

        The robot's own recent keyframes stay excluded: right after a reset they are still where
        it just was, not loop closures.
        """
        self.temporal.reset()
        self.sequence.reset()
        self.policy.reset()

    def set_mode(self, mode: str) -> None:
        """Switch between "localization" (fixed map) and "mapping" (the map grows).

        The node's poses change frame with the mode (odom vs map), so the query sequence and the
        travelled-distance reference start afresh.
        """
        if mode != self.config.mode:
            self.sequence.reset()
            self._last_position = None
        self.config = EngineConfig.from_dict(self.config.to_dict(), mode=mode)

    def process(self, frame, pose: Optional[Pose] = None) -> Decision:
        """Decide on one `Frame`; never raises for a bad frame (it yields rejected/bad_frame)."""
        return self.process_batch([frame], [pose])[0]

    def process_batch(self, frames: Sequence, poses: Optional[Sequence[Optional[Pose]]] = None) -> List[Decision]:
        """Decide on consecutive frames, embedding the usable ones in one batch (offline replay)."""
        if self.embedder is None:
            raise ValueError("this engine has no embedder; pass one, or call process_descriptor")
        poses = list(poses) if poses is not None else [None] * len(frames)
        start = time.perf_counter()
        problems = [frame_problem(getattr(f, "image", None)) for f in frames]
        usable = [i for i, p in enumerate(problems) if p is None]
        slot_of = {frame_pos: slot for slot, frame_pos in enumerate(usable)}
        descriptors, embed_errors = self._embed([frames[i].image for i in usable])
        per_frame_ms = 1000.0 * (time.perf_counter() - start) / max(len(frames), 1)
        decisions = []
        for i, frame in enumerate(frames):
            slot = slot_of.get(i)
            problem = problems[i] if slot is None else embed_errors[slot]
            if problem is not None:
                LOG.warning("rejecting frame %s: %s", getattr(frame, "name", "?"), problem)
                decisions.append(self._bad_frame(frame, problem, per_frame_ms))
                continue
            decision = self.process_descriptor(
                descriptors[slot], frame.stamp, frame_id=frame.frame_id, index=frame.index,
                name=frame.name, pose=poses[i], image=frame.image)
            decision.latency_ms += per_frame_ms
            decisions.append(decision)
        return decisions

    def _embed(self, images: List[np.ndarray]) -> Tuple[np.ndarray, List[Optional[str]]]:
        """Descriptors of `images` and, per image, the embedding error (None when it worked)."""
        if not images:
            return np.zeros((0, self.map.dim), np.float32), []
        try:
            return self.embedder.embed(images), [None] * len(images)
        except Exception as err:  # one bad image must not take the batch down: retry one by one
            if len(images) == 1:
                return np.zeros((1, self.map.dim), np.float32), [f"embedding failed: {err}"]
        rows, errors = [], []
        for image in images:
            row, error = self._embed([image])
            rows.append(row[0])
            errors.extend(error)
        return np.stack(rows), errors

    def _bad_frame(self, frame, problem: str, latency_ms: float) -> Decision:
        return Decision(stamp=float(getattr(frame, "stamp", float("nan"))),
                        frame_id=str(getattr(frame, "frame_id", "")), frame_index=int(getattr(frame, "index", -1)),
                        frame_name=str(getattr(frame, "name", "")), reason=d.REASON_BAD_FRAME,
                        detail=problem, latency_ms=latency_ms)

    def process_descriptor(self, descriptor: np.ndarray, stamp: float, *, frame_id: str = "",
                           index: int = -1, name: str = "", pose: Optional[Pose] = None,
                           image: Optional[np.ndarray] = None) -> Decision:
        """Decide on one precomputed descriptor (dim,) of the frame at `stamp`.

        `image` (RGB uint8) is needed for geometric verification and keyframe thumbnails/features.
        """
        start = time.perf_counter()
        decision = Decision(stamp=float(stamp), frame_id=frame_id, frame_index=index, frame_name=name)
        problem = self._descriptor_problem(descriptor)
        if problem is None and pose is not None:
            try:
                pose = check_pose(pose)
            except ValueError as err:
                problem = str(err)
        if problem is not None:
            decision.reason, decision.detail = d.REASON_BAD_FRAME, problem
            return decision
        query = np.asarray(descriptor, dtype=np.float32).reshape(1, -1)
        features: List[Optional[LocalFeatures]] = [None]
        if len(self.map) == 0:
            decision.reason, decision.detail = d.REASON_EMPTY_MAP, "the map has no keyframes yet"
            nearest_score = None
        else:
            nearest_score = self._decide(decision, query, image, features, pose)
        if self.config.mode == "mapping":
            self._maybe_add_keyframe(decision, query, pose, image, nearest_score, features)
        decision.latency_ms = 1000.0 * (time.perf_counter() - start)
        return decision

    def _descriptor_problem(self, descriptor) -> Optional[str]:
        array = np.asarray(descriptor)
        if array.shape not in ((self.map.dim,), (1, self.map.dim)):
            return f"descriptor has shape {array.shape}, expected ({self.map.dim},)"
        if not np.all(np.isfinite(array)):
            return "descriptor contains NaN or infinity"
        norm = float(np.linalg.norm(array))
        if abs(norm - 1.0) > NORM_TOLERANCE:
            return f"descriptor is not L2-normalized (norm {norm:.3f})"
        return None

    def _decide(self, decision: Decision, query: np.ndarray, image, features: list,
                pose: Optional[Pose]) -> Optional[float]:
        """Fill in candidates, status and reason; return the best score against the whole map."""
        cfg = self.config
        self._forget_old_keyframes(decision.stamp, pose)
        recent = [kf_id for kf_id, _, _ in self._recent]
        scores, ids = self.map.search(query, cfg.top_k, exclude_ids=recent)
        nearest_score = float(scores[0, 0]) if ids[0, 0] >= 0 else None
        if recent and cfg.mode == "mapping":
            nearest_score = float(self.map.search(query, 1)[0][0, 0])
        records = [(float(s), self.map.record(int(i))) for s, i in zip(scores[0], ids[0]) if i >= 0]
        candidates = [Candidate(kf.id, kf.session, kf.stamp, s, s) for s, kf in records]
        if cfg.rerank == "place_voting":
            candidates = place_voting(candidates, cfg.place_window_s)
        decision.candidates = candidates
        if cfg.decision == "sequence":
            best = self._sequence_best(decision, query[0], scores[0], ids[0], pose)
        else:
            best = self._frame_best(decision, candidates)
        if best is None:
            return nearest_score
        decision.best = best
        keyframe = self.map.record(best.keyframe_id)
        if cfg.verify:
            decision.verification = self._verify(image, keyframe, features)
            if not decision.verification.passed:
                decision.reason = d.REASON_VERIFICATION
                decision.detail = decision.detail or (
                    f"{decision.verification.inliers} inliers < {cfg.verification_min_inliers}")
                return nearest_score
        decision.status = d.ACCEPTED
        decision.confidence = self._confidence(decision, decision.verification)
        if keyframe.pose is not None:
            self._estimate_pose(decision, keyframe)
        return nearest_score

    def _frame_best(self, decision: Decision, candidates: List[Candidate]) -> Optional[Candidate]:
        """Single-frame or chain decision: the accepted candidate, or None with the reason set."""
        cfg = self.config
        passing = [c for c in candidates if c.score >= cfg.score_threshold]
        counts = self.temporal.update(decision.stamp, passing)
        required = cfg.temporal_consecutive if cfg.decision == "chain" else 1
        if not candidates:
            decision.reason, decision.detail = d.REASON_EMPTY_MAP, EXCLUDED_ALL
            return None
        if not passing:
            decision.best = candidates[0]
            decision.reason = d.REASON_BELOW_THRESHOLD
            decision.detail = (f"best score {candidates[0].score:.3f} < threshold "
                               f"{cfg.score_threshold:.3f}")
            return None
        consistent = [(c, n) for c, n in zip(passing, counts) if n >= required]
        if not consistent:
            decision.best, decision.temporal_count = passing[0], counts[0]
            decision.reason = d.REASON_TEMPORAL
            decision.detail = (f"{max(counts)} of {required} consecutive frames agree "
                               f"on this stretch of the map")
            return None
        best, decision.temporal_count = consistent[0]
        return best

    def _sequence_best(self, decision: Decision, query: np.ndarray, scores: np.ndarray,
                       ids: np.ndarray, pose: Optional[Pose]) -> Optional[Candidate]:
        """Sequence decision: the end keyframe of the best trajectory if its margin clears the bar."""
        cfg = self.config
        result = self.sequence.update(decision.stamp, query, ids, scores,
                                      None if pose is None else pose[:3])
        decision.sequence = result.to_dict()
        hypothesis = result.best
        if hypothesis is None:
            decision.reason, decision.detail = d.REASON_EMPTY_MAP, EXCLUDED_ALL
            return None
        keyframe = self.map.record(hypothesis.keyframe_id)
        best = Candidate(keyframe.id, keyframe.session, keyframe.stamp, hypothesis.similarity,
                         hypothesis.score)
        decision.temporal_count = result.length
        if result.at_speed_edge:
            decision.reason = d.REASON_SEQUENCE_SPEED_EDGE
            decision.detail = (f"the best trajectory runs at the slowest or fastest speed searched "
                               f"({self._speed_range(result.step)}): it may go on beyond them, so "
                               f"it is no evidence (a stop, or widen the range)")
        elif result.end_uncertain:
            decision.reason = d.REASON_SEQUENCE_END_UNCERTAIN
            decision.detail = ("the recent frames and the whole sequence place the end more than "
                               f"{END_AGREEMENT} keyframe apart along the stretch (a speed change, "
                               "or a stretch matched at another pace): which keyframe is unsure")
        elif result.pace_mismatch:
            decision.reason = d.REASON_SEQUENCE_PACE
            decision.detail = (f"the matched keyframes change {result.pace:.2f} times as much as "
                               f"the frames, one to the next (< sequence_min_pace "
                               f"{cfg.sequence_min_pace:g}): a fast drive past look-alikes "
                               f"fitted to a slow line through a bland stretch of the map")
        elif result.evidence < cfg.sequence_threshold:
            warmup, covered = self.sequence.settings.warmup, hypothesis.length
            if covered < warmup:
                why = (f"{result.length} frames since the sequence (re)started"
                       if covered >= result.length else
                       f"{covered} of its {result.length} frames on the mapped stretch (the older "
                       f"ones lie before its start: entering the map from unmapped ground?)")
                decision.reason = d.REASON_SEQUENCE_SHORT
                decision.detail = (f"margin {result.margin:.2f} x sqrt({covered}/{warmup}) "
                                   f"= {result.evidence:.2f} < threshold "
                                   f"{cfg.sequence_threshold:.2f}: {why}")
            else:
                decision.reason = d.REASON_SEQUENCE_AMBIGUOUS
                decision.detail = (f"margin {result.margin:.2f} over the best trajectory "
                                   f"elsewhere < threshold {cfg.sequence_threshold:.2f} "
                                   f"({result.length} frames)")
        if decision.reason is not None:
            decision.best = best
            return None
        return best

    def _speed_range(self, step: str) -> str:
        cfg = self.config
        if step == STEP_DISTANCE:
            return (f"sequence_distance_speed_min..max {cfg.sequence_distance_speed_min:g}.."
                    f"{cfg.sequence_distance_speed_max:g}")
        return f"sequence_speed_min..max {cfg.sequence_speed_min:g}..{cfg.sequence_speed_max:g}"

    def _verify(self, image, keyframe: Keyframe, features: list) -> VerificationResult:
        method = self.verifier.method
        if image is None:
            return VerificationResult(False, 0, 0, method + " (no query image)")
        if keyframe.features is None:
            return VerificationResult(False, 0, 0, method + " (keyframe has no local features; "
                                      "rebuild the map with --verification)")
        features[0] = features[0] or self.verifier.extract(image)
        return self.verifier.verify(features[0], keyframe.features)

    def _confidence(self, decision: Decision, verification: Optional[VerificationResult]) -> float:
        """How far the evidence clears its threshold, combined (noisy-OR) with the geometry.

        Sequence: 1 - threshold / evidence (0 at the threshold, 0.5 at twice it); single frame
        and chain: (score - threshold) / (1 - threshold).
        """
        cfg = self.config
        if cfg.decision == "sequence":
            evidence = self.sequence.last.evidence
            appearance = 1.0 if cfg.sequence_threshold == 0 else \
                float(np.clip(1.0 - cfg.sequence_threshold / max(evidence, 1e-9), 0.0, 1.0))
        else:
            threshold = cfg.score_threshold
            appearance = float(np.clip((decision.best.score - threshold) / max(1.0 - threshold, 1e-6),
                                       0.0, 1.0))
        if verification is None:
            return appearance
        geometry = min(1.0, verification.inliers / (4.0 * cfg.verification_min_inliers))
        return 1.0 - (1.0 - appearance) * (1.0 - geometry)

    def _estimate_pose(self, decision: Decision, anchor: Keyframe) -> None:
        """Relocalization pose and covariance from the anchor and the poses of the evidence."""
        support = [(anchor.pose, 1.0)]
        for keyframe_id, weight in self._votes(decision):
            pose = self.map.record(keyframe_id).pose
            if pose is not None and keyframe_id != anchor.id:
                support.append((pose, weight))
        spacing = self.tracks.spacing_m(anchor.id) or self.config.keyframe_distance_m or 1.0
        estimate = estimate_pose(anchor.pose, support, spacing, decision.confidence,
                                 independent_votes=self.config.decision != "sequence")
        decision.pose, decision.covariance = estimate.pose, estimate.covariance_rows()

    def _votes(self, decision: Decision) -> List[Tuple[int, float]]:
        """(keyframe id, weight in [0, 1]) of the keyframes whose poses vote for the position.

        Sequence: the end keyframes of the trajectories, weighted by how far their score falls
        short of the best in units of its standard error (a mean of n unit z-scores has error
        1/sqrt(n)): ends the evidence cannot tell apart vote alike. Single frame and chain: the
        shortlist, each candidate by its score above the shortlist's lowest, relative to the best.
        """
        if self.config.decision == "sequence":
            return [(h.keyframe_id, h.weight) for h in self.sequence.last.ranked]
        floor = min(c.score for c in decision.candidates)
        top = max(decision.best.score - floor, 1e-6)
        return [(c.keyframe_id, max(c.score - floor, 0.0) / top) for c in decision.candidates]

    def _forget_old_keyframes(self, stamp: float, pose: Optional[Pose]) -> None:
        """Stop excluding own keyframes that are both old enough and far enough behind."""
        if pose is not None:
            position = np.asarray(pose[:3], dtype=np.float64)
            if self._last_position is not None:
                self._travelled += float(np.linalg.norm(position - self._last_position))
            self._last_position = position
        window, distance = self.config.exclusion_window_s, self.config.exclusion_distance_m
        while self._recent and stamp - self._recent[0][1] >= window and (
                pose is None or self._travelled - self._recent[0][2] >= distance):
            self._recent.popleft()

    def _maybe_add_keyframe(self, decision: Decision, query: np.ndarray, pose, image,
                            nearest_score: Optional[float], features: list) -> None:
        cfg = self.config
        why = self.policy.reason_to_add(decision.stamp, pose, nearest_score)
        if why is None:
            return
        if cfg.verify and image is not None:
            features[0] = features[0] or self.verifier.extract(image)
        thumbnail = encode_thumbnail(image, cfg.thumbnail_long_side) \
            if cfg.store_thumbnails and image is not None else None
        link = decision.best.keyframe_id if decision.accepted else -1
        record = Keyframe(cfg.session, decision.stamp, decision.frame_id, pose, cfg.condition,
                          thumbnail, features[0], link)
        new_id = int(self.map.add(query, [record])[0])
        self.policy.added(decision.stamp, pose)
        self._recent.append((new_id, decision.stamp, self._travelled))
        decision.keyframe_added = new_id
        LOG.debug("added keyframe %d (%s) at %.3f", new_id, why, decision.stamp)
