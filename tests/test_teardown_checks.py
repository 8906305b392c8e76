"""The suite's own guards: a test that leaves a task or a single-shot timer behind fails.

A timer or task that outlives its test fires inside a later one ("Internal C++ object
already deleted"), so the failure lands on an innocent test on a busy machine only. These
checks run the leaking tests in a child pytest with this project's conftest and fixtures.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.qt import QTimer, QWidget, pending_single_shots

REPO = Path(__file__).resolve().parents[1]

LEAKY_TESTS = """
import asyncio

from safeguard_desktop.qt import QTimer, QWidget
from tests.gui_fixtures import *  # noqa: F403

KEEP = []


def test_leaves_a_task_running(qloop):
    asyncio.ensure_future(asyncio.sleep(3600))


def test_single_shot_dies_with_its_widget(qtbot):
    widget = QWidget()
    qtbot.addWidget(widget)
    QTimer.singleShot(600_000, widget, lambda: None)


def test_finished_task_is_fine(qloop, qtbot):
    task = asyncio.ensure_future(asyncio.sleep(0))
    qtbot.waitUntil(task.done)


# Last: its widget stays alive, so the timer stays pending for every later test too.
def test_leaves_a_single_shot_on_a_live_widget(qapp):
    widget = QWidget()
    KEEP.append(widget)
    QTimer.singleShot(600_000, widget, lambda: None)
"""


def test_single_shot_needs_a_context(qapp: Any) -> None:
    with pytest.raises(TypeError, match="context"):
        QTimer.singleShot(0, lambda: None)  # type: ignore[call-arg]


def test_single_shot_is_listed_until_its_context_is_deleted(qtbot: Any) -> None:
    widget = QWidget()
    QTimer.singleShot(600_000, widget, lambda: None)
    (pending,) = pending_single_shots()
    assert pending.startswith("QWidget in ")
    widget.deleteLater()
    qtbot.waitUntil(lambda: not pending_single_shots())


def test_single_shot_fires_once_on_its_context(qtbot: Any) -> None:
    widget = QWidget()
    qtbot.addWidget(widget)
    fired: list[int] = []
    QTimer.singleShot(0, widget, lambda: fired.append(1))
    qtbot.waitUntil(lambda: fired == [1])
    qtbot.waitUntil(lambda: not pending_single_shots())
    assert fired == [1]


def test_leaks_fail_the_test_that_made_them(tmp_path: Path) -> None:
    folder = tmp_path / "suite"
    (folder / "tests").mkdir(parents=True)
    shutil.copy(REPO / "tests" / "conftest.py", folder / "tests" / "conftest.py")
    (folder / "tests" / "__init__.py").write_text("", encoding="utf-8")
    (folder / "tests" / "test_leaky.py").write_text(LEAKY_TESTS, encoding="utf-8")
    # gui_fixtures and the fake server are imported from the real tests package.
    (folder / "tests" / "gui_fixtures.py").symlink_to(REPO / "tests" / "gui_fixtures.py")
    (folder / "tests" / "fake_ollama").symlink_to(REPO / "tests" / "fake_ollama")
    (folder / "pyproject.toml").write_text(
        (REPO / "pyproject.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "ERROR tests/test_leaky.py::test_leaves_a_task_running" in out
    assert "tasks still pending at teardown" in out and "sleep" in out
    assert "ERROR tests/test_leaky.py::test_leaves_a_single_shot_on_a_live_widget" in out
    assert "QTimer.singleShot still pending after the test" in out
    assert "4 passed, 2 errors" in out
