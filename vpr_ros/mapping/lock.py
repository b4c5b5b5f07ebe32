"""One writer per map directory: an advisory `fcntl` lock beside the map.

Two processes extending the same map would each save their own keyframes over the other's.
A writer holds `MapWriterLock(map_dir)` while it may save: the lock file is
`<parent>/.<name>.lock` (beside the `.<name>.saving-*` directories of a save, outside the map
so a save's directory swap never touches it) and holds the writer's pid for the error message.
The kernel drops the lock when its process ends, however it ends (a SIGKILLed writer leaves no
stale lock). Readers need no lock: saves are atomic (vpr_ros.mapping.storage).
"""
import fcntl
import os
from pathlib import Path
from typing import Optional


class MapLockedError(RuntimeError):
    """Another process holds the writer lock of a map."""


def lock_path(map_dir: Path) -> Path:
    """The lock file of the map in `map_dir`."""
    map_dir = Path(map_dir)
    return map_dir.parent / f".{map_dir.name}.lock"


class MapWriterLock:
    """Exclusive, non-blocking writer lock of one map directory; also a context manager."""

    def __init__(self, map_dir):
        self.map_dir = Path(map_dir)
        self.path = lock_path(self.map_dir)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise MapLockedError naming the process that holds it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise MapLockedError(
                f"map {self.map_dir} is being written by another "
                f"process (pid {holder}); stop it, or map into another directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; it is reused by the next writer)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "MapWriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
