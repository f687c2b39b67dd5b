"""Hand-offs between threads: the newest frame from a subscription callback to a worker thread
(both nodes), and a begun frame from the relocalizer's network thread to its RANSAC thread."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox: :meth:`put` replaces what is waiting, :meth:`take` blocks for it.

    The subscriber never waits and never queues: while inference runs, newer frames overwrite
    older ones and only the newest is processed next. ``dropped`` counts the overwritten ones.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify()

    def take(self, timeout: float | None = None) -> T | None:
        """The waiting item (removing it), or ``None`` after ``timeout`` seconds or on close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Handoff(Generic[T]):
    """A one-item hand-off between two pipeline stages: :meth:`put` waits while the item before
    is still untaken, :meth:`take` waits for an item.

    Unlike :class:`LatestSlot` nothing is ever replaced: every item put is taken, in order. The
    producer waiting here is what keeps the pipeline on the newest frame, since meanwhile the
    images before it go on replacing each other in the producer's own :class:`LatestSlot`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Hand ``item`` over once the previous one was taken; False (item dropped) on close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is None or self._closed)
            if self._closed:
                return False
            self._item = item
            self._cond.notify_all()
            return True

    def take(self, timeout: float | None = None) -> T | None:
        """The waiting item (removing it), or ``None`` after ``timeout`` seconds or on close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
