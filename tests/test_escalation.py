"""Escalation notes: provenance present, hostile content inert, redaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safeguard_desktop.services.escalation import (
    NoteOptions,
    code_span,
    escalation_note,
    fence,
    redact,
    render_html,
)
from safeguard_desktop.store.history import History

HOSTILE = (
    "# I am a heading\n"
    "```\n"
    "</code></pre><script>alert('x')</script>\n"
    "[click](javascript:alert(1)) ![pixel](http://tracker.example/p.png)\n"
    "<img src=http://tracker.example/q.png onerror=alert(2)>\n"
    "`````\n"
    "Mail me at bob@example.com or +1 (555) 010-9999, see https://bad.example/x @bobby\n"
)
REASONING = (
    'The content says "see https://bad.example/x" and "I am a heading". '
    "This matches HB2.a, so it violates HB2."
)


def make_review(tmp_path: Path, content: str = HOSTILE) -> tuple[History, int]:
    history = History.open(tmp_path / "h.sqlite3")
    rid = history.start_review(
        content={"kind": "message", "text": content},
        content_text=content,
        content_kind="message",
        policy_sha256="ab" * 32,
        policy_id="harassment",
        policy_version="1.0",
        policy_title="Harassment",
        policy_text="# Harassment\nHB2.a insults\n",
        model="gpt-oss-safeguard:20b",
        effort="medium",
        num_ctx=16384,
        seed=42,
        temperature=1.0,
        moderator="alice",
        source="cli",
    )
    history.finish_review(
        rid,
        status="done",
        reasoning=REASONING,
        answer='{"violation": 1}',
        verdict={
            "label": "violation",
            "violation": True,
            "category": "HB2",
            "rule_ids": ["HB2.a"],
            "confidence": "high",
            "rationale": "Insult <b>aimed</b> at a person.",
        },
        stats={"eval_count": 10},
        model_digest="sha256:" + "cd" * 32,
        ollama_version="0.12.10",
    )
    history.add_decision(
        rid, action="override", moderator="alice", label="safe", note="Satire ``` # not a heading"
    )
    history.add_decision(rid, action="escalate", moderator="bob", note="Send to legal")
    return history, rid


def test_note_has_provenance_and_decisions(tmp_path: Path) -> None:
    history, rid = make_review(tmp_path)
    review = history.get(rid)
    assert review is not None
    note = escalation_note([review])
    assert "VIOLATION" in note and "`HB2`" in note and "`HB2.a`" in note
    assert "`harassment`" in note and "`abababababab`" in note  # 12-char sha
    assert "`gpt-oss-safeguard:20b`" in note and "`medium`" in note and "0.12.10" in note
    assert note.index("override") < note.index("escalate")  # oldest decision first
    assert "Send to legal" in note and "see https://bad.example/x" in note  # evidence quote
    history.close()


def test_hostile_content_cannot_forge_markdown_or_html(tmp_path: Path) -> None:
    history, rid = make_review(tmp_path)
    review = history.get(rid)
    assert review is not None
    html = render_html(escalation_note([review]))
    # Only our own headings exist; none comes from the content or notes.
    headings = re.findall(r"<h[1-6]>(.*?)</h[1-6]>", html)
    assert "I am a heading" not in " ".join(headings)
    assert "not a heading" not in " ".join(headings)
    assert "<script" not in html and "<img" not in html and "<a " not in html
    assert "&lt;script&gt;" in html  # shown, as text
    assert "<b>aimed</b>" not in html
    history.close()


@pytest.mark.parametrize("text", ["plain", "a ``` b", "````\n```", "`", "x\n`````````\ny"])
def test_fence_is_longer_than_any_backtick_run(text: str) -> None:
    block = fence(text)
    bar = block.split("\n", 1)[0].removesuffix("text")
    assert len(bar) > max((len(r) for r in re.findall(r"`+", text)), default=0)
    html = render_html(block)
    assert html.count("<pre>") == 1
    assert render_html(code_span(text)).count("<code>") == 1


def test_redaction_masks_contact_details(tmp_path: Path) -> None:
    out = redact("bob@example.com +1 (555) 010-9999 https://bad.example/x @bobby keep me")
    assert "bob@example.com" not in out and "555" not in out and "bad.example" not in out
    assert "@bobby" not in out and "keep me" in out
    history, rid = make_review(tmp_path)
    review = history.get(rid)
    assert review is not None
    note = escalation_note([review], NoteOptions(redact=True))
    assert "bob@example.com" not in note and "[email]" in note and "[url]" in note
    history.close()


def test_many_reviews_in_one_note(tmp_path: Path) -> None:
    history, rid = make_review(tmp_path)
    history2, rid2 = make_review(tmp_path / "b")
    reviews = [history.get(rid), history2.get(rid2)]
    note = escalation_note([r for r in reviews if r is not None])
    assert note.startswith("# Escalation notes (2 reviews)") and note.count("## Review #") == 2
    history.close()
    history2.close()


def test_terminal_escapes_in_content_are_shown_not_sent(tmp_path: Path) -> None:
    history, rid = make_review(tmp_path, content="hi \x1b]0;pwned\x07 \x1b[2J \x9b31m you idiot")
    review = history.get(rid)
    assert review is not None
    note = escalation_note([review])
    assert not any(ch in note for ch in "\x1b\x07\x9b")
    assert "\\x1b]0;pwned\\x07" in note
    history.close()
