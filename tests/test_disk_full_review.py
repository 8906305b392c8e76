"""A storage failure never throws a verdict away: the disk fills during a review, and the
moderator still gets the verdict and the reasoning, with one sentence saying it is not saved.

The full disk is real SQLite: every history connection may grow by a few pages only
(`PRAGMA max_page_count`), so writes fail with SQLITE_FULL as on a full file system.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.store import db
from safeguard_desktop.store.history import History
from tests.fake_ollama import FakeOllama, Scenario

NOT_SAVED = "safeguard-desktop: This review is not saved in the history: "
# About 80 KB of reasoning: more than the few free pages hold.
REASONING = 'The content says "idiot". ' + " ".join(
    f"Step {i} weighs the insult against HB2.a." for i in range(2000)
)
ANSWER = json.dumps(
    {
        "violation": 1,
        "policy_category": "HB2",
        "rule_ids": ["HB2.a"],
        "confidence": "high",
        "rationale": 'The content says "idiot", an insult aimed at the reader.',
    }
)


class FillingDisk:
    """History files opened from now on may grow by `room` pages; `free()` lifts the limit."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, room: int) -> None:
        self.room = room
        self.connections: list[sqlite3.Connection] = []
        real = db.connect

        def connect(path: Path, **kwargs: object) -> sqlite3.Connection:
            conn = real(path, **kwargs)  # type: ignore[arg-type]
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + self.room}")
            self.connections.append(conn)
            return conn

        monkeypatch.setattr(db, "connect", connect)

    def free(self) -> None:
        """Space is back."""
        for conn in self.connections:
            conn.execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=100_000) as server:
        server.script(Scenario(thinking=REASONING, content=ANSWER))
        yield server


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    paths.set_data_dir(None)


def classify(capsys, tmp_path: Path, fake: FakeOllama, *args: str) -> tuple[int, str, str]:
    argv = ["--data-dir", str(tmp_path / "data"), "classify", "--policy", "harassment"]
    code = main([*argv, "--text", "you idiot", "--host", fake.url, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("room", [4, 0], ids=["fills-mid-review", "full-from-the-start"])
def test_cli_prints_the_verdict_and_says_why_it_is_not_saved(
    fake: FakeOllama, capsys, tmp_path: Path, monkeypatch, room: int
) -> None:
    FillingDisk(monkeypatch, room)
    code, out, err = classify(capsys, tmp_path, fake)
    assert code == 0
    assert "VIOLATION" in out and "rules HB2.a" in out
    assert "Reasoning:\n" + REASONING in out
    assert "Saved as review" not in out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(NOT_SAVED)
    assert "full" in lines[0] and "disk I/O error" not in lines[0]


def test_cli_json_keeps_the_verdict_and_reports_it_unsaved(
    fake: FakeOllama, capsys, tmp_path: Path, monkeypatch
) -> None:
    FillingDisk(monkeypatch, 4)
    code, out, err = classify(capsys, tmp_path, fake, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["verdict"]["label"] == "violation" and data["status"] == "done"
    assert data["reasoning"] == REASONING and data["verdict"]["rule_ids"] == ["HB2.a"]
    assert data["saved"] is False and "review_id" not in data
    assert data["warnings"][-1].startswith(NOT_SAVED.removeprefix("safeguard-desktop: "))
    assert err.count(NOT_SAVED) == 1


def test_with_room_the_same_review_is_saved(fake: FakeOllama, capsys, tmp_path: Path) -> None:
    """The control: nothing above is the fake's doing."""
    code, out, err = classify(capsys, tmp_path, fake)
    assert code == 0 and "Saved as review #1." in out and err == ""
    with History.open(tmp_path / "data" / "history.sqlite3") as history:
        stored = history.get(1)
    assert stored is not None and stored.status == "done" and stored.reasoning == REASONING
