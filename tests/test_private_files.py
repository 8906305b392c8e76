"""Files that hold content under review are the user's only: logs, notes, backups, the history
(0600) and the folders they live in (0700), whatever umask the user's shell has.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.ui.export_dialog import ExportDialog
from tests.fake_ollama import FakeOllama
from tests.gui_fixtures import *  # noqa: F403

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=20000) as server:
        yield server


@pytest.fixture
def open_umask() -> Iterator[int]:
    """A shell whose umask lets everyone read new files (022), as many do."""
    old = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(old)


def cli(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> str:
    code = main(["--data-dir", str(data), *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def review(capsys: pytest.CaptureFixture[str], data: Path, fake: FakeOllama) -> int:
    out = cli(
        capsys,
        data,
        *("classify", "--policy", "harassment", "--text", "you are worthless"),
        *("--host", fake.url, "--json"),
    )
    review_id = json.loads(out)["review_id"]
    assert isinstance(review_id, int)
    return review_id


def test_a_review_its_note_and_its_backup_are_private(
    fake: FakeOllama,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    open_umask: int,
) -> None:
    data = tmp_path / "data"
    note, backup = tmp_path / "note.md", tmp_path / "backup.sqlite3"
    try:
        review_id = review(capsys, data, fake)
        cli(capsys, data, "export", str(review_id), "--out", str(note))
        cli(capsys, data, "history", "backup", str(backup))
    finally:
        paths.set_data_dir(None)

    assert "worthless" in note.read_text(encoding="utf-8")
    log = data / "logs" / "safeguard.log"
    assert log.stat().st_size > 0
    for private in (log, note, backup, data / "history.sqlite3"):
        assert oct(mode(private)) == oct(0o600), private
    for folder in (data, data / "logs"):
        assert oct(mode(folder)) == oct(0o700), folder
    # The run gave the shell's umask back (main() runs in this process here).
    assert os.umask(open_umask) == open_umask


def test_a_log_left_readable_by_an_earlier_version_is_made_private(
    fake: FakeOllama, tmp_path: Path, capsys: pytest.CaptureFixture[str], open_umask: int
) -> None:
    data = tmp_path / "data"
    logs = data / "logs"
    logs.mkdir(parents=True)
    old_log, rotated = logs / "safeguard.log", logs / "safeguard.log.1"
    for path in (old_log, rotated):
        path.write_text("2025-01-01 safeguard.review INFO reviewed 'you are worthless'\n")
        path.chmod(0o644)
    logs.chmod(0o755)
    try:
        review(capsys, data, fake)
    finally:
        paths.set_data_dir(None)

    assert old_log.read_text().startswith("2025-01-01")  # kept, appended to
    assert (mode(old_log), mode(rotated), mode(logs)) == (0o600, 0o600, 0o700)


@pytest.fixture
def reviewed(fake: FakeOllama, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A history with one review made by the CLI (before the test's Qt loop runs)."""
    data = tmp_path / "data"
    try:
        review(capsys, data, fake)
    finally:
        paths.set_data_dir(None)
    return data / "history.sqlite3"


def test_a_note_saved_from_the_app_is_private_even_over_a_readable_file(
    reviewed: Path, qtbot, qloop, tmp_path: Path, open_umask: int
) -> None:
    history = HistoryService.open(reviewed)
    try:
        found = history.list()
        reviews = [history.get(found[0].id)]
    finally:
        history.close()
    assert reviews[0] is not None
    target = tmp_path / "escalation.md"
    target.write_text("an older note\n")
    target.chmod(0o644)

    dialog = ExportDialog(reviews)  # type: ignore[arg-type]
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: dialog.ready)
    assert dialog.save_to(target)

    assert "worthless" in target.read_text(encoding="utf-8")
    assert oct(mode(target)) == oct(0o600)
    fresh = tmp_path / "fresh.md"
    assert dialog.save_to(fresh) and oct(mode(fresh)) == oct(0o600)
    dialog.close()
