"""A one-slot, latest-only hand-over between a ROS subscription callback and a worker thread.

The camera publishes faster than the engine can embed on a small CPU. Queuing frames would add
latency without bound; a relocalization from 2 s ago is worth less than one from now. So the
callback only swaps the newest message into one slot (counting the unprocessed one it replaces
as dropped) and the worker always takes the freshest frame.
"""
import threading
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class LatestOnlyBuffer(Generic[T]):
    """Thread-safe single slot: `put` never blocks, `take` waits for the newest item."""

    def __init__(self):
        self._condition = threading.Condition()
        self._item: Optional[T] = None
        self._has_item = False
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store `item`, replacing any unprocessed one; True when an older item was dropped."""
        with self._condition:
            if self._closed:
                return False
            replaced = self._has_item
            self._item, self._has_item = item, True
            self.received += 1
            if replaced:
                self.dropped += 1
            self._condition.notify()
            return replaced

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """The newest item, emptying the slot; None on timeout or once the buffer is closed."""
        with self._condition:
            self._condition.wait_for(lambda: self._has_item or self._closed, timeout)
            if not self._has_item or self._closed:
                return None
            item, self._item, self._has_item = self._item, None, False
            return item

    def close(self) -> None:
        """Wake every waiting `take` (they return None) and refuse further items."""
        with self._condition:
            self._closed = True
            self._item, self._has_item = None, False
            self._condition.notify_all()