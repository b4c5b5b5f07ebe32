"""Place-recognition datasets with ground truth: which database images show a query's place.

Three sources give the same `PlaceSet` (database + queries + positions):
- Pittsburgh / Tokyo Time Machine `.mat` files (`dbStruct`, UTM positions in meters);
- aligned traversals (Gardens Point, Nordland): folders where the same index is the same place,
  positions in frames;
- a CSV of `path,x,y` in meters (optional `traversal` column).

Aligned and CSV sets can be restricted to ranges of places (`places`, and `query_places` for the
queries alone): that is how a route is split into training, held-out and k-fold stretches.

Positives lie within `pos_radius`, negatives beyond `neg_radius`; recall counts a match within
`eval_radius`. When images carry a traversal id, positives must come from another traversal, so a
query never "finds" itself or its neighbour frames in the same walk.
"""
import csv
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.io import loadmat
from scipy.spatial import cKDTree

from training.images import SyntheticImage
from vpr_ros.io.images import list_images

PathLike = Union[str, Path]


@dataclass
class PlaceSet:
    """Database and query images with positions (meters or frames) and the radii that define truth."""

    name: str
    db_images: List[Path]
    db_positions: np.ndarray
    query_images: List[Path]
    query_positions: np.ndarray
    pos_radius: float
    neg_radius: float
    eval_radius: float
    unit: str = "m"
    db_traversals: Optional[np.ndarray] = None
    query_traversals: Optional[np.ndarray] = None

    def __post_init__(self):
        self.db_positions = _as_positions(self.db_positions, len(self.db_images), self.name, "db")
        self.query_positions = _as_positions(self.query_positions, len(self.query_images),
                                             self.name, "query")
        if self.db_positions.shape[1] != self.query_positions.shape[1]:
            raise ValueError(f"{self.name}: database and query positions have different dimensions")
        if not 0 <= self.pos_radius <= self.neg_radius:
            raise ValueError(f"{self.name}: need 0 <= pos_radius ({self.pos_radius}) <= neg_radius "
                             f"({self.neg_radius}); images in between are neither positive nor negative")
        if (self.db_traversals is None) != (self.query_traversals is None):
            raise ValueError(f"{self.name}: give traversal ids for both database and queries, or neither")
        self._tree = cKDTree(self.db_positions)

    @property
    def num_db(self) -> int:
        return len(self.db_images)

    @property
    def num_queries(self) -> int:
        return len(self.query_images)

    def _within(self, radius: float, other_traversal_only: bool) -> List[np.ndarray]:
        hits = self._tree.query_ball_point(self.query_positions, r=radius)
        result = []
        for q, ids in enumerate(hits):
            ids = np.asarray(sorted(ids), dtype=np.int64)
            if other_traversal_only and self.db_traversals is not None:
                ids = ids[self.db_traversals[ids] != self.query_traversals[q]]
            result.append(ids)
        return result

    def train_positives(self) -> List[np.ndarray]:
        """Per query, database ids within `pos_radius` (from another traversal when known)."""
        return self._within(self.pos_radius, other_traversal_only=True)

    def eval_positives(self) -> List[np.ndarray]:
        """Per query, database ids that count as a correct match for Recall@N."""
        return self._within(self.eval_radius, other_traversal_only=True)

    def non_negatives(self) -> List[np.ndarray]:
        """Per query, database ids within `neg_radius`: never used as negatives."""
        return self._within(self.neg_radius, other_traversal_only=False)


def _as_positions(positions, count: int, name: str, role: str) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim == 1:
        positions = positions[:, None]
    if positions.ndim != 2 or positions.shape[0] != count:
        raise ValueError(f"{name}: {count} {role} images but positions of shape {positions.shape}")
    if not np.isfinite(positions).all():
        raise ValueError(f"{name}: {role} positions contain NaN or infinity")
    return positions


_DBSTRUCT_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages",
                    "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")


def load_dbstruct(mat_path: PathLike, image_root: PathLike, query_root: Optional[PathLike] = None,
                  pos_radius: Optional[float] = None, neg_radius: Optional[float] = None) -> PlaceSet:
    """A Pittsburgh / Tokyo TM `dbStruct` .mat file (NetVLAD's format) as a `PlaceSet`.

    Database file names are relative to `image_root`, query names to `query_root` (Pittsburgh keeps
    them in `queries_real/`; default `image_root`). Radii default to the file's own: positives
    within √nonTrivPosDistSqThr (10 m), negatives and recall beyond/within posDistThr (25 m).
    """
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise FileNotFoundError(f"dbStruct file not found: {mat_path}")
    try:
        mat = loadmat(str(mat_path), simplify_cells=True)
    except Exception as err:
        raise ValueError(f"{mat_path}: not a readable MATLAB .mat file ({err})") from err
    if "dbStruct" not in mat or not isinstance(mat["dbStruct"], dict):
        raise ValueError(f"{mat_path}: no 'dbStruct' struct inside; expected NetVLAD's "
                         f"Pittsburgh/Tokyo TM format (top-level keys: "
                         f"{sorted(k for k in mat if not k.startswith('__'))})")
    db = mat["dbStruct"]
    missing = [f for f in _DBSTRUCT_FIELDS if f not in db]
    if missing:
        raise ValueError(f"{mat_path}: dbStruct lacks fields {missing}")
    db_names = _names(db["dbImageFns"])
    q_names = _names(db["qImageFns"])
    utm_db = _utm(db["utmDb"], len(db_names), mat_path, "utmDb")
    utm_q = _utm(db["utmQ"], len(q_names), mat_path, "utmQ")
    for field, names in (("numImages", db_names), ("numQueries", q_names)):
        if int(db[field]) != len(names):
            raise ValueError(f"{mat_path}: {field} is {int(db[field])} but there are "
                             f"{len(names)} file names")
    image_root = Path(image_root)
    query_root = Path(query_root) if query_root is not None else image_root
    pos = float(np.sqrt(db["nonTrivPosDistSqThr"])) if pos_radius is None else pos_radius
    neg = float(db["posDistThr"]) if neg_radius is None else neg_radius
    return PlaceSet(name=f"{mat_path.stem} ({db['whichSet']})",
                    db_images=[image_root / n for n in db_names], db_positions=utm_db,
                    query_images=[query_root / n for n in q_names], query_positions=utm_q,
                    pos_radius=pos, neg_radius=neg, eval_radius=float(db["posDistThr"]), unit="m")


def _names(cell) -> List[str]:
    return [str(n) for n in np.atleast_1d(np.asarray(cell, dtype=object)).ravel()]


def _utm(value, count: int, mat_path: Path, field: str) -> np.ndarray:
    utm = np.asarray(value, dtype=np.float64)
    if count == 1 and utm.shape == (2,):
        utm = utm[:, None]
    if utm.shape != (2, count):
        raise ValueError(f"{mat_path}: {field} has shape {utm.shape}, expected (2, {count}) "
                         f"(easting/northing per image)")
    return utm.T


PlaceRanges = List[Tuple[int, int]]


def place_ranges(value) -> Optional[PlaceRanges]:
    """`[start, stop]` or a list of them → a list of half-open (start, stop) ranges (None stays)."""
    if value is None:
        return None
    pairs = [value] if len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value) \
        else list(value)
    ranges = []
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair) \
                or not 0 <= pair[0] < pair[1]:
            raise ValueError(f"place range {pair!r} must be [start, stop] with 0 <= start < stop "
                             f"(half-open); give one range or a list of them")
        ranges.append((int(pair[0]), int(pair[1])))
    return ranges


def _describe(ranges: PlaceRanges) -> str:
    return ",".join(f"{start}-{stop - 1}" for start, stop in ranges)


def _in_ranges(index: np.ndarray, ranges: PlaceRanges) -> np.ndarray:
    return np.any([(index >= start) & (index < stop) for start, stop in ranges], axis=0)


def _check_ranges(ranges: Optional[PlaceRanges], total: int, where: str) -> PlaceRanges:
    if ranges is None:
        return [(0, total)]
    for start, stop in ranges:
        if stop > total:
            raise ValueError(f"{where}: places range [{start}, {stop}) is outside 0..{total}")
    return ranges


def restrict(places: PlaceSet, db_place: np.ndarray, query_place: np.ndarray,
             db_ranges: PlaceRanges, query_ranges: PlaceRanges) -> PlaceSet:
    """The database images whose place index lies in `db_ranges` and the queries whose place
    index lies in `query_ranges` (`db_place` / `query_place`: each image's place index)."""
    db_keep = np.flatnonzero(_in_ranges(db_place, db_ranges))
    query_keep = np.flatnonzero(_in_ranges(query_place, query_ranges))
    if not len(db_keep) or not len(query_keep):
        raise ValueError(f"{places.name}: places {_describe(db_ranges)} keep {len(db_keep)} "
                         f"database images and {len(query_keep)} queries; widen the ranges")
    label = _describe(db_ranges) + ("" if query_ranges == db_ranges
                                    else f", queries {_describe(query_ranges)}")
    traversals = places.db_traversals is not None
    return PlaceSet(name=f"{places.name} places {label}",
                    db_images=[places.db_images[i] for i in db_keep],
                    db_positions=places.db_positions[db_keep],
                    query_images=[places.query_images[i] for i in query_keep],
                    query_positions=places.query_positions[query_keep],
                    pos_radius=places.pos_radius, neg_radius=places.neg_radius,
                    eval_radius=places.eval_radius, unit=places.unit,
                    db_traversals=places.db_traversals[db_keep] if traversals else None,
                    query_traversals=places.query_traversals[query_keep] if traversals else None)


def load_aligned_traversals(root: PathLike, db_traversals: Sequence[str],
                            query_traversals: Sequence[str], places=None, pos_radius: float = 2,
                            neg_radius: float = 10, eval_radius: float = 2,
                            query_places=None) -> PlaceSet:
    """Sub-folders of `root` where image i shows place i in every folder (Gardens Point, Nordland).

    Positions are frame indices, so radii are in frames. `places` (a half-open (start, stop) or a
    list of them) keeps only those places, which is how a split by place is made; `query_places`
    takes the queries from other places than the database (a held-out stretch searched in a map
    of the whole route). A query is never its own positive: positives come from other traversals.
    """
    root = Path(root)
    names = list(dict.fromkeys([*db_traversals, *query_traversals]))
    if not db_traversals or not query_traversals:
        raise ValueError(f"{root}: give at least one database and one query traversal")
    listings = {name: list_images(root / name) for name in names}
    counts = {name: len(files) for name, files in listings.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"{root}: aligned traversals must hold the same number of images, "
                         f"got {counts}")
    total = next(iter(counts.values()))
    db_ranges = _check_ranges(place_ranges(places), total, str(root))
    query_ranges = (db_ranges if query_places is None
                    else _check_ranges(place_ranges(query_places), total, str(root)))
    index = np.arange(total)

    def side(traversals):
        images = [listings[t][i] for t in traversals for i in index]
        positions = np.tile(index, len(traversals))
        ids = np.repeat([names.index(t) for t in traversals], len(index))
        return images, positions, ids

    db_images, db_pos, db_ids = side(db_traversals)
    q_images, q_pos, q_ids = side(query_traversals)
    everything = PlaceSet(name=f"{root.name} {'+'.join(query_traversals)}→{'+'.join(db_traversals)}",
                          db_images=db_images, db_positions=db_pos, query_images=q_images,
                          query_positions=q_pos, pos_radius=pos_radius, neg_radius=neg_radius,
                          eval_radius=eval_radius, unit="frames", db_traversals=db_ids,
                          query_traversals=q_ids)
    return restrict(everything, db_pos, q_pos, db_ranges, query_ranges)


def read_position_csv(path: PathLike, image_root: Optional[PathLike] = None):
    """Rows of `path,x,y[,traversal]` (header optional) → (image paths, (N,2) meters, traversal ids)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"position CSV not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    with path.open(newline="") as handle:
        rows = [r for r in csv.reader(handle) if r and any(c.strip() for c in r)]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path}: no rows; expected lines of path,x,y (meters)")
    images, xy, traversal = [], [], []
    for line, row in enumerate(rows, start=1):
        if len(row) not in (3, 4):
            raise ValueError(f"{path}: row {line} has {len(row)} columns, expected path,x,y"
                             f"[,traversal]: {row}")
        try:
            xy.append((float(row[1]), float(row[2])))
        except ValueError as err:
            raise ValueError(f"{path}: row {line}: x and y must be numbers in meters: {row}") from err
        images.append(root / row[0].strip())
        traversal.append(row[3].strip() if len(row) == 4 else "")
    names = sorted(set(traversal))
    ids = np.array([names.index(t) for t in traversal])
    return images, np.array(xy), ids


def load_position_csv(db_csv: PathLike, query_csv: Optional[PathLike] = None,
                      image_root: Optional[PathLike] = None, pos_radius: float = 10,
                      neg_radius: float = 25, eval_radius: float = 25, places=None,
                      query_places=None) -> PlaceSet:
    """A CSV of `path,x,y` (meters) as a `PlaceSet`; without `query_csv` every image is also a query.

    With one CSV, each image is its own traversal unless a `traversal` column says otherwise, so
    a query never counts itself as positive. `places` / `query_places` are ranges of database CSV
    rows (a drive's rows are in driving order, so a range is a stretch of the route); a query
    belongs to the row of its nearest database image.
    """
    db_images, db_xy, db_ids = read_position_csv(db_csv, image_root)
    if query_csv is None:
        q_images, q_xy, q_ids = db_images, db_xy, db_ids
        if len(set(db_ids.tolist())) == 1:
            db_ids = q_ids = np.arange(len(db_images))
    else:
        q_images, q_xy, q_ids = read_position_csv(query_csv, image_root)
        db_ids = np.zeros(len(db_images), dtype=np.int64)
        q_ids = np.ones(len(q_images), dtype=np.int64)
    everything = PlaceSet(name=Path(db_csv).stem, db_images=db_images, db_positions=db_xy,
                          query_images=q_images, query_positions=q_xy, pos_radius=pos_radius,
                          neg_radius=neg_radius, eval_radius=eval_radius, unit="m",
                          db_traversals=db_ids, query_traversals=q_ids)
    if places is None and query_places is None:
        return everything
    where = f"{db_csv} ({len(db_images)} rows)"
    db_ranges = _check_ranges(place_ranges(places), len(db_images), where)
    query_ranges = (db_ranges if query_places is None
                    else _check_ranges(place_ranges(query_places), len(db_images), where))
    query_row = np.arange(len(db_images)) if query_csv is None else cKDTree(db_xy).query(q_xy)[1]
    return restrict(everything, np.arange(len(db_images)), query_row, db_ranges, query_ranges)


def with_synthetic_queries(places: PlaceSet, variants: int, seed: int = 0) -> PlaceSet:
    """`places` plus `variants` synthetic night renderings of every database image as queries.

    The renderings form a traversal of their own at their sources' positions, so the source image
    (and the other traversals' images of that place) are positives: the loss sees a day↔night
    pair for every place, not only for the places that have real night images.
    """
    if variants < 1:
        return places
    db_ids, q_ids = _traversal_ids(places)
    first = int(max(db_ids.max(), q_ids.max())) + 1
    synthetic = [SyntheticImage(Path(path), seed=_render_seed(seed, Path(path), v))
                 for v in range(variants) for path in places.db_images]
    return PlaceSet(name=f"{places.name} + {variants} synthetic night per db image",
                    db_images=places.db_images, db_positions=places.db_positions,
                    query_images=[*places.query_images, *synthetic],
                    query_positions=np.concatenate([places.query_positions,
                                                    np.tile(places.db_positions, (variants, 1))]),
                    pos_radius=places.pos_radius, neg_radius=places.neg_radius,
                    eval_radius=places.eval_radius, unit=places.unit, db_traversals=db_ids,
                    query_traversals=np.concatenate([q_ids, np.full(len(synthetic), first)]))


def _traversal_ids(places: PlaceSet):
    """(db ids, query ids); a set without traversals gets one for its database, one for queries."""
    if places.db_traversals is None:
        return np.zeros(places.num_db, np.int64), np.ones(places.num_queries, np.int64)
    return places.db_traversals, places.query_traversals


def _render_seed(seed: int, image: Path, variant: int) -> int:
    """A rendering's seed from the run's seed and the image's folder and name, so an image is
    rendered alike in every subset of places it belongs to (k folds share renderings) and on
    every machine."""
    key = zlib.crc32(f"{image.parent.name}/{image.name}".encode())
    return int(np.random.SeedSequence([seed, key, variant]).generate_state(1)[0])


def concat_place_sets(sets: Sequence[PlaceSet]) -> PlaceSet:
    """Several place sets trained as one: each set's positions get its index on an extra axis,
    far beyond any radius, and traversal ids are kept apart, so places of different sets are
    negatives of each other and never positives. The sets must share their radii."""
    if len(sets) == 1:
        return sets[0]
    if not sets:
        raise ValueError("no place sets to concatenate")
    radii = {(s.pos_radius, s.neg_radius, s.eval_radius) for s in sets}
    if len(radii) > 1:
        raise ValueError(f"training sets use different radii {sorted(radii)} (pos, neg, eval); "
                         f"set pos_radius, neg_radius and eval_radius alike in every data.train "
                         f"entry")
    dims = max(s.db_positions.shape[1] for s in sets)
    separation = 1e9
    db_pos, q_pos, db_ids, q_ids = [], [], [], []
    next_id = 0
    for number, places in enumerate(sets):
        def placed(positions):
            padded = np.zeros((len(positions), dims + 1))
            padded[:, :positions.shape[1]] = positions
            padded[:, dims] = number * separation
            return padded

        db_pos.append(placed(places.db_positions))
        q_pos.append(placed(places.query_positions))
        db, query = _traversal_ids(places)
        db_ids.append(db + next_id)
        q_ids.append(query + next_id)
        next_id += int(max(db.max(), query.max())) + 1
    first = sets[0]
    return PlaceSet(name=" + ".join(s.name for s in sets),
                    db_images=[i for s in sets for i in s.db_images], db_positions=np.concatenate(db_pos),
                    query_images=[i for s in sets for i in s.query_images],
                    query_positions=np.concatenate(q_pos), pos_radius=first.pos_radius,
                    neg_radius=first.neg_radius, eval_radius=first.eval_radius,
                    unit=first.unit if len({s.unit for s in sets}) == 1 else "mixed",
                    db_traversals=np.concatenate(db_ids), query_traversals=np.concatenate(q_ids))


def open_place_set(spec, seed: int = 0) -> PlaceSet:
    """The `PlaceSet` a `training.config.DatasetSpec` describes (radii default by unit), with
    `spec.synthetic_night` renderings per database image added as queries (see
    `with_synthetic_queries`; `seed` varies them between training runs)."""
    return with_synthetic_queries(_open_source(spec), spec.synthetic_night, seed)


def _open_source(spec) -> PlaceSet:
    def radii(pos, neg, ev):
        values = {"pos_radius": spec.pos_radius, "neg_radius": spec.neg_radius,
                  "eval_radius": spec.eval_radius}
        defaults = {"pos_radius": pos, "neg_radius": neg, "eval_radius": ev}
        return {k: defaults[k] if v is None else v for k, v in values.items()}

    if spec.kind == "aligned":
        if not spec.root:
            raise ValueError("aligned dataset needs root: the folder holding the traversal folders")
        return load_aligned_traversals(spec.root, spec.db_traversals, spec.query_traversals,
                                       spec.places, query_places=spec.query_places,
                                       **radii(2, 10, 2))
    if spec.kind == "mat":
        if not spec.mat_file or not spec.root:
            raise ValueError("mat dataset needs mat_file (dbStruct .mat) and root (image folder)")
        place_set = load_dbstruct(spec.mat_file, spec.root, spec.query_root,
                                  spec.pos_radius, spec.neg_radius)
        if spec.eval_radius is not None:
            place_set.eval_radius = spec.eval_radius
        return place_set
    if spec.kind == "csv":
        if not spec.csv_file:
            raise ValueError("csv dataset needs csv_file (rows of path,x,y in meters)")
        return load_position_csv(spec.csv_file, spec.query_csv_file, spec.root, **radii(10, 25, 25),
                                 places=spec.places, query_places=spec.query_places)
    raise ValueError(f"unknown dataset kind {spec.kind!r}; use aligned, mat or csv")
