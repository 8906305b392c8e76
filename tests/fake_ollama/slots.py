"""Ollama's scheduler in miniature: N parallel slots, a bounded FIFO queue, 503 past it."""

from __future__ import annotations

import threading
from collections import deque

MAX_QUEUE_ERROR = "server busy, please try again.  maximum pending requests exceeded"


class QueueFull(Exception):
    """More requests are waiting than OLLAMA_MAX_QUEUE allows."""


class Stopped(Exception):
    """The server stopped while the request was waiting for a slot."""


class Slots:
    """At most `parallel` generations at once; later ones wait in arrival order."""

    def __init__(self, parallel: int, max_queue: int) -> None:
        self._cond = threading.Condition()
        self._parallel = max(1, parallel)
        self._max_queue = max(0, max_queue)
        self._active = 0
        self._waiting: deque[object] = deque()
        self._stopped = False

    @property
    def parallel(self) -> int:
        return self._parallel

    @parallel.setter
    def parallel(self, value: int) -> None:
        with self._cond:
            self._parallel = max(1, value)
            self._cond.notify_all()

    @property
    def max_queue(self) -> int:
        return self._max_queue

    @max_queue.setter
    def max_queue(self, value: int) -> None:
        with self._cond:
            self._max_queue = max(0, value)

    @property
    def active(self) -> int:
        return self._active

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def acquire(self) -> None:
        """Take a slot, waiting in line if needed; raise QueueFull or Stopped."""
        with self._cond:
            if self._stopped:
                raise Stopped
            if self._active < self._parallel and not self._waiting:
                self._active += 1
                return
            if len(self._waiting) >= self._max_queue:
                raise QueueFull
            ticket = object()
            self._waiting.append(ticket)
            try:
                while not (
                    self._stopped or (self._waiting[0] is ticket and self._active < self._parallel)
                ):
                    self._cond.wait()
                if self._stopped:
                    raise Stopped
                self._active += 1
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._active = max(0, self._active - 1)
            self._cond.notify_all()

    def stop(self) -> None:
        """Wake every waiter with Stopped (server shutdown)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
