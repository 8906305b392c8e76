"""Searching the history as a moderator does: newest matches first, a word's beginning finds
it, counts that stop at a cap say so; and the step that adds prefix indexes to an existing
history keeps every review, decision and search."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.store import schema
from safeguard_desktop.store.history import Filters, History
from tests.test_history import add_done, review_args


@pytest.fixture
def hist(tmp_path: Path) -> Any:
    h = History.open(tmp_path / "history.sqlite3")
    yield h
    h.close()


def ids(found: list[Any]) -> list[int]:
    return [s.id for s in found]


def test_results_come_newest_first_whatever_the_wording(hist: History) -> None:
    weak = add_done(hist, "spam " + "filler words here " * 30)
    strong = add_done(hist, "spam spam spam")
    old_twin = add_done(hist, "same text about spam offers here")
    new_twin = add_done(hist, "same text about spam offers here")
    assert ids(hist.search("spam")) == [new_twin, old_twin, strong, weak]
    pages = ids(hist.search("spam", limit=3)) + ids(hist.search("spam", limit=3, offset=3))
    assert pages == [new_twin, old_twin, strong, weak]


def test_the_beginning_of_the_last_word_finds_it(hist: History) -> None:
    catalogue = add_done(hist, "katalog of cheap watches", reasoning="a shop listing")
    other = add_done(hist, "kayak trip photos")
    assert ids(hist.search("ka")) == [other, catalogue]
    assert ids(hist.search("kat")) == [catalogue]
    assert ids(hist.search("katal")) == [catalogue]  # longer than any prefix index
    assert ids(hist.search("katalog")) == [catalogue]
    assert ids(hist.search("cheap wat")) == [catalogue]
    assert hist.search("k") == []  # one letter is a word, not the start of every k-word
    plan_k = add_done(hist, "plan k for the kayaks")
    assert ids(hist.search("k")) == [plan_k] and ids(hist.search("k!")) == [plan_k]
    assert ids(hist.search("kay !")) == [plan_k, other]  # a lone mark is no last word
    assert hist.search("kx") == []
    assert ids(hist.search("kat", filters=Filters(verdict="violation"))) == [catalogue]
    assert hist.search("kat", filters=Filters(verdict="safe")) == []


def test_a_review_is_found_while_it_streams_and_by_its_final_words(hist: History) -> None:
    rid = hist.start_review(**review_args("hello there"))
    hist.save_progress(rid, reasoning="draftword thinking about katalogs", answer="")
    assert ids(hist.search("katal")) == [rid]
    hist.save_progress(rid, reasoning="draftword thinking about a brochure", answer="")
    assert hist.search("katal") == [] and ids(hist.search("broch")) == [rid]


def test_match_counts_stop_at_the_cap(hist: History) -> None:
    for i in range(7):
        add_done(hist, f"gift card offer number {i}", violation=i % 2)
    assert hist.count_matches("gift") == 7
    assert hist.count_matches("gift", cap=5) == 5
    assert hist.count_matches("gif", Filters(verdict="violation")) == 3
    assert hist.count_matches("gift", Filters(verdict="safe"), cap=2) == 2
    assert hist.count_matches("nothing-like-it") == 0
    assert hist.count_matches("   ") == 0


def _tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'reviews_fts%' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {n: conn.execute(f"SELECT * FROM {n} ORDER BY rowid").fetchall() for n in names}
    finally:
        conn.close()


def _schema(path: Path) -> set[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return {
            (str(name), " ".join(str(sql).split()))
            for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE sql")
        }
    finally:
        conn.close()


def test_a_history_of_the_step_before_gets_prefix_search_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.sqlite3"
    step = schema.MIGRATIONS.index(schema._MIGRATION_SEARCH)
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:step])
        with History.open(path) as old:
            first = add_done(old, "katalog of cheap watches", reasoning="a shop listing")
            second = add_done(old, "kayak trip photos")
            old.add_decision(first, action="escalate", moderator="ana", note="repeat seller")
            running = old.start_review(**review_args("still streaming"))
            old.save_progress(running, reasoning="half a thought about katalogs", answer="")
            head = old.verify().head
        before = _tables(path)
        conn = sqlite3.connect(path)
        assert (
            "prefix"
            not in conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'reviews_fts'"
            ).fetchone()[0]
        )
        conn.close()
    with History.open(path, stale_after=3600) as upgraded:
        report = upgraded.verify()
        assert report.ok and report.head == head
        assert ids(upgraded.search("kat")) == [running, first]  # found through the new index
        assert ids(upgraded.search("repeat sel")) == [first]  # a decision's note
        assert ids(upgraded.search("ka")) == [running, second, first]
    assert _tables(path) == before  # every row of every table as it was
    History.open(tmp_path / "new.sqlite3").close()
    assert _schema(path) == _schema(tmp_path / "new.sqlite3")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    assert conn.execute("INSERT INTO reviews_fts (reviews_fts) VALUES ('integrity-check')")
    conn.close()


def test_the_prefix_step_leaves_a_history_that_has_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with History.open(path) as h:
        rid = add_done(h, "katalog of cheap watches")
    conn = sqlite3.connect(path)
    schema._fts_with_prefixes(conn)  # as when the lead orders the steps otherwise
    conn.commit()
    conn.close()
    with History.open(path) as h:
        assert ids(h.search("kat")) == [rid]
