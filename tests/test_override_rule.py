"""An override names the rule or category it applies (issue 15 item 3): kept in the sealed
trail (older rows still verify), shown by the CLI, the JSON and the escalation note."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.services.escalation import review_note
from safeguard_desktop.store import schema
from safeguard_desktop.store.history import History
from tests.cli_helpers import reset_data_dir  # noqa: F401 (fixture)


def add_review(h: History, label: str = "violation") -> int:
    policy = resolve_policy("harassment")
    rid = h.start_review(
        content=from_text("you idiot").to_dict(), content_text="you idiot",
        content_kind="message", policy_sha256=policy.sha256, policy_id=policy.id,
        policy_version=policy.version, policy_title=policy.title, policy_text=policy.text,
        model="m", effort="low", num_ctx=8192, seed=None, temperature=None, moderator="ana",
        source="cli",
    )  # fmt: skip
    h.finish_review(rid, status="done", reasoning="r", answer="1",
                    verdict={"violation": label == "violation", "rule_ids": ["H2"]},
                    stats=None)  # fmt: skip
    return rid


def test_a_rule_is_sealed_with_the_override_and_older_rows_still_verify(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    with History.open(path) as h:
        rid = add_review(h)
        h.add_decision(rid, action="agree", moderator="ana")
        h.add_decision(rid, action="override", moderator="ana", label="safe",
                       note="banter between friends", rule=" H0.b ")  # fmt: skip
        review = h.get(rid)
        assert review is not None
        assert [d.rule for d in review.decisions] == [None, "H0.b"]
        assert (review.override_label, review.override_rule) == ("safe", "H0.b")
        assert h.verify().ok
        with pytest.raises(ValueError, match="Only an override"):
            h.add_decision(rid, action="agree", moderator="ana", rule="H2")
        with pytest.raises(ValueError, match="cannot be used"):
            h.add_decision(rid, action="override", moderator="ana", label="safe",
                           note="x", rule="two words")  # fmt: skip
    # The rule is part of the seal: changing it is caught like any edit.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER decisions_no_update")
    conn.execute("UPDATE decisions SET rule = 'H9' WHERE rule = 'H0.b'")
    conn.execute(schema.PROTECTING_TRIGGERS["decisions_no_update"])
    conn.close()
    with History.open(path) as h:
        report = h.verify()
    assert not report.ok and report.first is not None
    assert report.first.kind == "content_edited"


def test_the_cli_records_and_shows_the_rule_and_the_note_exports_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "d"
    paths.set_data_dir(data)
    with History.open(paths.history_db()) as h:
        rid = add_review(h)
    code = main(["--data-dir", str(data), "history", "decide", str(rid), "--override", "safe",
                 "--note", "quoting a film", "--rule", "H0.c"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["--data-dir", str(data), "history", "show", str(rid), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["decisions"][-1]["rule"] == "H0.c"
    code = main(["--data-dir", str(data), "history", "decide", str(rid), "--agree",
                 "--rule", "H2"])  # fmt: skip
    assert code == 2 and "Only an override" in capsys.readouterr().err
    with History.open(paths.history_db()) as h:
        review = h.get(rid)
    assert review is not None
    note = review_note(review)
    assert "**Moderator's outcome:** `safe` under rule `H0.c`" in note
    assert "→ `safe` (rule `H0.c`)" in note
