"""GUI bootstrap: check the display, show the window, then build the session and the views.

The window frame is shown first, before anything but Qt is imported (`open_frame`; the
`safeguard-desktop` command shows it before it even parses its command line, see
launch.py): the session (whose keyring read runs in a thread), the review workspace and the
other views are built right after its first frame (`build_workspace`). The session
(services/session.py) is built here once and handed to every view.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safeguard_desktop.preflight import check_display

if TYPE_CHECKING:
    import argparse

    from safeguard_desktop.qt import QApplication
    from safeguard_desktop.services.session import Session
    from safeguard_desktop.ui.main_window import MainWindow

log = logging.getLogger("safeguard.app")
# The main-thread collector's period: each pass is small (a 500 ms period let one pass take
# 7-25 ms, a dropped frame while a review streams; bench/bench_ui_stall.py).
GC_INTERVAL_MS = 100
FIRST_FRAME_MS = 500  # at most this long for the window's first frame before building on
# Python's own import statement, as it is before PySide6 replaces it (see `plain_imports`).
PYTHON_IMPORT = builtins.__import__


@dataclass
class Frame:
    """The application and its main window's frame, shown (`open_frame`)."""

    app: QApplication
    window: MainWindow
    used: bool = False

    def discard(self) -> None:
        """Close the frame when no run took it (the command line failed before)."""
        if not self.used:
            self.window.close()


def run_gui(args: argparse.Namespace, *, frame: Frame | None = None) -> int:
    """Open the main window (into `frame` when launch.py showed it); returns the process
    exit code.

    The window talks to the session's model host only (egress.py), which follows the
    Settings; every file it creates is the user's only.
    """
    from safeguard_desktop import egress, paths  # here: not on the way to the first frame

    with egress.guarded(), paths.private_files():
        return _run_gui(args, frame)


def _run_gui(args: argparse.Namespace, frame: Frame | None = None) -> int:
    if frame is None:
        problem = check_display()
        if problem is not None:
            print(f"safeguard-desktop: {problem}", file=sys.stderr)
            return 1
        import safeguard_desktop.qt  # noqa: F401  (PySide6, which replaces `import`: see below)

    # The whole run imports with Python's own `import`: PySide6's would read and keep the
    # source of every module imported from here on, the workspace's and those loaded later
    # (the keyring's, the HTTP stack's on the first request...).
    with plain_imports():
        return _open_window(args, frame or _show_frame())


def open_frame() -> Frame | None:
    """The window's frame, shown and on screen (its first frame), before anything else of
    the app is imported; None when no window can be shown here (`run_gui` says why)."""
    if check_display() is not None:
        return None
    import safeguard_desktop.qt  # noqa: F401  (PySide6, which replaces `import`)

    with plain_imports():
        return _show_frame()


def _show_frame() -> Frame:
    from safeguard_desktop.qt import QApplication
    from safeguard_desktop.ui.main_window import MainWindow
    from safeguard_desktop.ui.theme import app_icon, apply_theme, palette_is_dark

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Safeguard Desktop")
    app.setOrganizationName("safeguard-desktop")
    app.setDesktopFileName("safeguard-desktop")
    app.setWindowIcon(app_icon())
    app.setQuitOnLastWindowClosed(False)  # the loop ends when the window finished shutting down
    apply_theme(app, dark=palette_is_dark())  # the system's scheme once the frame is up

    window = MainWindow()
    frame_menus(window)
    window.show()
    first_frame(window)
    return Frame(app, window)


# The menus `build_workspace`'s views add, in their order (tests/test_gui_startup.py checks
# it): the frame has them from its first paint, so the menu bar does not shift when they fill.
WORKSPACE_MENUS = ("Histor&y", "&Server", "&Queue", "Work&bench")


def frame_menus(window: MainWindow) -> None:
    """The workspace's menus in the frame, still empty (disabled until the views come)."""
    for title in WORKSPACE_MENUS:
        window.menu(title).setEnabled(False)


def _open_window(args: argparse.Namespace, frame: Frame) -> int:
    from safeguard_desktop.ui.theme import settle_theme

    frame.used = True
    app, window = frame.app, frame.window
    if not window.isVisible():
        return 0  # closed before it was built
    settle_theme(app)

    import asyncio

    from safeguard_desktop.qt import qasync
    from safeguard_desktop.ui.async_utils import MainThreadGC, install_asyncgen_hooks

    ctx, kept = build_workspace(window, host=getattr(args, "host", None))
    # What start-up made lives as long as the window: the collector need not walk it again.
    gc.freeze()
    collector = MainThreadGC(interval_ms=GC_INTERVAL_MS, parent=app)
    collector.start()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        install_asyncgen_hooks(loop)  # asyncio.run's shutdown_asyncgens then sees them
        done = loop.create_future()

        def finished() -> None:
            if not done.done():
                done.set_result(None)

        window.closed.connect(finished)
        _route_sigint(window)
        window.start()
        warm_up_on_first_move(window, ctx)
        await done

    try:
        qasync.run(main())
    except KeyboardInterrupt:
        return 130
    finally:
        kept.clear()
        if ctx.history is not None:
            ctx.history.close()
    return 0


def warm_up_on_first_move(window: MainWindow, ctx: Session) -> None:
    """`warm_up` at the moderator's first move towards a review (`MainWindow.work_began`:
    content typed, pasted or loaded, another view opened), not at start: a window opened and
    left waiting does not hold the client library (15 MiB, pydantic's), and the first
    Classify, seconds later, finds it loaded. Needs the running loop."""
    from safeguard_desktop.ui.async_utils import TaskKeeper

    tasks = TaskKeeper()  # kept by the connection below, as long as the window
    window.work_began.connect(lambda: tasks.spawn(warm_up(ctx), name="warm-up"))


async def warm_up(ctx: Session) -> None:
    """What the first review needs, loaded in a thread while the moderator prepares it
    (services' `Session.warm_up`), then frozen with the rest of start-up: the collector
    never walks it while an answer streams. A failure here only means the first review
    loads it itself."""
    try:
        loaded = await ctx.warm_up()
    except Exception:  # an import that fails here fails again, reported, at the first review
        log.warning("loading the review client ahead of time failed", exc_info=True)
        return
    if loaded:
        gc.freeze()


def build_workspace(
    window: MainWindow, *, host: str | None = None, session: Session | None = None
) -> tuple[Session, list[Any]]:
    """The session (`Session.open` unless given) and every view, into the shown frame.

    Returns the session and the integrations (kept alive with the window). The window is
    started by the caller, on the running loop.
    """
    with plain_imports():
        from safeguard_desktop import egress
        from safeguard_desktop.services.session import Session
        from safeguard_desktop.ui.history_integration import install as install_history
        from safeguard_desktop.ui.queue_integration import install as install_queues
        from safeguard_desktop.ui.server_integration import install as install_server
        from safeguard_desktop.ui.workbench_integration import install as install_workbench

        ctx = session or Session.open(host=host)
        egress.follow(lambda: ctx.endpoint.url)  # a host chosen in Settings is followed at once
        ctx.client  # noqa: B018 (made now, with its HTTP library, for the first health check)
        window.attach(ctx)
        kept: list[Any] = [
            install_history(window, ctx),
            install_server(window, ctx),
            install_queues(window, ctx),
            install_workbench(window, ctx),
        ]
        for title in WORKSPACE_MENUS:
            window.menu(title).setEnabled(True)
    return ctx, kept


@contextlib.contextmanager
def plain_imports() -> Iterator[None]:
    """Import with Python's own `import` meanwhile, not PySide6's.

    PySide6 replaces the import statement to find modules that opt into its `__feature__`
    switches (this app has none): it reads the source of every module imported after it and
    linecache keeps that text for good. For the ~400 modules of the workspace that is 10-15
    MiB of resident memory and tens of ms. Nothing changes when PySide6 had replaced it
    already when this module was imported (PYTHON_IMPORT is then its import too).
    """
    hooked = builtins.__import__
    swap = getattr(hooked, "__name__", "") == "__feature_import__"
    if swap:
        builtins.__import__ = PYTHON_IMPORT
    try:
        yield
    finally:
        if swap:
            builtins.__import__ = hooked


def first_frame(window: MainWindow, timeout_ms: int = FIRST_FRAME_MS) -> bool:
    """Run Qt's loop until the shown window is on screen (its first expose), at most
    `timeout_ms`; False when the window was closed meanwhile."""
    from safeguard_desktop.qt import QEvent, QObject, QtCore

    handle = window.windowHandle()
    if handle is not None and not handle.isExposed():
        loop = QtCore.QEventLoop()

        class Exposed(QObject):
            def eventFilter(self, watched: QObject, event: QEvent) -> bool:
                if event.type() == QEvent.Type.Expose and handle.isExposed():
                    loop.quit()
                return False

        watch = Exposed()
        bound = QtCore.QTimer(watch)
        bound.setSingleShot(True)
        bound.timeout.connect(loop.quit)
        handle.installEventFilter(watch)
        bound.start(timeout_ms)
        loop.exec()
        bound.stop()
        handle.removeEventFilter(watch)
    return window.isVisible()


def _route_sigint(window: object) -> None:
    """Ctrl+C in the terminal quits like Ctrl+Q (Qt's loop would otherwise swallow it)."""
    from safeguard_desktop.qt import QTimer

    signal.signal(signal.SIGINT, lambda *_: window.request_quit())  # type: ignore[attr-defined]
    timer = QTimer(window)  # type: ignore[arg-type]
    timer.start(250)  # wake the interpreter so the Python signal handler runs
    timer.timeout.connect(lambda: None)
