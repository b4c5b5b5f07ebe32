"""Place datasets (.mat dbStruct, aligned traversals, CSV) and hard-negative mining on known geometry.

`write_traversals` also serves the training tests: tiny synthetic walks where image i of every
traversal shows place i (a smooth random texture), seen with a shift and, at "night", darker.
"""
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from training.datasets import (concat_place_sets, load_aligned_traversals, load_dbstruct,
                               load_position_csv, open_place_set, with_synthetic_queries)
from training.images import SyntheticImage
from training.config import DatasetSpec
from training.mining import HardNegativeMiner

TRAVERSALS = {"day_a": (0, 1.0), "day_b": (3, 1.0), "night": (1, 0.45)}


def write_traversals(root: Path, places: int = 12, size: int = 64, traversals=None) -> Path:
    """Folders day_a, day_b, night (or `traversals`: {name: (shift, gain)}) of `places` PNGs
    each; Image{i:03d}.png shows place i."""
    for name, (shift, gain) in (traversals or TRAVERSALS).items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(places):
            texture = np.random.default_rng(i).uniform(0, 255, (6, 6, 3)).astype(np.float32)
            image = cv2.resize(texture, (size + 8, size + 8), interpolation=cv2.INTER_CUBIC)
            image = np.clip(image[shift:shift + size, shift:shift + size] * gain, 0, 255)
            cv2.imwrite(str(folder / f"Image{i:03d}.png"), image.astype(np.uint8))
    return root


def _dbstruct(db_xy, q_xy, **changes):
    fields = {
        "whichSet": "train",
        "dbImageFns": np.array([[f"db/{i:04d}.jpg"] for i in range(len(db_xy))], dtype=object),
        "utmDb": np.asarray(db_xy, dtype=float).T,
        "qImageFns": np.array([[f"q/{i:04d}.jpg"] for i in range(len(q_xy))], dtype=object),
        "utmQ": np.asarray(q_xy, dtype=float).T,
        "numImages": len(db_xy), "numQueries": len(q_xy),
        "posDistThr": 25.0, "posDistSqThr": 625.0, "nonTrivPosDistSqThr": 100.0,
    }
    fields.update(changes)
    return {"dbStruct": {k: v for k, v in fields.items() if v is not None}}


DB_XY = [(x, 0.0) for x in range(0, 101, 5)]          # database every 5 m along a street
Q_XY = [(0.0, 1.0), (50.0, 8.0)]


def test_dbstruct_mat_gives_images_positions_and_radii(tmp_path):
    mat = tmp_path / "pitts_tiny_train.mat"
    savemat(mat, _dbstruct(DB_XY, Q_XY))
    places = load_dbstruct(mat, tmp_path / "images", tmp_path / "queries_real")
    assert places.num_db == 21 and places.num_queries == 2
    assert places.db_images[3] == tmp_path / "images" / "db/0003.jpg"
    assert places.query_images[1] == tmp_path / "queries_real" / "q/0001.jpg"
    assert (places.pos_radius, places.neg_radius, places.eval_radius) == (10.0, 25.0, 25.0)
    np.testing.assert_allclose(places.db_positions[4], (20.0, 0.0))
    # query 0 at (0, 1): db at 0 and 5 m lie within 10 m; 0..20 m within 25 m.
    assert places.train_positives()[0].tolist() == [0, 1]
    assert places.eval_positives()[0].tolist() == [0, 1, 2, 3, 4]
    # query 1 at (50, 8): within 10 m only x = 45, 50, 55.
    assert places.train_positives()[1].tolist() == [9, 10, 11]


@pytest.mark.parametrize("change, message", [
    ({"utmQ": np.zeros((3, 2))}, "utmQ has shape"),
    ({"nonTrivPosDistSqThr": None}, "lacks fields \\['nonTrivPosDistSqThr'\\]"),
    ({"numImages": 7}, "numImages is 7"),
])
def test_malformed_dbstruct_names_file_and_problem(tmp_path, change, message):
    mat = tmp_path / "broken.mat"
    savemat(mat, _dbstruct(DB_XY, Q_XY, **change))
    with pytest.raises(ValueError, match=message) as err:
        load_dbstruct(mat, tmp_path)
    assert "broken.mat" in str(err.value)


def test_mat_without_dbstruct_and_non_mat_file_are_refused(tmp_path):
    other = tmp_path / "other.mat"
    savemat(other, {"points": np.zeros(3)})
    with pytest.raises(ValueError, match="no 'dbStruct'.*points"):
        load_dbstruct(other, tmp_path)
    text = tmp_path / "notes.mat"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.mat: not a readable"):
        load_dbstruct(text, tmp_path)


def test_aligned_traversals_split_by_place_and_match_across_walks(tmp_path):
    root = write_traversals(tmp_path, places=12, size=32)
    train = load_aligned_traversals(root, list(TRAVERSALS), list(TRAVERSALS), places=(0, 8),
                                    pos_radius=1, neg_radius=3, eval_radius=1)
    assert train.num_db == train.num_queries == 24
    assert train.unit == "frames"
    assert all(int(p.stem[-3:]) < 8 for p in train.db_images)
    # query 2 is day_a Image002: positives are places 1..3 in day_b and night, never day_a.
    positives = train.train_positives()[2]
    assert sorted(train.db_images[i].parent.name for i in positives) == ["day_b"] * 3 + ["night"] * 3
    assert sorted(int(train.db_images[i].stem[-3:]) for i in positives) == [1, 1, 2, 2, 3, 3]
    # places within 3 frames in any traversal are never negatives
    near = {int(train.db_images[i].stem[-3:]) for i in train.non_negatives()[2]}
    assert near == {0, 1, 2, 3, 4, 5}
    held_out = load_aligned_traversals(root, ["day_b"], ["night"], places=(8, 12))
    assert [p.name for p in held_out.query_images] == [f"Image{i:03d}.png" for i in range(8, 12)]
    assert held_out.eval_positives()[0].tolist() == [0, 1, 2]


def test_aligned_traversals_with_different_lengths_are_refused(tmp_path):
    root = write_traversals(tmp_path, places=4, size=32)
    (root / "night" / "Image003.png").unlink()
    with pytest.raises(ValueError, match="same number of images.*'night': 3"):
        open_place_set(DatasetSpec(kind="aligned", root=str(root), db_traversals=["day_a"],
                                   query_traversals=["night"]))
    with pytest.raises(ValueError, match="places range \\[2, 9\\)"):
        load_aligned_traversals(root, ["day_a"], ["day_b"], places=(2, 9))


def test_position_csv_positives_negatives_in_meters(tmp_path):
    csv_file = tmp_path / "walk.csv"
    csv_file.write_text("path,x,y\n" + "".join(f"img{i}.jpg,{4.0 * i},0\n" for i in range(10)))
    places = load_position_csv(csv_file, pos_radius=5, neg_radius=9, eval_radius=5)
    assert places.db_images[0] == tmp_path / "img0.jpg"
    assert places.train_positives()[3].tolist() == [2, 4]       # itself excluded
    assert places.non_negatives()[3].tolist() == [1, 2, 3, 4, 5]


def test_position_csv_with_a_bad_row_names_the_row(tmp_path):
    csv_file = tmp_path / "walk.csv"
    csv_file.write_text("a.jpg,1,2\nb.jpg,east,3\n")
    with pytest.raises(ValueError, match="walk.csv: row 2: x and y must be numbers"):
        load_position_csv(csv_file)


def _mining_set(tmp_path):
    csv_file = tmp_path / "line.csv"
    csv_file.write_text("".join(f"img{i}.jpg,{float(i)},0\n" for i in range(30)))
    return load_position_csv(csv_file, pos_radius=2, neg_radius=5, eval_radius=2)


def test_mining_picks_nearest_positive_and_hardest_negatives_in_feature_space(tmp_path):
    places = _mining_set(tmp_path)
    miner = HardNegativeMiner(places, negatives_sampled=1000, negatives_kept=3)
    rng = np.random.default_rng(0)
    desc = rng.normal(size=(30, 8)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    # Query 10: make db 12 (a geographic positive, 2 m away) its feature twin, and db 20, 25, 29
    # (true negatives) progressively closer copies; db 8 (positive) and 13 (no-man's land) too.
    desc[12] = desc[10]
    for idx, noise in ((20, 0.01), (25, 0.02), (29, 0.03), (13, 0.0)):
        desc[idx] = desc[10] + noise
    miner.update_cache(desc, desc)
    positive, negatives = miner.mine(10)
    assert positive == 12
    assert negatives.tolist() == [20, 25, 29]
    assert all(abs(n - 10) > 5 for n in negatives)


def test_mining_remembers_last_hardest_negatives(tmp_path):
    """With 2 random negatives sampled per call, memory makes the kept set only ever get harder."""
    places = _mining_set(tmp_path)
    miner = HardNegativeMiner(places, negatives_sampled=2, negatives_kept=2, seed=1)
    angles = np.random.default_rng(3).permutation(30) * 0.05   # all distinct feature distances
    desc = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    miner.update_cache(desc, desc)
    distance = lambda ids: np.sum((desc[ids] - desc[0]) ** 2, axis=1)  # noqa: E731
    negatives = np.arange(6, 30)                                       # beyond 5 m of query 0
    global_hardest = set(negatives[np.argsort(distance(negatives))[:2]].tolist())
    previous = np.inf
    for _ in range(60):
        total = distance(miner.mine(0)[1]).sum()
        assert total <= previous + 1e-6
        previous = total
    assert set(miner.mine(0)[1].tolist()) == global_hardest


def test_mining_needs_the_cache_and_usable_queries(tmp_path):
    places = _mining_set(tmp_path)
    with pytest.raises(RuntimeError, match="update_cache"):
        HardNegativeMiner(places, negatives_kept=2).mine(0)
    with pytest.raises(ValueError, match="no query has a positive"):
        HardNegativeMiner(places, negatives_sampled=30, negatives_kept=30)


def test_synthetic_queries_have_their_source_place_as_positive(tmp_path):
    root = write_traversals(tmp_path, places=6, size=32)
    plain = load_aligned_traversals(root, ["day_a", "day_b"], ["night"], pos_radius=0, neg_radius=2)
    places = with_synthetic_queries(plain, variants=2, seed=3)
    assert places.num_queries == plain.num_queries + 2 * plain.num_db
    synthetic = places.query_images[plain.num_queries:]
    assert all(isinstance(s, SyntheticImage) for s in synthetic)
    assert [s.source for s in synthetic] == [Path(p) for p in plain.db_images] * 2
    assert len({s.seed for s in synthetic}) == len(synthetic)
    positives = places.train_positives()
    for q, image in enumerate(synthetic, start=plain.num_queries):
        source = plain.db_images.index(image.source)
        assert source in positives[q]                        # its own day image counts
        assert set(plain.db_positions[positives[q], 0]) == {plain.db_positions[source, 0]}
    assert with_synthetic_queries(plain, 0) is plain
    again = with_synthetic_queries(plain, variants=2, seed=3).query_images
    assert again == places.query_images and \
        with_synthetic_queries(plain, 2, seed=4).query_images != places.query_images


def test_concatenated_sets_never_mix_places_and_need_equal_radii(tmp_path):
    a = load_aligned_traversals(write_traversals(tmp_path / "a", places=6, size=32), ["day_a"],
                                ["night"])
    b = load_aligned_traversals(write_traversals(tmp_path / "b", places=4, size=32), ["day_b"],
                                ["night"])
    both = concat_place_sets([a, b])
    assert both.num_db == 10 and both.num_queries == 10
    positives = both.train_positives()
    for q in range(both.num_queries):
        from_a = q < a.num_queries
        assert len(positives[q]) and all((i < a.num_db) == from_a for i in positives[q])
    assert set(both.db_traversals[:a.num_db]).isdisjoint(both.db_traversals[a.num_db:])
    assert concat_place_sets([a]) is a
    b.pos_radius = 1
    with pytest.raises(ValueError, match="different radii"):
        concat_place_sets([a, b])


def test_place_ranges_split_aligned_walks_and_queries_can_come_from_a_stretch_of_their_own(tmp_path):
    root = write_traversals(tmp_path, places=12, size=32)
    around = load_aligned_traversals(root, ["day_a"], ["night"], places=[[0, 3], [8, 12]])
    assert [int(p.stem[-3:]) for p in around.db_images] == [0, 1, 2, 8, 9, 10, 11]
    assert around.name.endswith("places 0-2,8-11")
    held_out = load_aligned_traversals(root, ["day_a"], ["night"], places=[0, 12],
                                       query_places=[4, 7], eval_radius=1)
    assert held_out.num_db == 12 and [int(p.stem[-3:]) for p in held_out.query_images] == [4, 5, 6]
    assert held_out.eval_positives()[0].tolist() == [3, 4, 5]       # the map's own rows
    with pytest.raises(ValueError, match="place range \\[5, 2\\]"):
        open_place_set(DatasetSpec(kind="aligned", root=str(root), db_traversals=["day_a"],
                                   query_traversals=["night"], places=[[0, 3], [5, 2]]))


def test_csv_place_ranges_are_database_rows_and_queries_follow_their_nearest_row(tmp_path):
    day, night = tmp_path / "day.csv", tmp_path / "night.csv"
    day.write_text("path,x,y,traversal\n" + "".join(f"d{i}.jpg,{2.0 * i},0,day\n" for i in range(10)))
    night.write_text("path,x,y,traversal\n" + "".join(f"n{i}.jpg,{1.0 * i},0,night\n"
                                                      for i in range(20)))
    stretch = load_position_csv(day, night, places=[6, 10], pos_radius=2, neg_radius=4)
    assert [p.name for p in stretch.db_images] == ["d6.jpg", "d7.jpg", "d8.jpg", "d9.jpg"]
    assert [p.name for p in stretch.query_images] == [f"n{i}.jpg" for i in range(12, 20)]
    mapped = load_position_csv(day, night, places=[0, 10], query_places=[0, 2])
    assert mapped.num_db == 10 and [p.name for p in mapped.query_images] == ["n0.jpg", "n1.jpg",
                                                                          "n2.jpg", "n3.jpg"]
    with pytest.raises(ValueError, match="places range \\[8, 12\\) is outside 0..10"):
        load_position_csv(day, night, places=[8, 12])


def test_a_rendering_depends_on_its_image_not_on_the_other_places_in_the_set(tmp_path):
    root = write_traversals(tmp_path, places=6, size=32)
    whole = with_synthetic_queries(load_aligned_traversals(root, ["day_a"], ["night"]), 1, seed=3)
    part = with_synthetic_queries(load_aligned_traversals(root, ["day_a"], ["night"],
                                                          places=[3, 6]), 1, seed=3)
    seeds = {s.source: s.seed for s in whole.query_images[6:]}
    assert all(seeds[s.source] == s.seed for s in part.query_images[3:])
