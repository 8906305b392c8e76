"""Restore a history backup: only one whose decision trail verifies, never silently.

The backup is copied beside the history and checked there (file, schema, trail); the copy
gains a 'restore' entry (file name, sha256, who) and then replaces the history, which is
kept as PATH.before-restore-<ts>.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from . import db, trail
from .db import HistoryError, translate_errors, write_txn
from .records import Restored

log = logging.getLogger("safeguard.store")


def restore_backup(src: Path, path: Path, *, moderator: str) -> Restored:
    """Replace the history at `path` by backup `src`; see the module doc. Close every History
    on `path` first. Raises HistoryError ("invalid" for a backup that is refused)."""
    staged, digest = db.stage_backup(src, path)
    try:
        with translate_errors(path):
            conn = sqlite3.connect(staged, isolation_level=None)
            try:
                conn.execute("PRAGMA foreign_keys = ON")
                db.migrate(conn, staged)
                report = trail.verify(conn)
                if report.first is not None:
                    raise HistoryError(
                        "invalid",
                        f"{src} was not restored: its decision trail is broken at "
                        f"{report.first.where} ({report.first.message}). The current "
                        "history is unchanged; choose a backup whose trail verifies.",
                    )
                kept = db.free_name(path, "before-restore") if path.exists() else None
                replaced = (
                    f"the replaced history is kept as {kept.name}"
                    if kept
                    else "there was no history to replace"
                )
                with write_txn(conn):
                    trail.append(
                        conn,
                        review_id=None,
                        action="restore",
                        moderator=moderator,
                        note=f"Restored from backup {_text(src.name)} (sha256 {digest}); "
                        f"{replaced}.",
                    )
            finally:
                conn.close()
        kept = db.swap_in(staged, path, kept)
    finally:
        db.discard_staged(staged)
    log.info("history %s restored from %s (sha256 %s)", path, src, digest)
    return Restored(source=src, sha256=digest, kept=kept, decisions=report.decisions + 1)


def _text(name: str) -> str:
    """A file name as storable text (undecodable bytes shown as U+FFFD)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
