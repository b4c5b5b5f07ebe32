"""bench/descriptor_size.py's rule and storage codecs, bench/map_scaling.py's copies and exact
reference: the parts that decide or measure, without the datasets."""
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def benches():
    sys.path.insert(0, str(BENCH))
    import descriptor_size
    import map_scaling

    yield descriptor_size, map_scaling
    sys.path.remove(str(BENCH))


def _validation_rows(ds, single: float, sequence: float):
    pairs = [ds.Pair("A", [], [], [], True), ds.Pair("B", [], [], [], True), ds.Pair("T", [], [], [], False)]
    rows = [{"variant": v.name, "storage": v.storage, "bytes": v.bytes(208), "val mean R@1": single,
             "val A": single, "val B": single, "val A seq R@100P": sequence,
             "val B seq R@100P": sequence} for v in ds.VARIANTS]
    return pairs, rows, {(v.name, v.storage): i for i, v in enumerate(ds.VARIANTS)}


def test_the_shortfall_is_the_worst_excess_beyond_the_issue_tolerances(benches):
    ds, _ = benches
    pairs, rows, _ = _validation_rows(ds, 0.9, 1.0)
    row = dict(rows[1], **{"val A": 0.88, "val B seq R@100P": 0.95})
    assert ds.shortfall(row, rows[0], pairs) == pytest.approx(0.03)          # 1.0 - 0.02 - 0.95
    assert ds.shortfall(dict(rows[1], **{"val A": 0.88}), rows[0], pairs) == pytest.approx(-0.01)


def test_the_rule_takes_the_smallest_validation_shortfall_within_2_kb_and_no_map_fitted_storage(benches):
    ds, _ = benches
    pairs, rows, index = _validation_rows(ds, 0.5, 0.5)
    rows[0].update({"val A": 0.9, "val B": 0.9, "val A seq R@100P": 1.0, "val B seq R@100P": 1.0})
    for key, values in ((("local PCA 64, K=32", "pq64"), (0.9, 1.0, 0.9)),         # PQ: fitted
                        (("local PCA 64, K=32", "sq8"), (0.86, 0.97, 0.86)),       # short 0.01
                        (("local PCA 32, K=32", "sq8"), (0.9, 0.9, 0.95))):        # short 0.08
        single, sequence, mean = values
        rows[index[key]].update({"val A": single, "val B": single, "val A seq R@100P": sequence,
                                 "val B seq R@100P": sequence, "val mean R@1": mean})
    chosen = ds.choose(rows, pairs)
    assert (chosen["variant"], chosen["storage"], chosen["bytes"]) == ("local PCA 64, K=32", "sq8", 2048)


def test_map_storage_codecs_decode_close_to_the_descriptor(benches):
    ds, _ = benches
    rng = np.random.default_rng(0)
    x = np.sign(rng.standard_normal((50, 256))) + 0.3 * rng.uniform(-1, 1, (50, 256))
    x = ds.unit(x.astype(np.float32))
    for storage, tolerance in (("float32", 1e-6), ("fp16", 1e-3), ("sq8", 3e-3)):
        decoded = ds.codec(storage, x)(x)
        assert np.abs(decoded - x).max() < tolerance, storage


def test_copies_keep_the_real_rows_and_the_exact_reference_is_brute_force(benches):
    _, ms = benches
    rng = np.random.default_rng(1)
    base = ms.unit(rng.standard_normal((300, 32)).astype(np.float32))
    grown, cosine = ms.grow(base, 1000, rng)
    assert grown.shape == (1000, 32) and np.array_equal(grown[:300], base)
    np.testing.assert_allclose(np.linalg.norm(grown, axis=1), 1.0, rtol=1e-5)
    assert 0.2 < cosine < 0.95
    queries = ms.unit(grown[[5, 700]] + 0.01 * rng.standard_normal((2, 32)).astype(np.float32))
    assert ms.exact_top1(grown, queries).tolist() == [5, 700]
