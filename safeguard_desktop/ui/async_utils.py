"""Glue between asyncio (qasync) and widgets: task ownership, batched deltas, dialog futures.

Tasks must be referenced until they finish (asyncio keeps only weak references), and a
token stream must not repaint per token: both helpers live here so every view uses them.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from safeguard_desktop.qt import QDialog, QObject, QTimer

log = logging.getLogger("safeguard.ui")
T = TypeVar("T")


class TaskKeeper:
    """Holds the tasks a view starts so they are not garbage-collected mid-flight.

    A task that fails with an unexpected exception is logged, never silently lost.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s failed", task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def wait_all(self, timeout: float = 5.0) -> None:
        """Cancel what still runs and wait (bounded) until it has finished."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)


class DeltaBuffer(QObject):
    """Collects stream deltas and hands them to `sink` in batches on a timer.

    One insert every `interval_ms` instead of one per token keeps layout and painting
    cost independent of the token rate.
    """

    def __init__(
        self, sink: Callable[[str], None], interval_ms: int = 40, parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._sink = sink
        self._parts: list[str] = []
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.flush)

    def push(self, text: str) -> None:
        if not text:
            return
        self._parts.append(text)
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        self._timer.stop()
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._sink(text)

    def discard(self) -> None:
        self._timer.stop()
        self._parts.clear()

    @property
    def pending(self) -> bool:
        return bool(self._parts)


class SingleTask:
    """The one long task a view runs at a time (a review, a re-run): start, cancel, wait."""

    def __init__(self) -> None:
        self._keeper = TaskKeeper()
        self._task: asyncio.Task[Any] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        task = self._keeper.spawn(coro, name=name)
        self._task = task
        return task

    def finished(self) -> None:
        """Called from the task's own `finally`: from here on the view is idle."""
        self._task = None

    def cancel(self) -> bool:
        """Cancel the running task; True when one was running."""
        if not self.running:
            return False
        assert self._task is not None
        self._task.cancel()
        return True

    async def wait(self, timeout: float = 10.0) -> None:
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout)


def dialog_result(dialog: QDialog) -> asyncio.Future[int]:
    """Open `dialog` window-modally with `open()` and return a future of its result code.

    Never `exec()` a dialog inside a coroutine: the nested event loop re-enters qasync.
    """
    future: asyncio.Future[int] = asyncio.get_event_loop().create_future()

    def finished(code: int) -> None:
        if not future.done():
            future.set_result(code)

    dialog.finished.connect(finished)
    dialog.open()
    return future


def install_asyncgen_hooks(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Let `loop` finalize abandoned async generators (e.g. an HTTP stream left mid-way).

    qasync replaces `run_forever` and so never installs asyncio's hooks; without them such
    generators are closed by the garbage collector outside any loop, which fails.
    Returns a function that restores the previous hooks.
    """
    old = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(
        firstiter=loop._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
        finalizer=loop._asyncgen_finalizer_hook,  # type: ignore[attr-defined]
    )
    return lambda: sys.set_asyncgen_hooks(*old)


class MainThreadGC(QObject):
    """Runs Python's cyclic garbage collector on the Qt thread only.

    A reference cycle holding a QObject, collected while a worker thread (asyncio.to_thread,
    a test server) happens to allocate, destroys that Qt object on the wrong thread: Qt
    warns and widgets can crash. Automatic collection is switched off while this runs, and a
    timer collects the generations that are due, as the interpreter would.
    """

    def __init__(self, interval_ms: int = 500, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.collect_due)
        self._was_enabled = gc.isenabled()

    def start(self) -> None:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        gc.collect()
        if self._was_enabled:
            gc.enable()

    def collect_due(self) -> None:
        counts = gc.get_count()
        thresholds = gc.get_threshold()
        for generation in (2, 1, 0):
            if counts[generation] > thresholds[generation] > 0:
                gc.collect(generation)
                return
