"""A moderator's walk-through, fixed (issue 15 items 1 and 2): decisions land on the review the
moderator means, and the audit trail takes no accidental entries. Keys and clicks as a
moderator uses them."""

from __future__ import annotations

from pathlib import Path

from safeguard_desktop.qt import QApplication, QDateEdit, Qt
from safeguard_desktop.ui.history_model import COL_PREVIEW, MASKED_PREVIEW
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import save_screenshot
from tests.test_gui_history import add_review, history, make_view, open_row

FIXTURES = (history, make_view)  # shared with the History tests


def test_the_decision_bar_names_its_review_and_never_moves(qtbot, history, make_view):
    add_review(history, "first item about a parrot")
    add_review(history, "second item about a llama")
    view = make_view(history)
    open_row(qtbot, view, 0)
    bar = view.detail.decision_bar
    wanted = view.detail.review.id
    assert bar.title.text() == f"Decision on review #{wanted}"
    agree_at = bar.agree_button.mapTo(view, bar.agree_button.rect().topLeft())
    note_at = bar.note.mapTo(view, bar.note.rect().topLeft())

    qtbot.mouseClick(bar.agree_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bar.message.text().startswith("Recorded"))
    assert bar.agree_button.mapTo(view, bar.agree_button.rect().topLeft()) == agree_at
    assert bar.note.mapTo(view, bar.note.rect().topLeft()) == note_at  # the banner took no room
    bar.message.dismiss()
    assert bar.note.mapTo(view, bar.note.rect().topLeft()) == note_at


def test_tab_leaves_the_list_and_down_from_search_reaches_it(qtbot, history, make_view):
    for text in ("parrot", "llama", "ferret"):
        add_review(history, f"an item about a {text}")
    view = make_view(history)
    view.focus_search()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is view.filter_bar.search)
    qtbot.keyClick(view.filter_bar.search, Qt.Key.Key_Down)
    assert QApplication.focusWidget() is view.table
    first = view.current_id()
    assert first is not None
    qtbot.keyClick(view.table, Qt.Key.Key_Down)
    second = view.current_id()
    assert second not in (None, first)  # Down moves by rows
    qtbot.keyClick(view.table, Qt.Key.Key_Tab)
    assert view.current_id() == second  # Tab did not move to another review
    assert QApplication.focusWidget() is not view.table

    edits = view.filter_bar.findChildren(QDateEdit)
    assert edits, "the filter bar has its date fields"
    edits[0].setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is edits[0])
    qtbot.keyClick(edits[0], Qt.Key.Key_Tab)
    assert QApplication.focusWidget() is not edits[0]  # not stuck in the date's sections


def test_a_double_press_records_one_agree(qtbot, history, make_view):
    add_review(history, "a giraffe sold at the market")
    view = make_view(history)
    open_row(qtbot, view, 0)
    bar = view.detail.decision_bar
    for _ in range(3):
        qtbot.mouseClick(bar.agree_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not bar._busy)
    qtbot.waitUntil(lambda: "Already recorded" in bar.message.text())
    assert [d.action for d in view.detail.review.decisions] == ["agree"]
    assert view.ctx.history.audit(limit=10)[0].action == "agree"
    assert len(view.ctx.history.audit(limit=10)) == 1


def test_a_review_without_a_verdict_takes_no_agree(qtbot, history, make_view, tmp_path: Path):
    add_review(history, "the model crashed on this one", label=None, status="failed")
    view = make_view(history)
    open_row(qtbot, view, 0)
    bar = view.detail.decision_bar
    assert not bar.agree_button.isEnabled() and not bar.override_button.isEnabled()
    assert bar.escalate_button.isEnabled() and bar.note_button.isEnabled()
    review_id = view.detail.review.id
    try:
        view.ctx.history.add_decision(review_id, action="agree", moderator="ana")
    except ValueError as exc:
        assert "has no verdict (FAILED)" in str(exc)
    else:
        raise AssertionError("an agree on a failed review was recorded")
    save_screenshot(view, tmp_path, "history-failed-review-no-agree", publish=True)


def test_after_a_decision_typing_goes_into_the_note(qtbot, history, make_view):
    add_review(history, "a giraffe sold at the market")
    view = make_view(history)
    open_row(qtbot, view, 0)
    bar = view.detail.decision_bar
    qtbot.mouseClick(bar.escalate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(view.detail.decision_texts()) == 1
                    and "escalate" in view.detail.decision_texts()[0])  # fmt: skip
    focus = QApplication.focusWidget()
    assert focus is bar.note
    qtbot.keyClicks(focus, "senior please look")
    assert bar.note.text() == "senior please look" and bar.label() is None


def test_the_preview_column_hides_masked_content(
    qtbot, history, make_view, gui_settings, tmp_path: Path
):
    add_review(history, "a distressing message about a ferret")
    gui_settings.set("mask_content", True)
    view = make_view(history)
    preview = view.model.index(0, COL_PREVIEW)
    assert preview.data() == MASKED_PREVIEW
    save_screenshot(view, tmp_path, "history-masked-preview", publish=True)
    view.reveal.reveal()
    assert "ferret" in view.model.index(0, COL_PREVIEW).data()
    view.reveal.conceal()
    gui_settings.set("mask_content", False)
    view.apply_wellness()  # what a Settings save does: no restart
    assert "ferret" in view.model.index(0, COL_PREVIEW).data()


def test_a_search_that_leaves_out_the_open_review_closes_it(qtbot, history, make_view):
    add_review(history, "an item about a parrot")
    add_review(history, "an item about a llama")
    view = make_view(history)
    parrot = next(r for r in range(view.model.rowCount()) if "parrot" in cell_text(view, r))
    open_row(qtbot, view, parrot)
    assert "parrot" in view.detail.review.content_text
    view.focus_search()
    qtbot.keyClicks(view.filter_bar.search, "llama")
    qtbot.keyClick(view.filter_bar.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: view.detail.review is None)
    assert "not in this search" in view.detail.empty.text()
    assert view.detail.empty.isVisible() and not view.detail.decision_bar.isVisible()


def cell_text(view, row: int) -> str:
    return str(view.model.index(row, COL_PREVIEW).data())


def test_an_override_is_the_outcome_shown_everywhere(qtbot, history, make_view, tmp_path: Path):
    """Issue 15 item 3: after an override to safe, the list, the badge and the escalation
    note say SAFE (the moderator's), with the model's VIOLATION beside it."""
    from safeguard_desktop.services.escalation import review_note
    from safeguard_desktop.ui.history_model import COL_VERDICT

    add_review(history, "a giraffe sold at the market", label="violation")
    view = make_view(history)
    open_row(qtbot, view, 0)
    bar = view.detail.decision_bar
    bar.label_picker.setCurrentIndex(bar.label_picker.findText("safe"))
    qtbot.keyClicks(bar.note, "a toy giraffe")
    qtbot.mouseClick(bar.override_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.detail.verdict.badge.text() == "SAFE ✎")
    assert "Moderator's outcome: SAFE (override). The model said VIOLATION." in (
        view.detail.verdict.outcome_note.text())  # fmt: skip
    view.refresh()
    qtbot.waitUntil(lambda: view.model.index(0, COL_VERDICT).data() == "safe ✎ (model: violation)")
    note = review_note(view.detail.review)
    assert note.startswith(f"## Review #{view.detail.review.id}: SAFE")
    assert "**Moderator's outcome:** `safe`" in note and "**Model's verdict:** `violation`" in note
    save_screenshot(view, tmp_path, "history-override-outcome", publish=True)

    qtbot.mouseClick(bar.agree_button, Qt.MouseButton.LeftButton)  # agreeing with the model
    qtbot.waitUntil(lambda: view.detail.verdict.badge.text() == "VIOLATION")
    assert view.detail.review.override_label is None


def test_an_imported_items_own_id_is_shown_and_exported(qtbot, history, make_view):
    """Issue 15 item 6: the external id kept with an imported item is shown in the list,
    the detail and the escalation note."""
    from safeguard_desktop.services.escalation import review_note

    review_id = add_review(history, "an item about a parrot")
    with history.connection() as conn:  # as an import stores it: the content's own "ref"
        conn.execute(
            "UPDATE reviews SET content_json = json_set(content_json, '$.ref', 'ticket-4711') "
            "WHERE id = ?",
            (review_id,),
        )
    view = make_view(history)
    assert cell_text(view, 0).startswith("[ticket-4711] ")
    open_row(qtbot, view, 0)
    assert "item ticket-4711" in view.detail.title.text()
    assert "**Item id:** `ticket-4711`" in review_note(view.detail.review)
