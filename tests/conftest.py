"""Shared test set-up: Qt offscreen, no real keychain, no real network."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
# Never touch a real keychain in tests.
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
# Never pick up a developer's Ollama host or API key.
os.environ.pop("OLLAMA_HOST", None)
os.environ.pop("OLLAMA_API_KEY", None)


# Qt objects must be destroyed on the GUI thread. Python's cyclic collector runs in whichever
# thread happens to allocate (a fake-server thread, asyncio.to_thread, a child watcher), and a
# cycle holding a QObject collected there crashes Qt. So the suite collects on the main thread
# only, between tests (the app does the same with ui.async_utils.MainThreadGC).
import functools
import gc

import pytest

# A wait in a test is a bound on a hang, never a timing claim: on a busy machine a condition
# that holds in 50 ms alone can take seconds. Every qtbot wait (pytest-qt's default is 5 s)
# is given at least HANG_MS; a condition that holds returns at once, as before.
HANG_MS = 60_000


def _patient(wait):
    @functools.wraps(wait)
    def patient(*args, timeout=HANG_MS, **kwargs):
        if timeout is not None and timeout > 0:
            timeout = max(timeout, HANG_MS)
        return wait(*args, timeout=timeout, **kwargs)

    return patient


def pytest_configure(config):
    from pytestqt.qtbot import QtBot

    for name in (
        "waitUntil",
        "waitSignal",
        "waitSignals",
        "waitExposed",
        "waitActive",
        "waitCallback",
    ):
        setattr(QtBot, name, _patient(getattr(QtBot, name)))


@pytest.fixture(autouse=True, scope="session")
def _collect_on_main_thread_only():
    was_enabled = gc.isenabled()
    gc.disable()
    yield
    gc.collect()
    if was_enabled:
        gc.enable()


@pytest.fixture(autouse=True)
def _collect_after_each_test():
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _no_single_shot_outlives_its_test():
    """Fail a test that leaves a QTimer.singleShot pending once its widgets are deleted.

    Set up before, so torn down after, every other fixture of the test (autouse fixtures
    without dependencies come first): windows are closed and deleteLater'd by then.
    """
    yield
    import sys

    qt = sys.modules.get("safeguard_desktop.qt")
    if qt is None:
        return
    app = qt.QApplication.instance()
    if app is not None:
        qt.QApplication.sendPostedEvents(None, qt.QEvent.Type.DeferredDelete)
    pending = qt.pending_single_shots()
    if pending:
        pytest.fail(
            "QTimer.singleShot still pending after the test (its context widget is alive): "
            + ", ".join(pending)
        )


@pytest.fixture(autouse=True)
def _own_token_record(tmp_path_factory, monkeypatch):
    """Which hosts have a keyring token (secrets.py's keyring-hosts.json) is each test's own:
    a host one test recorded as having none must not hide the token another test stores."""
    from safeguard_desktop import secrets

    folder = tmp_path_factory.mktemp("token-record")
    monkeypatch.setattr(secrets, "_index_file", lambda: folder / secrets.INDEX_NAME)
