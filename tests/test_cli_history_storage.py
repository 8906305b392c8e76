"""The history's file on a bad day: a full disk, a backup that cannot be written, a history
truncated to nothing. What the moderator sees: a sentence saying "full", reads that still
work, no stray copy of the history left behind, and no history silently started over.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store import db as store_db
from safeguard_desktop.store.history import History
from tests.test_history import add_done, review_args

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP")


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    paths.set_data_dir(folder)
    yield folder
    paths.set_data_dir(None)


@pytest.fixture
def history(data: Path) -> Path:
    """Two finished reviews, one decision, and one review whose writer died mid-stream."""
    path = paths.history_db()
    with History.open(path) as h:
        first = add_done(h, "buy cheap pills")
        add_done(h, "lovely weather")
        h.add_decision(first, action="agree", moderator="ana")
        running = h.start_review(**review_args("still streaming"))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "UPDATE reviews SET heartbeat_at = '2020-01-01T00:00:00.000Z' WHERE id = ?", (running,)
    )
    conn.close()
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(paths.data_dir()), *args])
    out, err = capsys.readouterr()
    return code, out, err


def disk_error(code: int, text: str) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(text)
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    return error


def fill_disk(monkeypatch: pytest.MonkeyPatch, error: Callable[[], sqlite3.Error]) -> None:
    """Every write to a SQLite file from now on fails with `error()`, as on a full disk."""

    class FullDisk(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            if sql.lstrip().upper().startswith(WRITES):
                raise error()
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            if sql.lstrip().upper().startswith(WRITES):
                raise error()
            return super().executemany(sql, *args)

        def backup(self, target: sqlite3.Connection, **kwargs: Any) -> None:  # type: ignore[override]
            super().backup(target, **kwargs)  # the whole copy is written, then the disk fills
            raise error()

    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, factory=FullDisk, **k))


def sqlite_full() -> sqlite3.Error:
    return disk_error(13, "database or disk is full")


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- a full disk ------------------------------------------------------------------------------


def test_a_full_disk_says_full_and_the_history_still_reads(
    history: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_disk(monkeypatch, sqlite_full)
    # Opening wants to mark the dead writer's review interrupted: that write fails, reads work.
    code, out, err = cli(capsys, "history", "list", "--json")
    assert code == 0, err
    assert [r["preview"] for r in json.loads(out)] == [
        "still streaming", "lovely weather", "buy cheap pills",
    ]  # fmt: skip
    code, out, _ = cli(capsys, "history", "show", "1")
    assert code == 0 and "buy cheap pills" in out and "agree" in out
    assert cli(capsys, "history", "verify")[0] == 0

    code, _, err = cli(capsys, "history", "decide", "2", "--agree")
    assert code == 1
    assert "The disk holding the history at" in err and "is full: free some space" in err
    assert "unexpected" not in err and "I/O" not in err
    monkeypatch.undo()
    with History.open(history) as h:  # nothing half-written
        assert [d.action for d in h.get(2).decisions] == []  # type: ignore[union-attr]


def test_a_real_sqlite_full_error_is_reported_as_full(
    history: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own size limit set to what the file holds: the next page cannot be added."""

    class Capped(sqlite3.Connection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.execute("PRAGMA max_page_count = 1")  # clamped to the current size

    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, factory=Capped, **k))
    code, _, err = cli(capsys, "history", "decide", "1", "--note-only", "--note", "x" * 200_000)
    assert code == 1 and "is full: free some space, then try again" in err


@pytest.mark.parametrize(("free", "says"), [(4096, "is full"), (10**12, "disk I/O error")])
def test_an_io_error_on_a_nearly_full_disk_is_called_full(
    history: Path, capsys, monkeypatch: pytest.MonkeyPatch, free: int, says: str
) -> None:
    """SQLite reports some writes that fail for want of space as "disk I/O error"."""
    fill_disk(monkeypatch, lambda: disk_error(778, "disk I/O error"))
    monkeypatch.setattr(store_db.shutil, "disk_usage", lambda _p: type("U", (), {"free": free})())
    code, _, err = cli(capsys, "history", "decide", "1", "--agree")
    assert code == 1 and says in err and "unexpected" not in err


# --- backups that cannot be written ---------------------------------------------------------------


def test_backup_to_a_folder_or_the_history_itself_is_refused_without_a_copy(
    history: Path, tmp_path: Path, capsys
) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    code, _, err = cli(capsys, "history", "backup", str(folder))
    assert code == 2 and "is a folder" in err and "history-backup.sqlite3" in err
    assert entries(folder) == [] and "backups.tmp" not in entries(tmp_path)

    before = entries(history.parent)
    code, _, err = cli(capsys, "history", "backup", str(history))
    assert code == 2 and "is the history itself" in err
    assert entries(history.parent) == before
    assert cli(capsys, "history", "list")[0] == 0


def test_backup_that_fails_midway_leaves_nothing_behind(
    history: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    code, _, err = cli(capsys, "history", "backup", str(blocked / "backup.sqlite3"))
    assert code == 1 and "unexpected" not in err and err.count("\n") == 1

    dest_dir = tmp_path / "usb"
    dest_dir.mkdir()
    fill_disk(monkeypatch, sqlite_full)
    code, _, err = cli(capsys, "history", "backup", str(dest_dir / "backup.sqlite3"))
    assert code == 1 and "The disk holding the backup at" in err and "is full" in err
    assert entries(dest_dir) == []  # no partial or whole copy of the history left there


def test_backup_is_private_and_no_temporary_file_remains(
    history: Path, tmp_path: Path, capsys
) -> None:
    dest = tmp_path / "keep" / "monday.sqlite3"
    assert cli(capsys, "history", "backup", str(dest))[0] == 0
    assert entries(dest.parent) == ["monday.sqlite3"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


# --- a history truncated to nothing ------------------------------------------------------------


def test_an_emptied_history_is_reported_damaged_and_set_aside_not_replaced(
    history: Path, capsys
) -> None:
    for side in (history.with_name(history.name + s) for s in ("-wal", "-shm")):
        side.unlink(missing_ok=True)
    history.write_bytes(b"")
    code, _, err = cli(capsys, "history", "list")
    assert code == 1 and "is empty (0 bytes)" in err and "history recover" in err
    assert history.stat().st_size == 0  # not turned into a new, empty history

    session = Session.open(Settings(), with_history=True, env={})
    session.close_history()
    assert session.history is None
    assert [w for w in session.warnings if "0 bytes" in w and "not saved" in w]
    assert history.stat().st_size == 0

    code, out, _ = cli(capsys, "history", "recover", "--yes")
    assert code == 0 and "kept at" in out
    (kept,) = history.parent.glob(f"{history.name}.corrupt-*")
    assert kept.stat().st_size == 0
    code, out, _ = cli(capsys, "history", "list", "--json")
    assert code == 0 and json.loads(out) == []


def test_a_new_history_appears_whole_with_no_temporary_file(data: Path, capsys) -> None:
    code, out, _ = cli(capsys, "history", "list")
    assert code == 0 and "No reviews" in out
    path = paths.history_db()
    assert path.stat().st_size > 0
    assert [n for n in entries(path.parent) if n.startswith(".")] == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
