"""Sequence matching on synthetic streams with a known path: noise, dropped frames, stops, a speed
change, reverse travel, a revisit after a long gap; and its place in the engine and its config."""
import numpy as np
import pytest

from vpr_ros.localization import EngineConfig, LocalizationEngine
from vpr_ros.localization.sequence import SequenceMatcher, SequenceSettings
from vpr_ros.mapping import Keyframe, KeyframeMap

DIM = 64
PLACES = 120


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def route():
    """Place descriptors that drift smoothly along a route (neighbours look alike: cosine 0.72
    median, below 0.9 everywhere, as moving keyframes do; above it they would read as stops)."""
    rng = np.random.default_rng(7)
    steps = rng.standard_normal((PLACES, DIM))
    return unit(np.cumsum(steps, axis=0) * 0.2 + rng.standard_normal((PLACES, DIM)))


def route_map(route, poses: bool = False) -> KeyframeMap:
    """One keyframe per place, 1 s (and, with poses, 2 m) apart."""
    kf_map = KeyframeMap.create(DIM, "synthetic")
    kf_map.add(route, [Keyframe("day", float(p), pose=(2.0 * p, 0, 0, 0, 0, 0, 1) if poses else None)
                       for p in range(PLACES)])
    return kf_map


def observe(route, place: float, noise: float, rng) -> np.ndarray:
    """A night view of the (possibly fractional) place: interpolated, with heavy noise."""
    low = int(np.floor(place))
    high, t = min(low + 1, PLACES - 1), place - low
    return unit((1 - t) * route[low] + t * route[high] + noise * rng.standard_normal(DIM) / np.sqrt(DIM))


def stream(kf_map, matcher, route, places, stamps, noise=1.5, positions=None, seed=3):
    """Feed observations of `places` at `stamps`; returns the results."""
    rng = np.random.default_rng(seed)
    results = []
    for i, (place, stamp) in enumerate(zip(places, stamps)):
        query = observe(route, place, noise, rng)
        scores, ids = kf_map.search(query, 10)
        position = None if positions is None else positions[i]
        results.append(matcher.update(stamp, query, ids[0], scores[0], position))
    return results


def hits(results, places, tolerance=2, skip=10):
    return np.mean([abs(r.best.keyframe_id - p) <= tolerance
                    for r, p in zip(results[skip:], places[skip:])])


def single_frame_hits(kf_map, route, places, noise=1.5, seed=3, tolerance=2):
    rng = np.random.default_rng(seed)
    found = [kf_map.search(observe(route, p, noise, rng), 1)[1][0, 0] for p in places]
    return np.mean([abs(f - p) <= tolerance for f, p in zip(found[10:], places[10:])])


def test_sequences_recover_a_route_that_single_frames_miss(route):
    kf_map = route_map(route)
    places = np.arange(10, 110)
    results = stream(kf_map, SequenceMatcher(kf_map), route, places, places.astype(float))
    assert single_frame_hits(kf_map, route, places) < 0.8
    assert hits(results, places) >= 0.97
    assert results[-1].length == 20 and results[-1].step == "time"
    right = [r.margin for r, p in zip(results[10:], places[10:]) if abs(r.best.keyframe_id - p) <= 2]
    assert np.median(right) > 0.5, "a right sequence stands out from the trajectories elsewhere"


def test_dropped_frames_and_a_speed_change_stay_on_the_route(route):
    kf_map = route_map(route)
    places = np.concatenate([np.arange(10, 50, 1.0), 50 + np.arange(0, 50) * 1.2])
    keep = np.ones(len(places), bool)
    keep[[15, 16, 30, 61, 62, 75]] = False                 # frames lost on the way
    stamps = np.concatenate([np.arange(10, 50, 1.0), 50 + np.arange(0, 50)])
    results = stream(kf_map, SequenceMatcher(kf_map), route, places[keep], stamps[keep])
    assert hits(results, places[keep]) >= 0.95
    assert abs(results[-1].best.speed - 1.2) < 0.15


def test_reverse_travel_needs_the_reverse_option(route):
    kf_map = route_map(route)
    places = np.arange(100, 10, -1)
    stamps = np.arange(len(places), dtype=float)
    forward = stream(kf_map, SequenceMatcher(kf_map), route, places, stamps)
    both = stream(kf_map, SequenceMatcher(kf_map, SequenceSettings(reverse=True)), route, places, stamps)
    assert hits(both, places) >= 0.95 and both[-1].best.direction == -1
    assert np.median([r.margin for r in both[10:]]) > np.median([r.margin for r in forward[10:]])


def test_the_reported_end_is_where_the_near_best_ends_agree():
    """Where neighbours look much alike, lines ending a place or two off score about as well as
    the right one; the end the near-best ones agree on is far less often more than a place off
    than the single top-scoring end, and the margin still comes from the top score. (Neighbours
    here are more alike than a moving camera's frames ever are, so stop detection is off.)"""
    rng = np.random.default_rng(7)
    kernel = np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2)
    smooth = unit(np.stack([np.convolve(c, kernel, mode="same") for c in
                            rng.standard_normal((DIM, PLACES))], axis=1))
    kf_map = route_map(smooth)
    places = np.arange(10, 110)
    agreed_off = top_off = 0
    for seed in (3, 4):
        matcher = SequenceMatcher(kf_map, SequenceSettings(stop_similarity=1.0))
        for r, p in zip(stream(kf_map, matcher, smooth, places,
                               places.astype(float), noise=2.0, seed=seed)[10:], places[10:]):
            top = max(r.ranked, key=lambda h: h.score)
            agreed_off += abs(r.best.keyframe_id - p) > 1
            top_off += abs(top.keyframe_id - p) > 1
            assert top.weight == 1.0 and all(0.0 <= h.weight <= 1.0 for h in r.ranked)
            assert r.best.weight > 0.5, "the agreed end is itself among the near-best"
    assert agreed_off * 2 <= top_off


def test_a_stop_is_handled_when_frames_come_with_positions(route):
    kf_map = route_map(route, poses=True)
    places = np.concatenate([np.arange(20, 40, 1.0), np.full(15, 40.0), np.arange(41, 60, 1.0)])
    stamps = np.arange(len(places), dtype=float)
    positions = [(2.0 * p, 0.0, 0.0) for p in places]       # the robot parks 15 s at place 40
    long = SequenceSettings(length=30)
    with_poses = stream(kf_map, SequenceMatcher(kf_map, long), route, places, stamps, positions=positions)
    assert all(r.step == "distance" for r in with_poses)
    assert hits(with_poses, places) >= 0.95
    parked = with_poses[34]
    assert parked.length == 21, "frames at one spot replace each other instead of piling up"
    by_time = stream(kf_map, SequenceMatcher(kf_map, long), route, places, stamps)
    assert hits(by_time, places) < hits(with_poses, places)


def test_restarts_name_their_reason(route):
    kf_map = route_map(route)
    matcher = SequenceMatcher(kf_map, SequenceSettings(max_gap_s=5.0))
    places = np.arange(10, 30)
    first = stream(kf_map, matcher, route, places, places.astype(float))
    assert first[0].restart == "start" and all(r.restart is None for r in first[1:])
    assert first[-1].length == 20
    revisit = stream(kf_map, matcher, route, [80, 81, 82], [1000.0, 1001.0, 1002.0])
    assert revisit[0].restart == "gap" and revisit[0].length == 1 and revisit[2].length == 3
    assert stream(kf_map, matcher, route, [83], [1001.5])[0].restart == "out_of_order"
    matcher.reset()
    assert stream(kf_map, matcher, route, [84], [1010.0])[0].restart == "reset"


def test_a_revisit_after_a_long_gap_is_found_again(route):
    kf_map = route_map(route)
    matcher = SequenceMatcher(kf_map)
    stream(kf_map, matcher, route, np.arange(10, 40), np.arange(10, 40, dtype=float))
    places = np.arange(70, 100)
    later = stream(kf_map, matcher, route, places, 5000.0 + np.arange(30))
    assert hits(later, places) >= 0.95


def test_the_engine_accepts_sequences_and_reports_them(route):
    kf_map = route_map(route, poses=True)
    engine = LocalizationEngine(kf_map, None, EngineConfig(sequence_threshold=0.5))
    rng = np.random.default_rng(5)
    decisions = [engine.process_descriptor(observe(route, p, 1.3, rng), float(p)) for p in range(20, 80)]
    accepted = [d for d in decisions if d.accepted]
    assert len(accepted) >= 45
    assert all(abs(d.best.keyframe_id - (20 + i)) <= 2 for i, d in enumerate(decisions) if d.accepted)
    event = accepted[-1].to_dict()
    assert event["sequence"]["length"] == 20 and event["sequence"]["margin"] >= 0.5
    assert event["covariance"] is not None and 0 < event["confidence"] <= 1
    for n, d in enumerate(decisions[:4], start=1):
        seq = d.sequence
        assert seq["evidence"] == pytest.approx(seq["margin"] * np.sqrt(n / 5), abs=1e-5)
        assert d.accepted == (seq["evidence"] >= 0.5)
        assert d.accepted or (d.reason == "sequence_short" and "sqrt" in d.detail)
    rejected = [d for d in decisions[4:] if not d.accepted]
    assert all(d.reason == "sequence_ambiguous" and "margin" in d.detail for d in rejected)


def test_a_restarted_sequence_needs_a_larger_margin_while_it_is_short(route):
    """Below the warm-up length the margin counts sqrt(n / warm-up): the same margin that
    passes at 5 frames does not pass at 1."""
    kf_map = route_map(route)
    settings = SequenceSettings(warmup_length=5)
    results = stream(kf_map, SequenceMatcher(kf_map, settings), route, np.arange(20, 30),
                     np.arange(20, 30, dtype=float), noise=0.3)
    for n, r in enumerate(results, start=1):
        assert r.evidence == pytest.approx(r.margin * np.sqrt(min(n, 5) / 5))
    first = results[0]
    engine = LocalizationEngine(kf_map, None, EngineConfig(sequence_threshold=first.margin * 0.9))
    decision = engine.process_descriptor(observe(route, 20, 0.3, np.random.default_rng(3)), 20.0)
    assert not decision.accepted and decision.reason == "sequence_short"


@pytest.mark.parametrize("overrides, message", [
    ({"sequence_length": 0}, "sequence_length must be >= 1"),
    ({"sequence_length": 4, "sequence_warmup_length": 5},
     "sequence_warmup_length must be in 1..sequence_length"),
    ({"sequence_speed_min": 1.3, "sequence_speed_max": 1.2}, "speed range is inverted"),
    ({"sequence_speed_steps": 3, "sequence_speed_min": 1.0, "sequence_speed_max": 1.0},
     "sequence_speed_steps > 1 needs"),
    ({"sequence_speed_min": 0.0}, "sequence_speed_min must be > 0"),
    ({"top_k": 0}, "top_k must be >= 1"),
    ({"decision": "vote"}, "decision must be one of"),
])
def test_bad_sequence_settings_are_refused_naming_the_parameter(overrides, message):
    with pytest.raises(ValueError, match=message):
        EngineConfig(**overrides)


def test_a_mode_switch_restarts_the_sequence(route):
    kf_map = route_map(route, poses=True)
    engine = LocalizationEngine(kf_map, None, EngineConfig())
    rng = np.random.default_rng(2)
    for p in range(20, 30):
        engine.process_descriptor(observe(route, p, 0.5, rng), float(p), pose=(2.0 * p, 0, 0, 0, 0, 0, 1))
    engine.set_mode("mapping")
    after = engine.process_descriptor(observe(route, 30, 0.5, rng), 30.0, pose=(500.0, 0, 0, 0, 0, 0, 1))
    assert after.sequence["restart"] == "reset" and after.sequence["length"] == 1


def test_the_matcher_defaults_are_the_engine_defaults():
    assert EngineConfig().sequence_settings() == SequenceSettings()


def test_sequence_decisions_run_on_a_compressed_map(route):
    """IVF-PQ keeps only codes; the matcher scores their decoded descriptors and still follows
    the route through a map that other places fill past the training size. These synthetic
    descriptors are isotropic, so there are no principal axes to keep: no projection
    (pca_dim=DIM); the projected default is tested on descriptors with a spectrum in test_mapping."""
    kf_map = KeyframeMap.create(DIM, "synthetic", index="ivfpq", nlist=16, pq_m=16, pca_dim=DIM)
    kf_map.add(route, [Keyframe("day", float(p)) for p in range(PLACES)])
    others = kf_map.index_spec.min_train_vectors
    kf_map.add(unit(np.random.default_rng(1).standard_normal((others, DIM))),
               [Keyframe("elsewhere", float(i)) for i in range(others)])
    assert kf_map.index_bytes() < len(kf_map) * DIM, "codes, not float32 descriptors"
    engine = LocalizationEngine(kf_map, None, EngineConfig())
    rng = np.random.default_rng(5)
    decisions = [engine.process_descriptor(observe(route, p, 1.0, rng), float(p))
                 for p in range(20, 80)]
    accepted = [(d.best.keyframe_id, 20 + i) for i, d in enumerate(decisions) if d.accepted]
    assert len(accepted) >= 20 and all(abs(k - p) <= 2 for k, p in accepted)
