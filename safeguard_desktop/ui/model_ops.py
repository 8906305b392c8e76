"""Long model operations (pull, imports, export, delete, warm-up, unload) run one at a time.

The Server panel and the first-run assistant share one `ModelOps`, so what one starts the
other shows. Each operation is a task on the qasync loop; Cancel cancels that task. Errors
arrive as an `Outcome` with the engine's sentence, never as a traceback.

Signals:
    started(str, str): the operation's kind ("pull", …) and label ("Pulling gpt-oss-…").
    progress(Progress): progress of the running operation.
    finished(Outcome): it ended (done, failed or cancelled).
    busy_changed(bool): an operation started or ended.
    models_changed(): installed or loaded models may differ now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from safeguard_desktop.qt import QObject, Signal
from safeguard_desktop.services.models_service import (
    RESTART_HINT,
    EngineError,
    ModelsService,
    Progress,
)
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper

log = logging.getLogger("safeguard.ui.models")
Work = Callable[[ModelsService], Awaitable[str]]


@dataclass(frozen=True)
class Outcome:
    kind: str  # "pull", "import_gguf", "import_bundle", "export", "delete", "warm", "unload"
    label: str
    ok: bool
    message: str  # one sentence for the user
    cancelled: bool = False

    @property
    def level(self) -> str:
        return "info" if self.ok else ("warning" if self.cancelled else "error")


CANCELLED = {
    "pull": "Pull cancelled. Pull again to resume where it stopped.",
    "export": "Export cancelled; no bundle was written.",
}
DEFAULT_CANCELLED = "Cancelled; nothing was changed."
LONG_KINDS = frozenset({"pull", "import_gguf", "import_bundle", "export"})  # with progress


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


class ModelOps(QObject):
    started = Signal(str, str)
    progress = Signal(object)
    finished = Signal(object)
    busy_changed = Signal(bool)
    models_changed = Signal()

    def __init__(self, ctx: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self._tasks = TaskKeeper()
        self._current: asyncio.Task[None] | None = None
        self.last: Outcome | None = None
        self.closed = False

    @property
    def busy(self) -> bool:
        return self._current is not None and not self._current.done()

    def cancel(self) -> None:
        if self._current is not None:
            self._current.cancel()

    def close(self) -> None:
        """At quit: cancel what runs and refuse new operations."""
        self.closed = True
        self.cancel()

    async def wait_idle(self) -> None:
        await self._tasks.wait_all(timeout=5)

    # -- operations ------------------------------------------------------------------------------
    def pull(self, name: str) -> asyncio.Task[None] | None:
        async def work(service: ModelsService) -> str:
            result = await service.pull(name, self._relay)
            resumed = (
                f" (resumed at {result.resumed_from:.0f}%)"
                if result.resumed_from is not None and result.resumed_from < 100
                else ""
            )
            return f"Pulled {name} ({_size(result.total)}){resumed}."

        return self._start("pull", f"Pulling {name}", work)

    def import_gguf(self, path: Path, name: str) -> asyncio.Task[None] | None:
        async def work(service: ModelsService) -> str:
            result = await service.import_gguf(path, name, self._relay)
            return f"Imported {result.name} from {path.name} ({_size(result.size)})."

        return self._start("import_gguf", f"Importing {path.name}", work)

    def import_bundle(self, path: Path) -> asyncio.Task[None] | None:
        async def work(service: ModelsService) -> str:
            result = await service.import_bundle(path, on_progress=self._relay)
            return f"Imported {result.name} from the bundle ({_size(result.total)}). {RESTART_HINT}"

        return self._start("import_bundle", f"Importing {path.name}", work)

    def export_bundle(self, name: str, dest: Path) -> asyncio.Task[None] | None:
        async def work(service: ModelsService) -> str:
            result = await service.export_bundle(name, dest, on_progress=self._relay)
            return (
                f"Wrote {result.path} ({_size(result.total)}). Copy it to the offline machine "
                "and use Import bundle there."
            )

        return self._start("export", f"Exporting {name}", work)

    def delete(self, name: str) -> asyncio.Task[None] | None:
        async def work(service: ModelsService) -> str:
            await service.delete(name)
            return f"Deleted {name}."

        return self._start("delete", f"Deleting {name}", work)

    def warm(self, name: str) -> asyncio.Task[None] | None:
        async def work(service: ModelsService) -> str:
            await service.warm(name)
            return f"{name} is loaded and ready."

        return self._start("warm", f"Loading {name}", work)

    def unload(self, name: str) -> asyncio.Task[None] | None:
        async def work(service: ModelsService) -> str:
            await service.unload(name)
            return f"{name} was unloaded; its memory is free."

        return self._start("unload", f"Unloading {name}", work)

    # -- machinery -------------------------------------------------------------------------------
    def _relay(self, event: Progress) -> None:
        self.progress.emit(event)

    def _start(self, kind: str, label: str, work: Work) -> asyncio.Task[None] | None:
        """Start `work` unless another operation runs (then None: the buttons are disabled)."""
        if self.busy or self.closed:
            return None
        task = self._tasks.spawn(self._run(kind, label, work), name=f"model-{kind}")
        self._current = task
        self.busy_changed.emit(True)
        self.started.emit(kind, label)
        return task

    async def _run(self, kind: str, label: str, work: Work) -> None:
        try:
            async with self.ctx.models() as service:
                message = await work(service)
        except asyncio.CancelledError:
            self._end(Outcome(kind, label, False, CANCELLED.get(kind, DEFAULT_CANCELLED), True))
            raise
        except EngineError as exc:
            self._end(Outcome(kind, label, False, str(exc)))
        except OSError as exc:  # a file chosen in a dialog vanished or is unreadable
            where = f"{exc.filename}: " if exc.filename else ""
            self._end(Outcome(kind, label, False, f"{where}{exc.strerror or exc}."))
        else:
            self._end(Outcome(kind, label, True, message))

    def _end(self, outcome: Outcome) -> None:
        self.last = outcome
        self._current = None
        log.info("%s: %s", outcome.label, outcome.message)
        self.busy_changed.emit(False)
        self.finished.emit(outcome)
        if not self.closed:
            self.models_changed.emit()
