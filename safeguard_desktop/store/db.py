"""SQLite connection layer of the history: private files, pragmas, migrations, file rescue.

Everything that is the environment's fault (damaged file, lock held by another program,
full disk, no permission) becomes a `HistoryError` with one sentence saying what to do;
anything else is a bug and propagates unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
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
# Below this much free space an I/O error is taken for a full disk: SQLite reports some
# writes that fail for lack of space (the -shm map, a sync) as "disk I/O error".
_NEARLY_FULL = 1 << 20


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


def corrupt_error(path: Path, why: str = "is damaged") -> HistoryError:
    return HistoryError(
        "corrupt",
        f"The history database at {path} {why}. Run `safeguard-desktop history recover` "
        f"to start an empty history (the damaged file is kept aside), or restore a backup "
        f"with {_RESTORE_HINT}.",
    )


def to_history_error(
    exc: sqlite3.Error | OSError, path: Path, what: str = "the history"
) -> HistoryError | None:
    """Map an environment failure to a HistoryError; None means "a bug: let it propagate".

    `what` names the file in the full-disk sentence ("the history", "the backup").
    """
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _full(path, what)
        if isinstance(exc, PermissionError) or exc.errno in (errno.EROFS, errno.EACCES):
            return _permission(path, what)
        return _io(path, exc.strerror or str(exc), what)
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
        return _full(path, what)
    if primary in (_SQLITE_PERM, _SQLITE_READONLY, _SQLITE_CANTOPEN, _SQLITE_AUTH):
        return _permission(path, what)
    if primary == _SQLITE_IOERR or "disk i/o error" in text:
        return _full(path, what) if _nearly_full(path) else _io(path, str(exc), what)
    return None


def _nearly_full(path: Path) -> bool:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def _full(path: Path, what: str = "the history") -> HistoryError:
    return HistoryError(
        "full",
        f"The disk holding {what} at {path} is full: free some space, then try again.",
    )


def _permission(path: Path, what: str = "the history") -> HistoryError:
    if what != "the history":
        return HistoryError(
            "permission",
            f"Cannot write {what} at {path}. Check that you own that folder and that it is "
            "not read-only, or choose another place.",
        )
    return HistoryError(
        "permission",
        f"Cannot write the history database at {path}. Check that you own that folder and "
        "that it is not read-only, or choose another data folder with --data-dir.",
    )


def _io(path: Path, detail: str, what: str = "the history") -> HistoryError:
    return HistoryError(
        "io",
        f"Reading or writing {what} at {path} failed ({detail}). Check the disk and the "
        "path, and try again.",
    )


@contextlib.contextmanager
def translate_errors(path: Path, what: str = "the history") -> Iterator[None]:
    """Turn environment failures inside the block into HistoryError; bugs pass through."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        mapped = to_history_error(exc, path, what)
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


def _sidecars(path: Path) -> tuple[Path, ...]:
    return tuple(path.with_name(path.name + s) for s in ("-journal", "-wal", "-shm"))


def _discard(path: Path) -> None:
    """Remove a file of ours and its SQLite sidecars, if there."""
    for leftover in (path, *_sidecars(path)):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _private_temp(folder: Path, name: str, suffix: str) -> Path:
    """A new empty 0600 file in `folder` (beside its final place, so a rename is atomic)."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=suffix)
    os.close(fd)
    return Path(temp)


def _create(path: Path) -> None:
    """Build a new, migrated history beside `path`, then link it in: no process ever finds a
    half-made file there, so an empty (0-byte) file at `path` can only mean damage."""
    temp = _private_temp(path.parent, path.name, ".new")
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, temp)
        finally:
            conn.close()
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another window made it first: theirs is as good
        except OSError:  # a drive without hard links
            if not path.exists():
                os.replace(temp, path)
    finally:
        _discard(temp)


def _check_not_emptied(path: Path) -> None:
    """A 0-byte history (no WAL holding its pages) was truncated: never start over in it."""
    wal = path.with_name(path.name + "-wal")
    if path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        raise corrupt_error(path, "is empty (0 bytes): it was truncated or damaged")


def connect(path: Path, *, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """Open (creating it private to the user) and migrate the history DB at `path`."""
    with translate_errors(path):
        _make_private_dir(path.parent)
        if path.exists():
            _check_not_emptied(path)
        else:
            _create(path)
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
            for step in schema.MIGRATIONS[target - 1]:
                if callable(step):
                    step(conn)
                else:
                    conn.execute(step)
            conn.execute(f"PRAGMA user_version = {target}")
            log.info("history %s migrated to schema %d", path, target)


def _move_with_sidecars(src: Path, dest: Path) -> None:
    os.replace(src, dest)
    for suffix in ("-wal", "-shm"):
        side = src.with_name(src.name + suffix)
        if side.exists():
            os.replace(side, dest.with_name(dest.name + suffix))


def free_name(path: Path, tag: str) -> Path:
    """PATH.<tag>-<UTC stamp>, with -1, -2... if taken."""
    base = path.with_name(f"{path.name}.{tag}-{_file_stamp()}")
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def recover_corrupt(path: Path) -> Path:
    """Move a damaged DB (and its -wal/-shm) aside so the next open starts empty."""
    with translate_errors(path):
        kept = free_name(path, "corrupt")
        _move_with_sidecars(path, kept)
    log.warning("damaged history %s moved to %s", path, kept)
    return kept


def backup_to(conn: sqlite3.Connection, dest: Path, *, live: Path) -> None:
    """Copy the live DB `live` with the backup API into a private temporary file beside
    `dest`, then rename: dest is never partial, and a failure leaves no copy behind."""
    if dest.is_dir():
        raise HistoryError(
            "invalid",
            f"{dest} is a folder. Give the backup a file name, such as "
            f"{dest / 'history-backup.sqlite3'}.",
        )
    if _same_file(dest, live) or dest in _sidecars(live):
        raise HistoryError(
            "invalid", f"{dest} is the history itself. Choose another file for the backup."
        )
    with translate_errors(dest, "the backup"):
        _make_private_dir(dest.parent)
        temp = _private_temp(dest.parent, dest.name, ".tmp")
        try:
            out = sqlite3.connect(temp, isolation_level=None)
            try:
                conn.backup(out)
                out.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                out.close()
            _restrict_file(temp)
            os.replace(temp, dest)
        finally:
            _discard(temp)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _invalid_backup(src: Path, why: str) -> HistoryError:
    return HistoryError(
        "invalid",
        f"{src} is not a usable Safeguard Desktop history backup ({why}). Choose another file.",
    )


def stage_backup(src: Path, path: Path) -> tuple[Path, str]:
    """A private copy of backup `src` beside `path` and the sha256 of its bytes, after the
    file-level checks (a database, undamaged, ours, not newer). The caller discards it."""
    with translate_errors(path):
        if not src.is_file():
            raise HistoryError("invalid", f"{src} does not exist. Choose an existing backup file.")
        _make_private_dir(path.parent)
        staged = _private_temp(path.parent, path.name, ".restore.tmp")
        try:
            digest = hashlib.sha256()
            with src.open("rb") as source, staged.open("wb") as copy:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    copy.write(chunk)
            _validate_backup(staged, src)
        except BaseException:
            _discard(staged)
            raise
    return staged, digest.hexdigest()


def _validate_backup(candidate: Path, src: Path) -> None:
    conn = sqlite3.connect(candidate, isolation_level=None)
    try:
        try:
            check = conn.execute("PRAGMA integrity_check").fetchall()
            version = _pragma_int(conn, "user_version")
            app_id = _pragma_int(conn, "application_id")
        except sqlite3.DatabaseError as exc:
            raise _invalid_backup(src, "not a database") from exc
        if check != [("ok",)]:
            raise _invalid_backup(src, "the file is damaged")
        if app_id != schema.APPLICATION_ID or version < 1:
            raise _invalid_backup(src, "it is another program's database")
        if version > len(schema.MIGRATIONS):
            raise _invalid_backup(src, "it was made by a newer Safeguard Desktop")
    finally:
        conn.close()


def discard_staged(staged: Path) -> None:
    _discard(staged)


def swap_in(staged: Path, path: Path, kept: Path | None) -> Path | None:
    """Put `staged` in place of the DB at `path`, which moves to `kept` (with its -wal and
    -shm); returns where it went, None when there was none. Close every History first."""
    with translate_errors(path):
        if not path.exists():
            kept = None
        elif kept is None:
            kept = free_name(path, "before-restore")
        if kept is not None:
            _move_with_sidecars(path, kept)
        try:
            os.replace(staged, path)
            _restrict_file(path)
        except BaseException:
            if kept is not None:
                _move_with_sidecars(kept, path)
            raise
    return kept
