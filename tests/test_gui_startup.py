"""Start-up as a newcomer gets it: the window first, typing at once, the token when it comes.

The keyring here answers only when the test says so (a locked keyring waiting for its unlock
prompt): the window must open and take typing meanwhile, and the first request must wait for
the token rather than go out without it.
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from safeguard_desktop import secrets
from safeguard_desktop.app import build_workspace, first_frame, frame_menus
from safeguard_desktop.qt import QApplication, QEvent, Qt
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.ui.main_window import MainWindow
from tests.fake_ollama import FakeOllama
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import run_async, save_screenshot
from tests.keyrings import MemoryKeyring

TOKEN = "s3cret-token"
SPAM = "Buy now and save big, click cheap.example to claim your prize"
REPO = Path(__file__).resolve().parents[1]
VERDICTS = ("VIOLATION", "SAFE")


class LockedKeyring(MemoryKeyring):
    """Reading waits until `unlock()` (the user answering the unlock prompt).

    The wait is bounded (a hang bound, not a timing claim): `answered` records whether the
    unlock came, so a read that had to give up fails the test instead of hanging it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reading = threading.Event()
        self.unlocked = threading.Event()
        self.answered: list[bool] = []
        self.readers: list[threading.Thread] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.readers.append(threading.current_thread())
        self.reading.set()
        self.answered.append(self.unlocked.wait(timeout=60))
        return super().get_password(service, username)

    def unlock(self) -> None:
        self.unlocked.set()


@pytest.fixture
def locked_keyring() -> Iterator[LockedKeyring]:
    backend = LockedKeyring()
    before = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        backend.unlock()  # never leave a lookup thread waiting
        keyring.set_keyring(before)


@pytest.fixture
def guarded_ollama() -> Iterator[FakeOllama]:
    """A fake Ollama that answers 401 to any request without the token."""
    with FakeOllama(token_rate=4000, require_token=TOKEN) as fake:
        yield fake


def open_window(qtbot, session: Session) -> MainWindow:
    window = MainWindow(session, monitor_interval_ms=60_000)
    window.show()
    qtbot.waitExposed(window)
    with qtbot.waitActive(window):
        window.activateWindow()
    window.start()
    return window


def close_window(qtbot, window: MainWindow) -> None:
    run_async(qtbot, window.shutdown())
    window._closed = True
    window.close()
    window.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_the_window_takes_typing_while_the_keyring_answers_and_the_review_waits_for_the_token(
    qtbot,
    qloop,
    gui_settings: Settings,
    guarded_ollama: FakeOllama,
    locked_keyring: LockedKeyring,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.delenv("SAFEGUARD_OLLAMA_TOKEN", raising=False)
    locked_keyring.set_password(secrets.SERVICE, guarded_ollama.url, TOKEN)
    session = Session.open(gui_settings, host=guarded_ollama.url, with_history=False, env={})
    window = open_window(qtbot, session)
    try:
        qtbot.waitUntil(locked_keyring.reading.is_set)
        assert locked_keyring.readers[0] is not threading.main_thread()

        editor = window.review.editor.editor
        editor.setFocus()
        qtbot.keyClicks(editor, SPAM)
        assert editor.toPlainText() == SPAM  # typed while the keyring has not answered
        assert not locked_keyring.unlocked.is_set()
        save_screenshot(window, tmp_path, "startup-typing-before-the-token")

        qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        qtbot.waitUntil(lambda: window.review.running)
        assert guarded_ollama.requests == []  # nothing went out without the token

        locked_keyring.unlock()
        qtbot.waitUntil(lambda: not window.review.running, timeout=10_000)
        assert window.review.verdict.badge.text() in VERDICTS  # not FAILED (a 401)
        assert locked_keyring.answered == [True]
        chats = guarded_ollama.requests_to("/api/chat")
        assert len(chats) == 1
        sent = {r.headers.get("authorization") for r in guarded_ollama.requests}
        assert sent == {f"Bearer {TOKEN}"}  # every request, health checks included
    finally:
        close_window(qtbot, window)


def test_a_keyring_without_a_token_still_lets_the_review_run(
    qtbot, qloop, gui_settings: Settings, fake_ollama: FakeOllama, locked_keyring: LockedKeyring
) -> None:
    session = Session.open(gui_settings, host=fake_ollama.url, with_history=False, env={})
    window = open_window(qtbot, session)
    try:
        editor = window.review.editor.editor
        editor.setFocus()
        qtbot.keyClicks(editor, SPAM)
        qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        qtbot.waitUntil(lambda: window.review.running)
        locked_keyring.unlock()
        qtbot.waitUntil(lambda: not window.review.running, timeout=10_000)
        assert window.review.verdict.badge.text() in VERDICTS
        assert {r.headers.get("authorization") for r in fake_ollama.requests} == {None}
    finally:
        close_window(qtbot, window)


def test_the_frame_is_shown_before_the_session_comes(
    qtbot, qloop, gui_settings: Settings, fake_ollama: FakeOllama
) -> None:
    """What app.py shows first: title, menus and an empty status bar, then the workspace."""
    window = MainWindow()
    window.show()
    assert first_frame(window)
    assert window.windowHandle().isExposed()
    assert window.windowTitle() == "Safeguard Desktop"
    assert [a.text() for a in window.menuBar().actions()] == ["&File", "Revie&w", "&View", "&Help"]
    assert not window.attached and window.views.count() == 0

    session = Session.open(gui_settings, host=fake_ollama.url, with_history=False, env={})
    window.attach(session, monitor_interval_ms=60_000)
    window.start()
    try:
        assert window.attached and window.views.tabText(0) == "Review"
        assert window.status_text("server").startswith("○ Checking")
        qtbot.waitUntil(lambda: window.status_text("server").startswith("● Ollama"))
    finally:
        close_window(qtbot, window)


def test_the_workspace_is_built_into_the_shown_frame(
    qtbot, qloop, gui_settings: Settings, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    window = MainWindow()
    frame_menus(window)
    window.show()
    assert first_frame(window)
    menus = [a.text() for a in window.menuBar().actions()]
    before = builtins.__import__
    session = Session.open(gui_settings, host=fake_ollama.url, with_history=False, env={})
    ctx, kept = build_workspace(window, session=session)
    assert builtins.__import__ is before  # PySide6's import is back after the build
    window.start()
    try:
        assert ctx is session and len(kept) == 4
        tabs = [window.views.tabText(i) for i in range(window.views.count())]
        assert tabs == ["Review", "History", "Server", "Queues", "Workbench"]
        # The frame had every menu of the workspace, in its place: the menu bar stays put.
        assert [a.text() for a in window.menuBar().actions()] == menus
        editor = window.review.editor.editor
        qtbot.waitUntil(editor.hasFocus)
        qtbot.keyClicks(editor, SPAM)
        assert editor.toPlainText() == SPAM
        save_screenshot(window, tmp_path, "startup-workspace")
    finally:
        close_window(qtbot, window)


def test_the_workspace_modules_are_imported_without_pyside_reading_their_source(
    tmp_path: Path,
) -> None:
    """PySide6 reads and keeps the source of each module imported after it, except inside
    `plain_imports` (as app.py runs, imported before Qt)."""
    probe = (
        "import linecache, sys\n"
        "from safeguard_desktop.app import plain_imports\n"
        "import PySide6.QtCore\n"
        "with plain_imports():\n"
        "    from safeguard_desktop.core.tokens import MARGIN\n"
        "from safeguard_desktop.core.wellness import re\n"
        "kept = [f.rsplit('/', 1)[-1] for f in linecache.cache if 'safeguard_desktop' in f]\n"
        "print('tokens.py' in kept, 'wellness.py' in kept, __import__.__name__)\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "__feature_import__"]


def test_a_frame_closed_before_its_session_just_closes(qtbot) -> None:
    window = MainWindow()
    window.show()
    qtbot.waitExposed(window)
    assert window.close()
    assert not window.isVisible()
    window.deleteLater()
    QApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def test_the_window_frame_imports_no_session_and_no_client_library(tmp_path: Path) -> None:
    """The frame shows before the services, the ollama library and the keyring load."""
    probe = (
        "import sys\n"
        "from safeguard_desktop.cli import parse_args\n"
        "parse_args([])\n"
        "from safeguard_desktop.ui.main_window import MainWindow\n"
        "heavy = ('safeguard_desktop.services', 'safeguard_desktop.cli.classify_cmd', "
        "'ollama', 'keyring', 'httpx', 'asyncio', 'qasync')\n"
        "print(sorted({m for m in sys.modules if m.startswith(heavy)}))\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_review_client_loads_at_the_first_move_not_at_start(
    qtbot, make_main_window, fake_ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window left waiting holds no client library (15 MiB); typing loads it, once."""
    from safeguard_desktop import app

    window = make_main_window(fake_ollama.url)
    loads: list[str] = []

    async def counted() -> bool:
        loads.append("loaded")
        return False

    monkeypatch.setattr(window.ctx, "warm_up", counted)
    app.warm_up_on_first_move(window, window.ctx)
    qtbot.wait(0)  # a turn of the loop: nothing was asked for yet
    assert loads == []
    qtbot.keyClicks(window.review.editor.editor, "hello")
    qtbot.waitUntil(lambda: loads == ["loaded"])
    qtbot.keyClicks(window.review.editor.editor, " again")  # later moves: nothing more
    window.review.classify()
    qtbot.waitUntil(lambda: not window.review.running)
    assert loads == ["loaded"]


def test_the_system_colour_scheme_wins_once_the_frame_is_up(
    qtbot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first frame is themed from the platform palette; where the system's colour
    scheme says otherwise, the theme follows it right after (and stays when they agree)."""
    from safeguard_desktop.ui import theme

    app = QApplication.instance()
    assert isinstance(app, QApplication)
    try:
        theme.apply_theme(app, dark=False, follow=False)
        light_window = app.palette().color(theme.QPalette.ColorRole.Window).name()
        monkeypatch.setattr(theme, "system_is_dark", lambda: True)
        assert theme.settle_theme(app) is theme.DARK
        assert app.palette().color(theme.QPalette.ColorRole.Window).name() != light_window
        assert theme.settle_theme(app) is theme.DARK  # agrees now: nothing re-applied
        monkeypatch.setattr(theme, "system_is_dark", lambda: False)
        assert theme.settle_theme(app) is theme.LIGHT
        assert app.palette().color(theme.QPalette.ColorRole.Window).name() == light_window
    finally:
        theme.apply_theme(app, dark=False, follow=False)
