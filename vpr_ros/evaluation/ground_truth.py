"""Which database images count as correct for each query."""
import csv
import re
from pathlib import Path
from typing import List, Optional, Sequence, Set


def positives_by_tolerance(n_queries: int, n_db: int, tolerance: int) -> List[Set[int]]:
    """Aligned traversals: query i matches database images i−tol … i+tol (same index = same place)."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be ≥ 0 frames, got {tolerance}")
    return [set(range(max(0, i - tolerance), min(n_db, i + tolerance + 1)))
            for i in range(n_queries)]


def frame_number(name) -> Optional[int]:
    """The frame number in a file name such as `Image042.jpg` (its last digits), or None."""
    digits = re.findall(r"\d+", Path(str(name)).name)
    return int(digits[-1]) if digits else None


def positives_by_frame_number(db_names: Sequence, query_names: Sequence,
                              tolerance: int) -> Optional[List[Set[int]]]:
    """Aligned traversals named by frame: query frame f matches db frames f−tol … f+tol.

    A folder that keeps every 2nd frame then still counts ±tol original frames, where positions
    would count ±2·tol. None when a name carries no number or two names in a folder share one
    (use positions, or a ground-truth CSV, then).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be ≥ 0 frames, got {tolerance}")
    db_frames = [frame_number(n) for n in db_names]
    query_frames = [frame_number(n) for n in query_names]
    for frames in (db_frames, query_frames):
        if None in frames or len(set(frames)) != len(frames):
            return None
    return [{j for j, d in enumerate(db_frames) if abs(d - q) <= tolerance} for q in query_frames]


def positives_from_csv(path, db_names: Sequence[str], query_names: Sequence[str]) -> List[Set[int]]:
    """Read positives from a CSV with columns `query` and `positives`.

    `query` is a query file name; `positives` lists database file names separated by ';'.
    The Gardens Point layout (`index,<traversal>…,positives_pm2`, positives as row indices) is
    understood too when the traversal columns are named after the db and query folders.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth CSV not found: {path}")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"ground-truth CSV {path} has no rows")
    columns = set(rows[0])
    db_index = {Path(n).name: i for i, n in enumerate(db_names)}
    query_index = {Path(n).name: i for i, n in enumerate(query_names)}
    positives: List[Set[int]] = [set() for _ in query_names]
    if {"query", "positives"} <= columns:
        for row in rows:
            q = query_index.get(Path(row["query"]).name)
            if q is not None:
                positives[q] = {db_index[Path(n).name] for n in row["positives"].split(";")
                                if Path(n).name in db_index}
        return positives
    pos_col = next((c for c in rows[0] if c.startswith("positives")), None)
    traversal_cols = [c for c in rows[0] if c not in ("index", pos_col)]
    db_col = _column_naming(rows, traversal_cols, db_names)
    query_col = _column_naming(rows, traversal_cols, query_names)
    if pos_col is None or db_col is None or query_col is None:
        raise ValueError(f"cannot read ground truth {path}: expected columns 'query,positives' "
                         f"(file names, ';'-separated) or traversal columns naming the db and "
                         f"query files plus a 'positives*' column of row indices; got {sorted(columns)}")
    for row in rows:
        q = query_index.get(Path(row[query_col]).name)
        if q is not None:
            db_files = (Path(rows[int(i)][db_col]).name for i in row[pos_col].split(";") if i)
            positives[q] = {db_index[n] for n in db_files if n in db_index}
    return positives


def _column_naming(rows, columns, names):
    """The column whose values are paths inside the same folder as `names`."""
    folder = Path(names[0]).parent.name if names else None
    for column in columns:
        if Path(rows[0][column]).parent.name == folder:
            return column
    return None
