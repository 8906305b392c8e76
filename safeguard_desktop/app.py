"""GUI bootstrap: check the display, create QApplication + qasync loop, wire services to the UI.

The session (services/session.py) is built here once and handed to every view.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from safeguard_desktop import egress, paths
from safeguard_desktop.preflight import check_display
from safeguard_desktop.services.session import Session

log = logging.getLogger("safeguard.app")


def run_gui(args: argparse.Namespace) -> int:
    """Open the main window; returns the process exit code.

    The window talks to the session's model host only (egress.py), which follows the
    Settings; every file it creates is the user's only.
    """
    with egress.guarded(), paths.private_files():
        return _run_gui(args)


def _run_gui(args: argparse.Namespace) -> int:
    problem = check_display()
    if problem is not None:
        print(f"safeguard-desktop: {problem}", file=sys.stderr)
        return 1
    from safeguard_desktop.qt import QApplication, qasync
    from safeguard_desktop.ui.async_utils import MainThreadGC, install_asyncgen_hooks
    from safeguard_desktop.ui.history_integration import install as install_history
    from safeguard_desktop.ui.main_window import MainWindow
    from safeguard_desktop.ui.queue_integration import install as install_queues
    from safeguard_desktop.ui.server_integration import install as install_server
    from safeguard_desktop.ui.theme import app_icon, apply_theme
    from safeguard_desktop.ui.workbench_integration import install as install_workbench

    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Safeguard Desktop")
    app.setOrganizationName("safeguard-desktop")
    app.setDesktopFileName("safeguard-desktop")
    app.setWindowIcon(app_icon())
    app.setQuitOnLastWindowClosed(False)  # the loop ends when the window finished shutting down
    apply_theme(app)

    ctx = Session.open(host=getattr(args, "host", None))
    egress.follow(lambda: ctx.endpoint.url)  # a host chosen in Settings is followed at once
    window = MainWindow(ctx)
    install_history(window, ctx)
    server = install_server(window, ctx)  # noqa: F841 (kept alive with the window)
    install_queues(window, ctx)
    install_workbench(window, ctx)
    collector = MainThreadGC(parent=app)
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
        window.show()
        window.start()
        await done

    try:
        qasync.run(main())
    except KeyboardInterrupt:
        return 130
    finally:
        if ctx.history is not None:
            ctx.history.close()
    return 0


def _route_sigint(window: object) -> None:
    """Ctrl+C in the terminal quits like Ctrl+Q (Qt's loop would otherwise swallow it)."""
    from safeguard_desktop.qt import QTimer

    signal.signal(signal.SIGINT, lambda *_: window.request_quit())  # type: ignore[attr-defined]
    timer = QTimer(window)  # type: ignore[arg-type]
    timer.start(250)  # wake the interpreter so the Python signal handler runs
    timer.timeout.connect(lambda: None)
