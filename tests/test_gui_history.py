"""The History view driven like a moderator: find, read, decide, delete, export, re-run."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.core.policy import Policy, parse_policy
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.qt import QApplication, QDate, Qt
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from safeguard_desktop.ui.history_integration import install
from safeguard_desktop.ui.history_model import COL_DECISION, COL_STATUS, COL_VERDICT
from safeguard_desktop.ui.history_view import HistoryView
from safeguard_desktop.ui.theme import apply_theme
from tests.fake_ollama import FakeOllama, Scenario
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import MODEL, run_async, save_screenshot

POLICY_TEXT = """---
id: test-pets
title: Test pets policy
version: "3"
output: json-rationale
---
# Test pets policy

## Instructions
Return a JSON object with violation, rule_ids, confidence and rationale.

## Violates (1)
- TP2.a Selling animals without papers.

## Does not violate (0)
- TP0.a Talking about your own pets.
"""
POLICY = parse_policy(POLICY_TEXT.encode(), source=Path("test-pets.md"))
SAFE_REASONING = (
    'The content says "my cat sleeps". That is TP0.a. This does not violate the policy.'
)
HOSTILE = (
    "# heading\n<img src=http://127.0.0.1:{port}/x.png><script>alert(1)</script>\n"
    "```\nfence\n```\nmail me at bob@example.org or @bobby"
)


def add_review(
    history: History,
    text: str,
    *,
    label: str | None = "violation",
    status: str = "done",
    policy: Policy = POLICY,
    reasoning: str = "",
) -> int:
    review_id = history.start_review(
        content={"kind": "message", "text": text},
        content_text=text,
        content_kind="message",
        policy_sha256=policy.sha256,
        policy_id=policy.id,
        policy_version=policy.version,
        policy_title=policy.title,
        policy_text=policy.text,
        model=MODEL,
        effort="low",
        num_ctx=8192,
        seed=7,
        temperature=1.0,
        moderator="ana",
        source="cli",
        model_digest="sha256:feedbeef0123456789",
        ollama_version="0.12.10",
    )
    if status == "running":
        return review_id
    verdict = None
    if label is not None:
        rules = ["TP2.a"] if label == "violation" else []
        verdict = {"violation": label == "violation", "policy_category": "pets",
                   "rule_ids": rules, "rationale": f"Judged {label}."}  # fmt: skip
    history.finish_review(
        review_id,
        status=status,
        reasoning=reasoning or f'The content says "{text[:12]}". Verdict {label}.',
        answer=json.dumps(verdict) if verdict else "",
        verdict=verdict,
        stats={"wall_s": 2.5, "eval_count": 120, "eval_duration": 1_000_000_000},
    )
    return review_id


@pytest.fixture
def history(tmp_path: Path):
    """A history in RAM when the system has /dev/shm: seeding 450 reviews with FULL fsync
    per commit costs seconds on a busy disk."""
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    h = History.open(folder / "history.sqlite3")
    yield h
    h.close()
    if folder != tmp_path:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def make_view(qtbot, qloop, gui_settings: Settings, fake_ollama: FakeOllama):
    views: list[HistoryView] = []
    app = QApplication.instance()
    assert isinstance(app, QApplication)
    apply_theme(app, dark=False, follow=False)

    def make(history: History | None, page_size: int = 200) -> HistoryView:
        store = HistoryService(history) if history is not None else None
        ctx = Session.create(gui_settings, Endpoint(url=fake_ollama.url, timeout=30), store)
        view = HistoryView(ctx, page_size=page_size)
        view.resize(1360, 820)
        qtbot.addWidget(view)
        view.show()
        qtbot.waitExposed(view)
        qtbot.waitUntil(lambda: view.model.ready, timeout=5000)
        views.append(view)
        return view

    yield make
    for view in views:
        run_async(qtbot, view.shutdown())
        run_async(qtbot, view.ctx.client.aclose())


def cell(view: HistoryView, row: int, column: int) -> str:
    return str(view.model.index(row, column).data())


def ids(view: HistoryView) -> list[int]:
    return [view.model.summary(r).id for r in range(view.model.rowCount())]  # type: ignore[union-attr]


def open_row(qtbot, view: HistoryView, row: int) -> None:
    view.table.setFocus()
    view.table.selectRow(row)
    qtbot.keyClick(view.table, Qt.Key.Key_Return)
    wanted = view.model.summary(row).id  # type: ignore[union-attr]
    qtbot.waitUntil(lambda: view.detail.review is not None and view.detail.review.id == wanted)


def test_lists_newest_first_and_fetches_more_when_scrolled(qtbot, history, make_view, tmp_path):
    for i in range(450):
        add_review(history, f"item {i} about pets", label="violation" if i % 3 else "safe")
    view = make_view(history)
    assert view.model.rowCount() == 200
    assert ids(view)[:3] == [450, 449, 448]
    qtbot.waitUntil(lambda: view.total.text() == "450 reviews")
    assert cell(view, 0, COL_VERDICT) == "violation"  # item 449: 449 % 3 != 0
    save_screenshot(view, tmp_path, "history", publish=True)
    view.table.scrollToBottom()
    qtbot.waitUntil(lambda: view.model.rowCount() == 400)
    view.table.scrollToBottom()
    qtbot.waitUntil(lambda: view.model.rowCount() == 450)
    assert ids(view) == list(range(450, 0, -1))
    assert not view.model.canFetchMore()


def test_search_and_filters_narrow_the_table(qtbot, history, make_view):
    add_review(history, "a giraffe sold at the market", label="violation")
    add_review(history, "my cat sleeps all day", label="safe")
    add_review(history, "the dog barks", label="safe")
    view = make_view(history)
    assert view.model.rowCount() == 3
    view.focus_search()
    qtbot.keyClicks(view.filter_bar.search, "giraffe")
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=3000)
    assert "giraffe" in cell(view, 0, 8)
    view.filter_bar.search.clear()
    qtbot.keyClick(view.filter_bar.search, Qt.Key.Key_Return)  # Enter searches at once
    qtbot.waitUntil(lambda: view.model.rowCount() == 3 and not view.model.loading)
    view.filter_bar.set_filter(view.filter_bar.verdict, "safe")
    qtbot.waitUntil(lambda: view.model.rowCount() == 2, timeout=3000)
    assert {cell(view, r, COL_VERDICT) for r in range(2)} == {"safe"}
    view.filter_bar.since.setDate(QDate.currentDate().addDays(1))
    qtbot.waitUntil(lambda: view.total.text() == "0 reviews", timeout=3000)
    assert view.model.rowCount() == 0


def test_open_row_shows_content_reasoning_decisions_and_provenance(
    qtbot, history, make_view, tmp_path
):
    review_id = add_review(history, "my cat sleeps all day", label="safe", reasoning=SAFE_REASONING)
    history.add_decision(review_id, action="agree", moderator="ana", note="fine")
    view = make_view(history)
    open_row(qtbot, view, 0)
    detail = view.detail
    assert detail.content.toPlainText() == "my cat sleeps all day"
    assert detail.reasoning.toPlainText() == SAFE_REASONING
    assert any(s.kind == "quote" for s in detail.reasoning.spans())  # highlighted
    assert detail.content.spans()  # the quote is marked in the content too
    assert detail.verdict.badge.text() == "SAFE"
    assert len(detail.decision_texts()) == 1
    assert "ana · agree · fine" in detail.decision_texts()[0]
    provenance = detail.provenance.toPlainText()
    assert POLICY.sha256[:12] in provenance and "Ollama 0.12.10" in provenance
    assert "TP2.a Selling animals" in detail.policy_viewer.toPlainText()
    save_screenshot(view, tmp_path, "history-detail", publish=True)


def test_override_needs_a_reason_and_then_is_listed(qtbot, history, make_view):
    add_review(history, "a giraffe sold at the market", label="violation")
    view = make_view(history)
    open_row(qtbot, view, 0)
    bar = view.detail.decision_bar
    bar.label_picker.setCurrentIndex(bar.label_picker.findText("safe"))
    qtbot.mouseClick(bar.override_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bar.message.text() != "")
    assert bar.message.text() == "An override needs a reason: write it in the note."
    assert bar.label() == "safe"  # what the moderator chose is kept
    assert len(view.detail.review.decisions) == 0  # type: ignore[union-attr]
    qtbot.keyClicks(bar.note, "It is a toy giraffe")
    qtbot.mouseClick(bar.override_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(view.detail.decision_texts()) == 1 and "override" in
                    view.detail.decision_texts()[0])  # fmt: skip
    assert "override → safe · It is a toy giraffe" in view.detail.decision_texts()[0]
    assert bar.note.text() == "" and bar.message.level == "info"
    assert cell(view, 0, COL_DECISION) == "override"
    qtbot.mouseClick(bar.escalate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(view.detail.decision_texts()) == 2)
    assert cell(view, 0, COL_DECISION) == "⚑ escalate"


def test_a_typed_note_survives_looking_at_another_review(qtbot, history, make_view):
    add_review(history, "first item about a parrot")
    add_review(history, "second item about a llama")
    view = make_view(history)
    open_row(qtbot, view, 0)
    first = view.detail.review.id  # type: ignore[union-attr]
    bar = view.detail.decision_bar
    qtbot.keyClicks(bar.note, "half-written reason")
    bar.label_picker.setCurrentIndex(bar.label_picker.findText("safe"))
    open_row(qtbot, view, 1)
    assert view.detail.review.id != first  # type: ignore[union-attr]
    assert bar.note.text() == "" and bar.label() is None  # nothing typed belongs to this one
    open_row(qtbot, view, 0)
    assert bar.note.text() == "half-written reason" and bar.label() == "safe"


def test_export_preview_of_hostile_content_loads_nothing(
    qtbot, history, make_view, fake_ollama, tmp_path
):
    hostile = HOSTILE.format(port=fake_ollama.port)
    add_review(history, hostile, reasoning=f'It says "{hostile}". This violates TP2.a.')
    add_review(history, "second item", label="safe")
    view = make_view(history)
    view.table.setFocus()
    view.table.selectAll()
    view.export()
    qtbot.waitUntil(lambda: view.export_dialog is not None and view.export_dialog.isVisible())
    dialog = view.export_dialog
    assert dialog is not None and len(dialog.reviews) == 2
    qtbot.waitUntil(lambda: dialog.ready)
    html = dialog.preview.toHtml().lower()
    assert "<img" not in html and "<script" not in html
    assert "&lt;img src=http://127.0.0.1" in dialog.preview.document().toHtml().lower() or (
        "<img src=http://127.0.0.1" in dialog.preview.toPlainText().lower()
    )
    assert "# heading" in dialog.preview.toPlainText()  # shown as text, not a heading
    assert not [u for u in dialog.preview.requested if u.startswith("http")]
    assert not [r for r in fake_ollama.requests if r.path == "/x.png"]
    raw = dialog.source.toPlainText()
    assert "bob@example.org" in raw and "[email]" not in raw
    dialog.redact_box.setChecked(True)
    qtbot.waitUntil(lambda: dialog.ready)
    assert "bob@example.org" not in dialog.source.toPlainText()
    assert "[email]" in dialog.source.toPlainText() and "[@handle]" in dialog.markdown
    save_screenshot(dialog, tmp_path, "export-dialog", publish=True)
    dialog.copy()
    assert QApplication.clipboard().text() == dialog.markdown
    target = tmp_path / "note.md"
    assert dialog.save_to(target) and target.read_text(encoding="utf-8") == dialog.markdown
    dialog.ask_save()
    qtbot.waitUntil(lambda: dialog.save_dialog is not None and dialog.save_dialog.isVisible())
    dialog.save_dialog.reject()  # type: ignore[union-attr]
    dialog.close()


def test_rerun_shows_both_verdicts_side_by_side(qtbot, history, make_view, fake_ollama, tmp_path):
    add_review(history, "my cat sleeps all day", label="safe", reasoning=SAFE_REASONING)
    fake_ollama.script(
        Scenario(
            thinking='The content says "my cat sleeps". Selling? This violates TP2.a.',
            content='{"violation": 1, "rule_ids": ["TP2.a"], "confidence": "high", '
            '"rationale": "Scripted violation."}',
        )
    )
    view = make_view(history)
    open_row(qtbot, view, 0)
    qtbot.mouseClick(view.detail.rerun_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.compare_view is not None and view.compare_view.isVisible())
    compare = view.compare_view
    assert compare is not None
    assert compare.current_choice().kind == "stored"  # type: ignore[union-attr]
    assert compare.stored_panel.badge.text() == "SAFE"
    qtbot.keyClick(compare.picker, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: compare.new_panel.state == "violation", timeout=10_000)
    assert compare.stored_panel.badge.text() == "SAFE"
    assert compare.new_panel.badge.text() == "VIOLATION"
    assert [c.text() for c in compare.new_panel.chip_buttons()] == ["TP2.a"]
    assert "Scripted violation." in compare.new_panel.rationale.text()
    assert "This violates TP2.a." in compare.new_reasoning.toPlainText()
    text = compare.comparison.text()
    assert text == "Stored safe → violation · same policy text · saved as #2"
    assert compare.policy_note.text().startswith("Same policy text")
    chat = fake_ollama.requests_to("/api/chat")[-1].json
    assert chat["messages"][0]["content"].startswith("# Test pets policy")
    assert chat["model"] == MODEL
    assert history.count() == 2
    new = history.get(2)
    assert new is not None and new.source == "gui" and new.verdict_label == "violation"
    assert new.policy_sha256 == POLICY.sha256
    qtbot.waitUntil(lambda: view.model.rowCount() == 2)  # the table shows the new review
    save_screenshot(compare, tmp_path, "history-compare", publish=True)
    compare.choose("other")
    assert compare.policy_note.text().startswith("Different policy text: stored")
    assert "safe → violation" in compare.comparison.text()  # the last run stays described
    compare.close()


def test_interrupted_reviews_are_shown_as_interrupted(qtbot, history, make_view):
    add_review(history, "half way there", status="running")
    assert history.recover(stale_after=0) == 1
    view = make_view(history)
    assert cell(view, 0, COL_STATUS) == "⚠ interrupted"
    assert cell(view, 0, COL_VERDICT) == "—"
    open_row(qtbot, view, 0)
    assert view.detail.verdict.badge.text() == "INTERRUPTED"
    assert "interrupted" in view.detail.verdict.problem.text()
    view.filter_bar.set_filter(view.filter_bar.status, "done")
    qtbot.waitUntil(lambda: view.total.text() == "0 reviews", timeout=3000)
    view.filter_bar.set_filter(view.filter_bar.status, "interrupted")
    qtbot.waitUntil(lambda: view.total.text() == "1 review", timeout=3000)


def test_delete_asks_without_blocking_and_leaves_an_audit_entry(qtbot, history, make_view):
    add_review(history, "first")
    add_review(history, "second")
    view = make_view(history)
    qtbot.waitUntil(lambda: view.model.rowCount() == 2)
    view.delete_selected()  # nothing selected yet: said, not silently ignored
    assert view.delete_dialog is None
    assert "Select one or more reviews to delete first" in view.message.text()
    open_row(qtbot, view, 0)
    view.table.setFocus()
    qtbot.keyClick(view.table, Qt.Key.Key_Delete)
    dialog = view.delete_dialog
    assert dialog is not None and dialog.isVisible()
    assert QApplication.activeModalWidget() in (dialog, None)  # window-modal, no nested loop
    qtbot.keyClicks(dialog.reason, "duplicate")
    qtbot.mouseClick(dialog.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.model.rowCount() == 1)
    assert ids(view) == [1] and history.get(2) is None
    assert view.detail.review is None
    audit = history.audit(limit=1)[0]
    assert (audit.action, audit.review_id, audit.note) == ("delete", 2, "duplicate")
    assert view.delete_dialog is None
    with qtbot.waitActive(view):
        view.activateWindow()  # as the window manager does when the dialog closes
    view.table.setFocus()
    view.table.selectRow(0)
    qtbot.keyClick(view.table, Qt.Key.Key_Delete)
    dialog = view.delete_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: view.delete_dialog is None)
    assert view.model.rowCount() == 1 and history.get(1) is not None
    assert [a.action for a in history.audit()] == ["delete"]


def test_without_a_history_the_view_says_so(qtbot, make_view):
    view = make_view(None)
    assert "History is off" in view.message.text()
    assert view.model.rowCount() == 0 and view.total.text() == "History is off"
    view.export()
    assert "Select one or more reviews" in view.message.text()
    assert view.filter_bar.policy.findData("spam-scams") > 0  # built-ins are offered


def old_review(history: History, path: Path) -> int:
    review_id = add_review(history, "from long ago")
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE reviews SET created_at = '2001-01-01T00:00:00.000Z' WHERE id = ?",
            (review_id,),
        )
    return review_id


def test_install_adds_the_tab_purges_old_reviews_and_refreshes(
    qtbot, make_main_window, fake_ollama, gui_settings: Settings, tmp_path: Path
):
    path = tmp_path / "main.sqlite3"
    history = History.open(path)
    try:
        old_review(history, path)
        add_review(history, "recent item")
        gui_settings.set("retention_days", 30)
        win = make_main_window(fake_ollama.url, history=history)
        integration: Any = install(win, win.ctx)
        qtbot.waitUntil(lambda: integration.purged == 1, timeout=5000)
        assert "1 review older than 30 days deleted" in win.status_text("retention")
        assert history.count() == 1
        keys = {a.text(): a.shortcut().toString() for a in win.menu("&View").actions()}
        assert keys["History"] == "Ctrl+2"
        # The view is built when first needed; its table keys are listed (F1) meanwhile.
        listed = {a.text(): a.shortcut().toString() for a in win.menu("Histor&y").actions()}
        assert not integration.built
        assert listed["&Open review"] == "Return" and listed["&Delete…"] == "Del"
        qtbot.keyClick(win.review.editor.editor, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
        assert integration.built
        view = integration.view
        assert win.views.currentWidget() is integration.page and view.filter_bar.search.hasFocus()
        menu = win.menu("Histor&y").actions()
        assert view.open_action in menu and view.delete_action in menu  # the stand-ins gave way
        assert [a.text() for a in menu].count("&Open review") == 1
        qtbot.waitUntil(lambda: view.model.rowCount() == 1)
        win.show_view(win.review)
        assert win.review.policy_panel.select("spam-scams")
        win.review.editor.editor.setFocus()
        qtbot.keyClicks(win.review.editor.editor, "buy now, cheap pills")
        win.review.classify()
        qtbot.waitUntil(lambda: not win.review.running and win.review.last_result is not None,
                        timeout=10_000)  # fmt: skip
        win.show_view(integration.page)
        qtbot.waitUntil(lambda: view.model.rowCount() == 2, timeout=5000)
        assert "buy now" in cell(view, 0, 8)
        save_screenshot(win, tmp_path, "history-in-window")
    finally:
        run_async(qtbot, win.shutdown())
        win._closed = True
        history.close()


def test_an_override_names_the_rule_it_applies(qtbot, history, make_view):
    """Issue 15 item 3: the moderator's override can say which rule or category it is
    under; the detail, the badge's outcome line and the trail show it."""
    add_review(history, "a giraffe sold at the market", label="violation")
    view = make_view(history)
    open_row(qtbot, view, 0)
    bar = view.detail.decision_bar
    offered = [bar.rule_picker.itemText(i) for i in range(bar.rule_picker.count())]
    assert offered[0] == "TP2.a"  # the model's rule first, then the policy's
    bar.label_picker.setCurrentIndex(bar.label_picker.findText("violation"))
    bar.rule_picker.setEditText("TP3")
    qtbot.keyClicks(bar.note, "A pet sale, not a toy")
    qtbot.mouseClick(bar.override_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "(rule TP3)" in " ".join(view.detail.decision_texts()))
    assert (
        "override → violation (rule TP3) · A pet sale, not a toy"
        in (view.detail.decision_texts()[0])
    )
    assert bar.rule() is None  # cleared once recorded
    review = view.detail.review
    assert review is not None and review.override_rule == "TP3"
    assert history.verify().ok  # the rule is sealed with the row


@pytest.fixture
def installed(qtbot, make_main_window, fake_ollama, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A main window over a history of one review, History installed (not built yet)."""
    history = History.open(tmp_path / "main.sqlite3")
    win = None
    try:
        add_review(history, "an older report")
        win = make_main_window(fake_ollama.url, history=history)
        yield win, install(win, win.ctx)
    finally:
        if win is not None:
            run_async(qtbot, win.shutdown())
            win._closed = True
        history.close()


def test_the_history_view_is_built_when_its_tab_first_shows(qtbot, installed) -> None:
    """A window opened for reviewing does not build History; its tab, Ctrl+2 or a menu entry
    does, once; a review finishing before that costs nothing, and the list has it."""
    win, integration = installed
    win.review.review_finished.emit(None)  # before the view exists: nothing to refresh
    assert not integration.built
    assert win.findChildren(type(integration.page), "historyView") == []
    menu = {a.text(): a for a in win.menu("&View").actions()}
    menu["History"].trigger()
    assert integration.built and win.views.currentWidget() is integration.page
    view = integration.view
    qtbot.waitUntil(lambda: view.model.rowCount() == 1)
    assert integration.view is view  # built once
    opened = {a.text(): a for a in win.menu("Histor&y").actions()}["&Open review"]
    assert opened is view.open_action


def test_a_stand_in_entry_builds_the_view_and_does_what_it_says(installed) -> None:
    win, integration = installed
    stand_in = {a.text(): a for a in win.menu("Histor&y").actions()}["&Open review"]
    assert stand_in.shortcutContext() == Qt.ShortcutContext.WidgetShortcut  # Enter stays
    stand_in.trigger()  # the menu entry, before the view exists
    assert integration.built and win.views.currentWidget() is integration.page
