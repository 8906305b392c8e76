"""Bad input to the `history` commands: a usage error (exit 2) with one sentence saying what
to give instead, never "unexpected error... please report it", and the history untouched.

HOSTILE_ARGS is the corpus: add to it whenever a new history option takes a value.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.store.history import Filters, History
from tests.test_history import add_done

HUGE = "99999999999999999999"  # beyond SQLite's integer range (2**63 - 1)
BAD_BYTES = b"pills\xff\xfe".decode("utf-8", "surrogateescape")  # raw bytes from a shell

HOSTILE_ARGS: list[tuple[list[str], str]] = [
    (["history", "show", HUGE], "is not a review id"),
    (["history", "show", str(2**63)], "is not a review id"),
    (["history", "show", "0"], "is not a review id"),
    (["history", "show", "-3"], "is not a review id"),
    (["history", "show", "1e309"], "is not a review id"),
    (["history", "show", "9" * 5000], "is not a review id"),  # over int()'s 4,300 digits
    (["history", "decide", HUGE, "--agree"], "is not a review id"),
    (["history", "delete", HUGE, "--yes"], "is not a review id"),
    (["export", "1", HUGE], "is not a review id"),
    (["history", "list", "--limit", "0"], "is not a number of reviews"),
    (["history", "list", "--limit", "-1"], "is not a number of reviews"),
    (["history", "list", "--limit", HUGE], "is not a number of reviews"),
    (["history", "search", "pills", "--limit", "-5"], "is not a number of reviews"),
    (["history", "list", "--since", "2026-01-01Tjunk"], "is not a date"),
    (["history", "list", "--until", "2026-02-30"], "is not a date"),
    (["history", "list", "--since", "0001-01-01T00:00+01:00"], "is not a date"),
    (["history", "search", "pills", "--until", "yesterday"], "is not a date"),
    (["history", "purge", "--older-than", HUGE, "--yes"], "is not a number of days"),
    (["history", "purge", "--older-than", "0", "--yes"], "is not a number of days"),
    (["history", "list", "--policy", BAD_BYTES], "not UTF-8 text"),
    (["history", "search", BAD_BYTES], "not UTF-8 text"),
    (["history", "decide", "1", "--note-only", "--note", BAD_BYTES], "not UTF-8 text"),
    (["history", "delete", "1", "--reason", BAD_BYTES, "--yes"], "not UTF-8 text"),
]


@pytest.fixture
def history(tmp_path: Path) -> Iterator[Path]:
    paths.set_data_dir(tmp_path / "data")
    path = paths.history_db()
    with History.open(path) as h:
        rid = add_done(h, "buy cheap pills")
        h.add_decision(rid, action="agree", moderator="ana")
    yield path
    paths.set_data_dir(None)


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


@pytest.mark.parametrize(("args", "says"), HOSTILE_ARGS, ids=lambda v: str(v)[:40])
def test_bad_input_is_a_usage_error_and_changes_nothing(
    history: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    before = dump(history)
    with pytest.raises(SystemExit) as stop:
        main(["--data-dir", str(paths.data_dir()), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "error: argument" in last and says in last
    assert "unexpected" not in err and "Traceback" not in err
    assert dump(history) == before


def test_the_last_day_sqlite_can_hold_is_a_valid_bound(
    history: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--data-dir", str(paths.data_dir()), "history", "list", "--until", "9999-12-31"])
    assert code == 0 and "buy cheap pills" in capsys.readouterr().out


def test_the_store_answers_out_of_range_values_without_crashing(history: Path) -> None:
    """The GUI reaches the store without the CLI's checks: the same values stay harmless."""
    with History.open(history) as h:
        assert h.get(int(HUGE)) is None and h.get(-1) is None
        with pytest.raises(KeyError):
            h.add_decision(int(HUGE), action="agree", moderator="ana")
        with pytest.raises(KeyError):
            h.delete_review(int(HUGE), moderator="ana")
        for limit, offset in ((0, 0), (-1, 0), (int(HUGE), 0), (10, -1), (10, int(HUGE))):
            with pytest.raises(ValueError, match=r"limit|offset"):
                h.list(limit=limit, offset=offset)
        with pytest.raises(ValueError, match="date"):
            h.list(filters=Filters(since="2026-01-01Tjunk"))
        with pytest.raises(ValueError, match="older_than_days"):
            h.purge(older_than_days=10**9, moderator="ana")
        assert [s.preview for s in h.list(filters=Filters(until="9999-12-31"))] == [
            "buy cheap pills"
        ]
        assert h.count() == 1 and h.verify().ok
