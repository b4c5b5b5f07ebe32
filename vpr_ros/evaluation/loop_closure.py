"""Score the engine's decisions against ground truth, for any of its decision modes.

The engine runs on precomputed descriptors, so a sweep over score thresholds costs no extra
embedding; recall at 100 % precision is the most correct loop closures with zero wrong ones.
"""
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from vpr_ros.evaluation.ground_truth import frame_number
from vpr_ros.localization import EngineConfig, LocalizationEngine
from vpr_ros.mapping import KeyframeMap


@dataclass
class Outcome:
    """Counts of one replay: accepted loop closures split into correct and wrong."""

    frames: int
    accepted: int
    correct: int
    wrong: int

    @property
    def precision(self) -> float:
        return self.correct / self.accepted if self.accepted else 1.0

    @property
    def recall(self) -> float:
        return self.correct / self.frames if self.frames else 0.0


def place_from_name(name: str) -> int:
    """The place number in a file name such as `Image042.jpg` (aligned traversals)."""
    number = frame_number(name)
    if number is None:
        raise ValueError(f"no place number in frame name {name!r}; name frames like Image042.jpg")
    return number


def replay_descriptors(kf_map: KeyframeMap, descriptors: np.ndarray, stamps: Sequence[float],
                       config: EngineConfig):
    """Decisions of a fresh engine (no embedder) on precomputed query descriptors, in order."""
    engine = LocalizationEngine(kf_map, None, config)
    return [engine.process_descriptor(d, s, index=i) for i, (d, s) in
            enumerate(zip(descriptors, stamps))]


def score_decisions(decisions, query_places: Sequence[int], keyframe_places: Dict[int, int],
                    tolerance: int) -> Outcome:
    """Accepted decisions whose keyframe's place is within `tolerance` of the query's are correct."""
    correct = wrong = 0
    for decision, place in zip(decisions, query_places):
        if decision.accepted:
            if abs(keyframe_places[decision.best.keyframe_id] - place) <= tolerance:
                correct += 1
            else:
                wrong += 1
    return Outcome(len(decisions), correct + wrong, correct, wrong)


def sweep_thresholds(kf_map, descriptors, stamps, config: EngineConfig, parameter: str, thresholds,
                     query_places, keyframe_places, tolerance) -> List[Tuple[float, Outcome]]:
    """Outcome of the engine at each value of the threshold `parameter` (else as in `config`)."""
    results = []
    for threshold in thresholds:
        cfg = EngineConfig.from_dict(config.to_dict(), **{parameter: float(threshold)})
        decisions = replay_descriptors(kf_map, descriptors, stamps, cfg)
        results.append((float(threshold),
                        score_decisions(decisions, query_places, keyframe_places, tolerance)))
    return results


def recall_at_full_precision(sweep: List[Tuple[float, Outcome]]) -> Tuple[float, float]:
    """(recall, threshold) of the sweep point with no wrong loop closure and the most correct ones."""
    clean = [(o.recall, t) for t, o in sweep if o.wrong == 0]
    return max(clean) if clean else (0.0, float("nan"))
