"""bench/along_track_offset.py's offset estimate, without the datasets: a revisit whose middle
stretch shows the route a few places further back is read as that offset there, and as 0
elsewhere."""
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _route(rng, places: int = 60, dim: int = 64) -> np.ndarray:
    """Unit descriptors that change smoothly along the route, as a camera's views do."""
    steps = rng.normal(size=(places, dim))
    views = np.cumsum(steps, axis=0) + 3.0 * rng.normal(size=(1, dim))
    return views / np.linalg.norm(views, axis=1, keepdims=True)


def test_an_offset_stretch_is_found_where_it_is_and_nowhere_else():
    sys.path.insert(0, str(BENCH))
    try:
        import along_track_offset as bench
    finally:
        sys.path.remove(str(BENCH))
    db = _route(np.random.default_rng(0))
    revisit = db.copy()
    revisit[20:35] = db[16:31]
    offsets = bench.best_offsets(db, revisit)
    assert np.all(offsets[22:33] == -4)
    assert np.all(offsets[:15] == 0) and np.all(offsets[42:] == 0)
    assert bench.strip(np.array([0, -2, 2, -3, 4])) == "...-+"
