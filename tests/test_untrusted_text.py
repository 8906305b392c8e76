"""Untrusted text stays text: in every label of the app, on the terminal, in policies, in
redacted notes.

Content, reasoning, verdict fields, notes, model names (the server's), policy titles and file
names are written with markup (`<b>X</b>`, `<img src=x>`), bidi overrides, bare carriage
returns, zero-width and full-width characters; a moderator must see them as written, never
rendered, reordered, overwritten or slipping past redaction.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.cli.progress import ProgressPrinter
from safeguard_desktop.cli.terminal import SafeStream, redrawing, safe_terminal
from safeguard_desktop.core.policy import parse_policy
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.qt import QApplication, QLabel, Qt, QWidget
from safeguard_desktop.services.escalation import redact
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.models_service import LoadedModel, Progress
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from safeguard_desktop.ui.history_view import HistoryView
from safeguard_desktop.ui.models_table import LoadedModelsView
from safeguard_desktop.ui.theme import apply_theme
from tests.fake_ollama import FakeOllama, Scenario
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import run_async

MARKUP = "<img src=x><b>X</b>"
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"


@pytest.fixture(autouse=True)
def _reset_data_dir() -> Iterator[None]:
    yield
    paths.set_data_dir(None)


# --- the terminal -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("SAFE\rVIOLATION", "SAFE\\x0dVIOLATION"),  # would print VIOLATION over SAFE
        ("last line\r", "last line\\x0d"),
        ("Windows\r\nline", "Windows\r\nline"),
        ("invoice\u202egnp.exe", "invoice\\u202egnp.exe"),  # shows as "invoiceexe.png"
        ("a\u2066b\u2069c", "a\\u2066b\\u2069c"),
        ("mark\u200eed\u200f", "mark\\u200eed\\u200f"),
        ("\x1b]52;c;aGk=\x07", "\\x1b]52;c;aGk=\\x07"),
        ("half an emoji \ud83d", "half an emoji \\ud83d"),
        ("tab\tnew\nline, عربي, 😀, café", "tab\tnew\nline, عربي, 😀, café"),
    ],
)
def test_safe_terminal_shows_controls_bidi_and_bare_returns(text: str, shown: str) -> None:
    assert safe_terminal(text) == shown


def test_every_bidi_control_is_shown_as_an_escape() -> None:
    assert safe_terminal(BIDI) == "".join(f"\\u{ord(c):04x}" for c in BIDI)


def test_classify_prints_hostile_model_output_neutralised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Reasoning that would overwrite the verdict line or reverse a rule id, as the CLI shows it."""
    with FakeOllama(token_rate=50_000) as fake:
        fake.script(
            Scenario(
                thinking="It is fine.\rIt violates SP2.a.\u202e",
                content='{"violation": 0, "rationale": "harmless\\r\\u202eSP2.a"}',
            )
        )
        argv = ["classify", "--policy", "spam-scams", "--host", fake.url, "--no-history"]
        code = main(
            ["--data-dir", str(tmp_path / "data"), *argv, "--text", "See you at noon \u2067ok"]
        )
    out = capsys.readouterr().out
    assert code == 0
    assert "It is fine.\\x0dIt violates SP2.a.\\u202e" in out
    assert "Rationale: harmless\\x0d\\u202eSP2.a" in out
    assert "\r" not in out and "\u202e" not in out


def test_progress_line_is_redrawn_but_server_text_cannot_move_the_cursor() -> None:
    raw = io.StringIO()
    printer = ProgressPrinter(redrawing(SafeStream(raw)), tty=True)  # type: ignore[arg-type]
    printer(Progress("pulling", "pulling model\r\u202edone", 50, 100))
    printer(Progress("done", "pulling model\r\u202edone", 100, 100))
    printer.finish()
    lines = raw.getvalue()
    assert lines.count("\r") == 2  # the two redraws, nothing from the server
    assert lines.startswith("\rpulling model\\x0d\\u202edone")
    assert "\u202e" not in lines


# --- policies -----------------------------------------------------------------------------------

POLICY = """---
id: pets
title: Pet talk
labels: {safe: OK, violation: INSULT}
---
# Pet talk

## Violates (1)
- PT2.a Insults aimed at a person's pet.

## Does not violate (0)
- PT0.a Any other talk about pets.
"""


def test_policy_with_cr_only_line_endings_is_read_as_lines() -> None:
    unix = parse_policy(POLICY.encode())
    old_mac = parse_policy(POLICY.replace("\n", "\r").encode())
    assert (old_mac.id, old_mac.title, old_mac.labels) == ("pets", "Pet talk", ("OK", "INSULT"))
    assert [(r.id, r.text) for r in old_mac.rules] == [(r.id, r.text) for r in unix.rules]
    sections = ["Pet talk", "Violates (1)", "Does not violate (0)"]
    assert [s.title for s in old_mac.sections] == sections
    assert old_mac.body.splitlines() == unix.body.splitlines()
    windows = parse_policy(POLICY.replace("\n", "\r\n").encode())
    assert [r.id for r in windows.rules] == ["PT2.a", "PT0.a"] and windows.title == "Pet talk"


# --- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("mail bob\u200b@example.org today", "mail [email] today"),
        ("mail bob@exa\u200dmple.org", "mail [email]"),
        ("mail bob\ufeff@example.org", "mail [email]"),
        ("mail bob＠example．org", "mail [email]"),
        ("mail ｂｏｂ＠ｅｘａｍｐｌｅ．ｏｒｇ", "mail [email]"),
        ("mail bob\x00@example.org", "mail [email]"),
        ("mail b\u202eob@example.org", "mail [email]"),
        ("call ＋１ ５５５ ０１２ ３４５６ now", "call [phone] now"),
        ("call 555\u2060 012\u200b 3456", "call [phone]"),
        ("call +1 555\x07012 3456", "call [phone]"),
        ("see https://evil\u200b.example/x now", "see [url] now"),
        ("see ｈｔｔｐｓ：／／evil．example/x", "see [url]"),
        ("ask ＠bobby", "ask [@handle]"),
        ("ask @bo\u200cbby", "ask [@handle]"),
        ("ask @bob\x1bby", "ask [@handle]"),
    ],
)
def test_redaction_sees_through_invisible_and_full_width_characters(
    text: str, redacted: str
) -> None:
    assert redact(text) == redacted


def test_redaction_leaves_text_without_identifiers_as_it_is() -> None:
    text = "zero\u200bwidth, ｆｕｌｌ width, a\u202eb, 12 cats, me@ night"
    assert redact(text) == text


# --- Qt labels ----------------------------------------------------------------------------------


def assert_shown_as_text(root: QWidget, marker: str = MARKUP) -> list[QLabel]:
    """Every label showing `marker` shows it as written; no tooltip holds it as markup.

    An auto-format label renders `<b>X</b>` as a bold X and `<img src=x>` as an image.
    """
    shown = [label for label in root.findChildren(QLabel) if marker in label.text()]
    for label in shown:
        assert label.textFormat() == Qt.TextFormat.PlainText, (label.objectName(), label.text())
    for widget in [root, *root.findChildren(QWidget)]:
        assert marker not in widget.toolTip(), widget.objectName()
    return shown


def hostile_review(history: History) -> int:
    policy = parse_policy(
        POLICY.replace("title: Pet talk", f"title: {MARKUP} pets").encode(),
        source=Path("pets.md"),
    )
    review_id = history.start_review(
        content={"kind": "message", "text": f"Your cat {MARKUP} is ugly"},
        content_text=f"Your cat {MARKUP} is ugly",
        content_kind="message",
        policy_sha256=policy.sha256,
        policy_id=policy.id,
        policy_version=policy.version,
        policy_title=policy.title,
        policy_text=policy.text,
        model=f"{MARKUP}:latest",
        effort="low",
        num_ctx=8192,
        seed=7,
        temperature=1.0,
        moderator=f"ana{MARKUP}",
        source="cli",
        model_digest="sha256:feedbeef0123456789",
        ollama_version=f"0.12{MARKUP}",
    )
    verdict = {
        "violation": True,
        "policy_category": f"PT2{MARKUP}",
        "rule_ids": ["PT2.a"],
        "confidence": f"high{MARKUP}",
        "rationale": f"Insult {MARKUP}",
    }
    history.finish_review(
        review_id,
        status="done",
        reasoning=f'The content says "{MARKUP}". This violates PT2.a.',
        answer=json.dumps(verdict),
        verdict=verdict,
        stats={"wall_s": 2.5, "eval_count": 120, "eval_duration": 1_000_000_000},
    )
    history.add_decision(review_id, action="note", moderator=f"bo{MARKUP}", note=f"See {MARKUP}")
    return review_id


def test_history_and_compare_views_show_hostile_text_as_text(
    qtbot, qloop, gui_settings: Settings, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, dark=False, follow=False)
    gui_settings.set("model", f"{MARKUP}:latest")  # as the server named it in its model list
    history = History.open(tmp_path / "history.sqlite3")
    hostile_review(history)
    ctx = Session.create(
        gui_settings, Endpoint(url=fake_ollama.url, timeout=30), HistoryService(history)
    )
    view = HistoryView(ctx)
    qtbot.addWidget(view)
    view.resize(1360, 820)
    view.show()
    qtbot.waitUntil(lambda: view.model.ready and view.model.rowCount() == 1)
    view.table.setFocus()
    view.table.selectRow(0)
    qtbot.keyClick(view.table, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: view.detail.review is not None)
    try:
        assert assert_shown_as_text(view)  # the detail shows the hostile fields
        qtbot.mouseClick(view.detail.rerun_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: view.compare_view is not None and view.compare_view.isVisible())
        compare = view.compare_view
        assert compare is not None
        qtbot.keyClick(compare.picker, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        qtbot.waitUntil(lambda: not compare.running, timeout=10_000)
        heading = compare.new_heading
        assert heading.text() == f"Re-run · {MARKUP}:latest · effort policy"
        assert heading.textFormat() == Qt.TextFormat.PlainText
        assert heading in assert_shown_as_text(compare)
        compare.close()
        qtbot.waitUntil(lambda: view.model.rowCount() == 2)  # the failed re-run is listed
        assert assert_shown_as_text(view)
    finally:
        run_async(qtbot, view.shutdown())
        run_async(qtbot, ctx.client.aclose())
        history.close()


def test_review_window_shows_hostile_text_as_text(
    qtbot, make_main_window, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    policy = POLICY.replace("title: Pet talk", f"title: {MARKUP} pets")
    (paths.user_policies_dir() / "pets.md").write_text(policy, encoding="utf-8")
    window = make_main_window(fake_ollama.url)
    assert window.review.policy_panel.select("pets")
    answer = {
        "violation": 1,
        "policy_category": f"PT2{MARKUP}",
        "rule_ids": ["PT2.a", f"X{MARKUP}"],
        "confidence": "high",
        "rationale": f"Insult {MARKUP}",
    }
    fake_ollama.script(Scenario(thinking=f'It says "{MARKUP}": PT2.a.', content=json.dumps(answer)))
    editor = window.review.editor
    editor.editor.setPlainText(f"Your cat {MARKUP} is ugly")
    editor.editor.setFocus()
    qtbot.keyClick(editor.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.review.verdict.badge.text() == "VIOLATION", timeout=10_000)
    shown = assert_shown_as_text(window)
    assert window.review.verdict.rationale in shown
    name = "<img src=x><b>X.json"  # no "/" in a file name
    bad = tmp_path / name
    bad.write_text('{"text": "broken \\ud800"}', encoding="utf-8")
    assert not run_async(qtbot, editor.import_path(bad))
    assert name in editor.message.text() and "lone surrogate" in editor.message.text()
    assert editor.message.label in assert_shown_as_text(window, name)


def test_loaded_models_gpu_note_is_plain_text(qtbot) -> None:
    view = LoadedModelsView()
    qtbot.addWidget(view)
    view.set_gpu(f"GPU memory unknown: nvidia-smi said {MARKUP}.")
    assert view.gpu.textFormat() == Qt.TextFormat.PlainText
    assert view.gpu.text() == f"GPU memory unknown: nvidia-smi said {MARKUP}."


def test_loaded_model_names_are_plain_text(qtbot) -> None:
    view = LoadedModelsView()
    qtbot.addWidget(view)
    view.set_loaded([LoadedModel(f"{MARKUP}:latest", 10, 5, "", 8192)])
    assert assert_shown_as_text(view)
