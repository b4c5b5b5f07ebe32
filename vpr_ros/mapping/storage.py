"""Crash-safe replacement of a map directory: write aside, fsync, then swap in with renames.

Layout during a save of `maps/day`:
- `maps/.day.saving-XXXX/`: the new map being written (deleted if the save fails).
- `maps/.day.previous-XXXX/`: the old map, for the instant between the two renames.
A crash at any point leaves either `maps/day` complete, or `maps/day` absent and the previous map
complete in `.day.previous-*`; `resolve_map_dir` reads it from there and the next save restores it.
One writer per map directory at a time.
"""
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, List

LOG = logging.getLogger(__name__)


def _siblings(target: Path, kind: str) -> List[Path]:
    pattern = f".{target.name}.{kind}-*"
    return sorted(target.parent.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_map_dir(target: Path) -> Path:
    """`target`, or the previous map left aside by a save that crashed between its two renames."""
    target = Path(target)
    if target.exists():
        return target
    previous = _siblings(target, "previous") if target.parent.is_dir() else []
    if previous:
        LOG.warning("map %s is missing after an interrupted save; reading the previous map %s",
                    target, previous[0])
        return previous[0]
    raise FileNotFoundError(f"no map directory at {target}; build one with `vpr-ros build-map`")


def recover_interrupted_save(target: Path) -> None:
    """Put back a previous map that a crash left aside and delete abandoned save directories."""
    previous = _siblings(target, "previous")
    if previous and not target.exists():
        LOG.warning("restoring map %s from interrupted save %s", target, previous[0])
        os.replace(previous[0], target)
        previous = previous[1:]
    for leftover in previous + _siblings(target, "saving"):
        shutil.rmtree(leftover, ignore_errors=True)


def replace_directory(target: Path, write_files: Callable[[Path], None]) -> None:
    """Have `write_files(staging_dir)` fill a new directory, then atomically make it `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        write_files(staging)
        for path in staging.iterdir():
            _fsync_path(path)
        _fsync_path(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
        os.replace(target, backup)
    os.replace(staging, target)
    _fsync_path(target.parent)
    if backup is not None:
        shutil.rmtree(backup)
