"""Fixtures for GUI tests: a qasync loop on pytest-qt's QApplication, a temp data dir,
a fake Ollama, and a main-window factory that shuts windows down cleanly.

Import them in a test module with `from tests.gui_fixtures import *  # noqa: F403`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import paths
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.qt import QApplication, QEvent, QWidget, qasync
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from safeguard_desktop.ui.async_utils import MainThreadGC, install_asyncgen_hooks
from safeguard_desktop.ui.main_window import MainWindow
from safeguard_desktop.ui.theme import apply_theme
from tests.fake_ollama import FakeOllama

__all__ = [
    "MODEL",
    "data_dir",
    "fake_ollama",
    "gui_settings",
    "make_main_window",
    "qloop",
    "run_async",
    "save_screenshot",
]

MODEL = "gpt-oss-safeguard:20b"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def qloop(qapp: QApplication) -> Iterator[asyncio.AbstractEventLoop]:
    """An asyncio loop running on the Qt loop that pytest-qt drives (waitUntil, qWait)."""
    collector = MainThreadGC()
    collector.start()
    loop = qasync.QEventLoop(qapp, already_running=True)
    asyncio.set_event_loop(loop)
    restore_hooks = install_asyncgen_hooks(loop)
    try:
        yield loop
    finally:
        # Windows and views are shut down by now (their fixtures end first): a task still
        # running would touch widgets of a later test, so it fails this one.
        # (Not counted: asyncio's own finalizers of abandoned async generators, such as the
        # body of an HTTP stream closed mid-way, which the loop schedules when they are
        # dropped; they are awaited below like the rest.)
        leftover = [
            t
            for t in asyncio.all_tasks(loop)
            if not t.done() and type(t.get_coro()).__name__ != "async_generator_athrow"
        ]
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        pending.append(asyncio.ensure_future(loop.shutdown_asyncgens()))
        deadline = loop.time() + 3
        while any(not t.done() for t in pending) and loop.time() < deadline:
            qapp.processEvents()
        restore_hooks()
        # Not loop.stop(): it calls QApplication.exit(), which with no exec() running leaves
        # Qt's "quit now" flag set, so every later QEventLoop (qtbot.wait) returns at once.
        loop._QEventLoop__is_running = False  # type: ignore[attr-defined]
        asyncio.events._set_running_loop(None)
        loop.close()
        asyncio.set_event_loop(None)
        collector.stop()  # collects on this (the Qt) thread
    if leftover:
        pytest.fail(
            "tasks still pending at teardown (cancel them with their widget): "
            + ", ".join(_describe(t) for t in leftover)
        )


def _describe(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", None) or repr(coro)
    return f"{task.get_name()} ({name})"


def run_async(qtbot: Any, coro: Coroutine[Any, Any, Any], timeout: int = 10_000) -> Any:
    """Run a coroutine on the qasync loop from a test and return its result."""
    task = asyncio.ensure_future(coro)
    qtbot.waitUntil(task.done, timeout=timeout)
    return task.result()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    paths.set_data_dir(folder)
    try:
        yield folder
    finally:
        paths.set_data_dir(None)


@pytest.fixture
def gui_settings(data_dir: Path) -> Settings:
    settings = Settings()
    settings.set("model", MODEL)
    settings.set("policy_folder", str(paths.user_policies_dir()))
    return settings


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=4000) as fake:
        yield fake


@pytest.fixture
def make_main_window(
    qtbot: Any, qloop: asyncio.AbstractEventLoop, gui_settings: Settings
) -> Iterator[Callable[..., MainWindow]]:
    """`make(url, settings=None, history=None)` -> a shown, started MainWindow."""
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, dark=False, follow=False)
    windows: list[MainWindow] = []

    def make(
        url: str, settings: Settings | None = None, history: History | None = None
    ) -> MainWindow:
        store = HistoryService(history) if history is not None else None
        ctx = Session.create(settings or gui_settings, Endpoint(url=url, timeout=30), store)
        window = MainWindow(ctx, monitor_interval_ms=60_000)
        window.resize(1360, 860)
        window.show()
        qtbot.waitExposed(window)
        with qtbot.waitActive(window):
            window.activateWindow()  # shortcuts need the active window, as for a user
        window.start()
        windows.append(window)
        return window

    yield make
    for window in windows:
        if not window._closed:
            run_async(qtbot, window.shutdown())
            window._closed = True
        window.close()
        window.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def save_screenshot(widget: QWidget, tmp_path: Path, name: str, *, publish: bool = False) -> Path:
    """Save `widget` as tmp_path/<name>.png; with SAVE_SCREENSHOTS=1 and `publish`, also in
    docs/screenshots/ for the README."""
    target = tmp_path / f"{name}.png"
    assert widget.grab().save(str(target)), f"could not save {target}"
    if publish and os.environ.get("SAVE_SCREENSHOTS") == "1":
        docs = REPO / "docs" / "screenshots"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, docs / target.name)
    return target
