"""SQLite connection layer of the history: private files, pragmas, migrations, file rescue.

Everything that is the environment's fault (damaged file, lock held by another program,
full disk, no permission) becomes a `HistoryError` with one sentence saying what to do;
anything else is a bug and propagates unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from . import schema

log = logging.getLogger("safeguard.store")

ErrorKind = Literal["corrupt", "locked", "full", "permission", "io", "foreign", "newer", "invalid"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700
_RESTORE_HINT = "`safeguard-desktop history restore FILE`"

# Primary SQLite result codes (extended codes carry them in the low byte).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_AUTH, _SQLITE_NOTADB = 23, 26


class HistoryError(Exception):
    """Environment's fault (disk full, locked, corrupt, permission); str() is one line saying
    what to do. `kind` lets the UI offer the matching action (e.g. "start an empty history")."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds and 'Z': sorts as text, so SQL compares it directly."""
    return format_utc(datetime.now(UTC))


def format_utc(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def _file_stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


def corrupt_error(path: Path) -> HistoryError:
    return HistoryError(
        "corrupt",
        f"The history database at {path} is damaged. Run `safeguard-desktop history recover` "
        f"to start an empty history (the damaged file is kept aside), or restore a backup "
        f"with {_RESTORE_HINT}.",
    )


def to_history_error(exc: sqlite3.Error | OSError, path: Path) -> HistoryError | None:
    """Map an environment failure to a HistoryError; None means "a bug: let it propagate"."""
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return _full(path)
        if isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES):
            return _permission(path)
        return _io(path, exc.strerror or str(exc))
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(
        exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError
    ):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if (
        primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
        or "malformed" in text
        or ("not a database" in text)
    ):
        return corrupt_error(path)
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text:
        return HistoryError(
            "locked",
            f"The history database at {path} is in use by another program (another Safeguard "
            "Desktop window or a command-line run). Close it and try again.",
        )
    if primary == _SQLITE_FULL or "disk is full" in text:
        return _full(path)
    if primary in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_AUTH):
        return _permission(path)
    if primary == _SQLITE_IOERR:
        return _io(path, str(exc))
    return None


def _full(path: Path) -> HistoryError:
    return HistoryError(
        "full", f"The disk holding the history at {path} is full. Free some space and try again."
    )


def _permission(path: Path) -> HistoryError:
    return HistoryError(
        "permission",
        f"Cannot write the history database at {path}. Check that you own that folder and "
        "that it is not read-only, or choose another data folder with --data-dir.",
    )


def _io(path: Path, detail: str) -> HistoryError:
    return HistoryError(
        "io",
        f"Reading or writing the history at {path} failed ({detail}). Check the disk and "
        "try again.",
    )


@contextlib.contextmanager
def translate_errors(path: Path) -> Iterator[None]:
    """Turn environment failures inside the block into HistoryError; bugs pass through."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        mapped = to_history_error(exc, path)
        if mapped is None:
            raise
        log.warning("history %s: %s", path, exc)
        raise mapped from exc


@contextlib.contextmanager
def write_txn(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """`BEGIN IMMEDIATE` takes the write lock up front, so a busy DB fails here, not mid-way."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _make_private_dir(folder: Path) -> None:
    if folder.exists():
        return
    with _private_umask():
        folder.mkdir(parents=True, mode=_DIR_MODE, exist_ok=True)
    if os.name == "posix":
        folder.chmod(_DIR_MODE)


def _restrict_file(path: Path) -> None:
    if os.name == "posix" and path.exists() and (path.stat().st_mode & 0o777) != _FILE_MODE:
        path.chmod(_FILE_MODE)


def connect(path: Path, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """Open (creating it private to the user) and migrate the history DB at `path`."""
    with translate_errors(path):
        _make_private_dir(path.parent)
        with _private_umask():  # only around file creation: the umask is process-wide
            conn = sqlite3.connect(
                path, timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
        try:
            with _private_umask():
                # The first statement reads the header ("file is not a database" shows here)
                # and creates the file, -wal and -shm.
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
            for own in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
                _restrict_file(own)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")  # decisions are an audit trail
            conn.execute("PRAGMA secure_delete = ON")  # deleted content is overwritten
            conn.execute("PRAGMA cache_size = -32000")  # 32 MB: search on big histories
            migrate(conn, path)
        except BaseException:
            conn.close()
            raise
    return conn


def _pragma_int(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute(f"PRAGMA {name}").fetchone()
    return int(row[0])


def _check_ours(conn: sqlite3.Connection, path: Path) -> int:
    """Return the schema version, refusing files that are not (or not yet) ours."""
    version = _pragma_int(conn, "user_version")
    app_id = _pragma_int(conn, "application_id")
    if version == 0:
        tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ).fetchone()[0]
        if tables == 0 and app_id in (0, schema.APPLICATION_ID):
            return 0
    if app_id != schema.APPLICATION_ID:
        raise HistoryError(
            "foreign",
            f"{path} is not a Safeguard Desktop history. Move it away, or choose another data "
            "folder with --data-dir.",
        )
    if version > len(schema.MIGRATIONS):
        raise HistoryError(
            "newer",
            f"The history at {path} was written by a newer Safeguard Desktop. Update the app, "
            "or choose another data folder with --data-dir.",
        )
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Run the missing steps, one transaction each; re-check under the lock (two processes)."""
    current = _check_ours(conn, path)
    for target in range(current + 1, len(schema.MIGRATIONS) + 1):
        with write_txn(conn):
            if _check_ours(conn, path) >= target:
                continue
            for statement in schema.MIGRATIONS[target - 1]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            log.info("history %s migrated to schema %d", path, target)


def _move_with_sidecars(src: Path, dest: Path) -> None:
    os.replace(src, dest)
    for suffix in ("-wal", "-shm"):
        side = src.with_name(src.name + suffix)
        if side.exists():
            os.replace(side, dest.with_name(dest.name + suffix))


def _free_name(path: Path, tag: str) -> Path:
    base = path.with_name(f"{path.name}.{tag}-{_file_stamp()}")
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def recover_corrupt(path: Path) -> Path:
    """Move a damaged DB (and its -wal/-shm) aside so the next open starts empty."""
    with translate_errors(path):
        kept = _free_name(path, "corrupt")
        _move_with_sidecars(path, kept)
    log.warning("damaged history %s moved to %s", path, kept)
    return kept


def backup_to(conn: sqlite3.Connection, dest: Path) -> None:
    """Copy a live DB with the backup API into dest.tmp, then rename: dest is never partial."""
    with translate_errors(dest):
        _make_private_dir(dest.parent)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with _private_umask():
            out = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.backup(out)
            out.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            out.close()
        _restrict_file(tmp)
        os.replace(tmp, dest)


def _validate_backup(candidate: Path, src: Path) -> None:
    def invalid(why: str) -> HistoryError:
        return HistoryError(
            "invalid",
            f"{src} is not a usable Safeguard Desktop history backup ({why}). Choose another file.",
        )

    conn = sqlite3.connect(candidate, isolation_level=None)
    try:
        try:
            check = conn.execute("PRAGMA integrity_check").fetchall()
            version = _pragma_int(conn, "user_version")
            app_id = _pragma_int(conn, "application_id")
        except sqlite3.DatabaseError as exc:
            raise invalid("not a database") from exc
        if check != [("ok",)]:
            raise invalid("the file is damaged")
        if app_id != schema.APPLICATION_ID or version < 1:
            raise invalid("it is another program's database")
        if version > len(schema.MIGRATIONS):
            raise invalid("it was made by a newer Safeguard Desktop")
    finally:
        conn.close()


def restore(src: Path, path: Path) -> None:
    """Replace the DB at path by a validated copy of src; the current DB is kept aside.

    Close every History open on `path` first.
    """
    with translate_errors(path):
        if not src.is_file():
            raise HistoryError("invalid", f"{src} does not exist. Choose an existing backup file.")
        _make_private_dir(path.parent)
        staged = path.with_name(f"{path.name}.restore-{_file_stamp()}.tmp")
        with _private_umask():
            shutil.copyfile(src, staged)
        try:
            _validate_backup(staged, src)
            kept: Path | None = None
            if path.exists():
                kept = _free_name(path, "before-restore")
                _move_with_sidecars(path, kept)
            try:
                source = sqlite3.connect(staged, isolation_level=None)
                try:
                    with _private_umask():
                        target = sqlite3.connect(path, isolation_level=None)
                    try:
                        source.backup(target)
                        target.execute("PRAGMA journal_mode = WAL")
                    finally:
                        target.close()
                finally:
                    source.close()
                _restrict_file(path)
            except BaseException:
                for leftover in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
                    leftover.unlink(missing_ok=True)
                if kept is not None:
                    _move_with_sidecars(kept, path)
                raise
        finally:
            for leftover in (
                staged,
                *(staged.with_name(staged.name + s) for s in ("-wal", "-shm")),
            ):
                leftover.unlink(missing_ok=True)
    log.info("history %s restored from %s", path, src)
