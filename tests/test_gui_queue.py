"""The Queue view as a moderator works it: Ctrl+4, Return opens the newest queue at its first
undecided item while the model classifies ahead, single keys decide and move on, U undoes
(an appended retraction), filters, the command palette, masking and the items-seen count.
Every decision is checked where a script would read it: `QueueService.items`."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop.qt import QApplication, QDialog, Qt, QWidget
from safeguard_desktop.services.queue_service import ItemView, QueueService
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from safeguard_desktop.ui.main_window import MainWindow
from safeguard_desktop.ui.queue_integration import QueueIntegration, install
from safeguard_desktop.ui.queue_view import QueueView, ReasonDialog
from tests.fake_ollama import FakeOllama
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import save_screenshot

TEXTS = ["buy now, limited offer", "see you at lunch", "you idiot", "nice photo"]


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path
    h = History.open(folder / "history.sqlite3")
    yield h
    h.close()
    if folder != tmp_path:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fast_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=50_000, parallel=2) as fake:
        yield fake


def reports(path: Path, count: int) -> Path:
    path.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "text": f"{TEXTS[i % 4]} #{i}"}) + "\n"
            for i in range(1, count + 1)
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def queue_window(
    history: History, fast_ollama: FakeOllama, make_main_window, gui_settings: Settings
) -> tuple[MainWindow, QueueIntegration]:
    """The history outlives the window (fixtures end in reverse order)."""
    gui_settings.set("num_parallel", 2)
    window = make_main_window(fast_ollama.url, gui_settings, history)
    return window, install(window, window.ctx)


def service(window: MainWindow) -> QueueService:
    return window.ctx.queues()


def press(qtbot, window: MainWindow, key: Qt.Key, modifier=Qt.KeyboardModifier.NoModifier):
    target = QApplication.focusWidget() or window
    qtbot.keyClick(target, key, modifier)


def open_queue(qtbot, window: MainWindow, integ: QueueIntegration) -> QueueView:
    press(qtbot, window, Qt.Key.Key_4, Qt.KeyboardModifier.ControlModifier)
    view = integ.view
    assert window.views.currentWidget() is view
    qtbot.waitUntil(lambda: view.selected_name() is not None)
    press(qtbot, window, Qt.Key.Key_Return)
    assert view.pages.currentWidget() is view.work_page
    return view


def classified(view: QueueView) -> bool:
    return bool(view.items) and all(i.state in ("classified", "decided") for i in view.items)


def shown_position(view: QueueView) -> int | None:
    return view.shown.item.position if view.shown is not None else None


def items(window: MainWindow, name: str) -> dict[int, ItemView]:
    return {i.position: i for i in service(window).items(name)}


def answer(qtbot, view: QueueView, reason: str) -> ReasonDialog:
    qtbot.waitUntil(lambda: any(d.isVisible() for d in view.findChildren(ReasonDialog)))
    dialog = next(d for d in view.findChildren(ReasonDialog) if d.isVisible())
    qtbot.waitUntil(lambda: QApplication.focusWidget() is dialog.reason)
    qtbot.keyClicks(dialog.reason, reason)
    qtbot.keyClick(dialog.reason, Qt.Key.Key_Return)
    return dialog


def test_a_moderator_decides_ten_items_without_the_mouse(
    qtbot, queue_window, tmp_path: Path, fast_ollama: FakeOllama
) -> None:
    window, integ = queue_window
    svc = service(window)
    svc.create("older", [reports(tmp_path / "a.jsonl", 3)], ["harassment"])
    svc.create("reports", [reports(tmp_path / "b.jsonl", 14)], ["harassment", "spam-scams"])

    view = open_queue(qtbot, window, integ)  # the newest queue is the one selected
    assert view.current == "reports"
    qtbot.waitUntil(lambda: classified(view), timeout=30_000)  # classified ahead on open
    qtbot.waitUntil(lambda: "reports" not in view.runs)
    assert shown_position(view) == 1
    assert len(fast_ollama.requests_to("/api/chat")) == 28  # once per item and policy
    assert view.grid.isVisible() and view.grid.rowCount() == 2  # two policies: the grid

    def key(k: Qt.Key, then: int | None) -> None:
        press(qtbot, window, k)
        if then is not None:
            qtbot.waitUntil(lambda: shown_position(view) == then)

    key(Qt.Key.Key_A, 2)  # agree, and on to the next
    key(Qt.Key.Key_E, 3)  # escalate
    press(qtbot, window, Qt.Key.Key_O)  # override: label preset to the other side
    dialog = answer(qtbot, view, "sarcasm between friends")
    preset = dialog.label()
    qtbot.waitUntil(lambda: shown_position(view) == 4)
    press(qtbot, window, Qt.Key.Key_S)
    answer(qtbot, view, "duplicate of item 2")
    qtbot.waitUntil(lambda: shown_position(view) == 5)
    key(Qt.Key.Key_J, 6)  # look ahead without deciding
    key(Qt.Key.Key_K, 5)
    key(Qt.Key.Key_Right, 6)
    key(Qt.Key.Key_Left, 5)
    for position in range(5, 11):
        key(Qt.Key.Key_A, position + 1)

    got = items(window, "reports")
    decided = {p: (v.decision.action, v.decision.label, v.decision.note)
               for p, v in got.items() if v.decision}  # fmt: skip
    assert decided == {
        1: ("agree", None, None),
        2: ("escalate", None, None),
        3: ("override", preset, "sarcasm between friends"),
        4: ("skip", None, "duplicate of item 2"),
        **{p: ("agree", None, None) for p in range(5, 11)},
    }
    assert got[3].decision is not None and got[3].decision.moderator == window.ctx.settings[
        "moderator"]  # fmt: skip
    assert all(got[p].state == "decided" for p in range(1, 11))
    assert "10 undecided" not in view.item_title.text() and "4 undecided" in view.item_title.text()
    assert window.status_text("seen") == "11 items seen"
    qtbot.waitUntil(lambda: view.shown is not None and view.shown.review is not None)
    assert view.shown.review.content_text in view.content.toPlainText()
    assert view.shown.review.id in [c.review_id for c in view.shown.item.verdicts]
    save_screenshot(window, tmp_path, "queue-view", publish=True)


def test_single_keys_never_fire_while_typing_in_the_review_editor(
    qtbot, queue_window, tmp_path: Path
) -> None:
    window, integ = queue_window
    service(window).create("reports", [reports(tmp_path / "b.jsonl", 2)], ["harassment"])
    press(qtbot, window, Qt.Key.Key_1, Qt.KeyboardModifier.ControlModifier)
    editor = window.review.editor
    qtbot.waitUntil(lambda: QApplication.focusWidget() is not None)
    window.review.focus_editor()
    focus = QApplication.focusWidget()
    assert isinstance(focus, QWidget)
    qtbot.keyClicks(focus, "ajks")
    assert "ajks" in editor.text()
    assert integ.view.current is None and integ.view.items == []


def test_the_filter_and_the_palette_reach_every_action(qtbot, queue_window, tmp_path: Path) -> None:
    window, integ = queue_window
    svc = service(window)
    svc.create("reports", [reports(tmp_path / "b.jsonl", 8)], ["spam-scams"])
    view = open_queue(qtbot, window, integ)
    qtbot.waitUntil(lambda: classified(view), timeout=30_000)
    qtbot.waitUntil(lambda: "reports" not in view.runs)

    press(qtbot, window, Qt.Key.Key_F)  # undecided
    press(qtbot, window, Qt.Key.Key_F)  # violations
    assert view.filter == "violations"
    violations = [i.position for i in view.items if i.violation]
    assert violations, "the fake's verdicts give some violations"
    assert [i.position for i in view.visible_items()] == violations
    assert shown_position(view) in violations

    press(qtbot, window, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    palette = window.command_palette
    assert palette is not None
    qtbot.waitUntil(lambda: QApplication.focusWidget() is palette.search)  # as a user sees it
    qtbot.keyClicks(palette.search, "escalate")
    assert palette.shown_texts()[0].startswith("Escalate")
    first = shown_position(view)
    qtbot.keyClick(palette.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: any(i.position == first and i.decision for i in view.items))
    decision = items(window, "reports")[first].decision
    assert decision is not None and decision.action == "escalate"
    qtbot.waitUntil(lambda: QApplication.focusWidget() is view.work_page)  # back in the queue

    press(qtbot, window, Qt.Key.Key_F)  # low confidence
    press(qtbot, window, Qt.Key.Key_F)  # escalated
    assert view.filter == "escalated"
    assert [i.position for i in view.visible_items()] == [first]

    press(qtbot, window, Qt.Key.Key_Escape)
    assert view.pages.currentWidget() is view.list_page


def test_masked_categories_hide_only_what_the_moderator_listed(
    qtbot, queue_window, tmp_path: Path, gui_settings: Settings
) -> None:
    window, integ = queue_window
    gui_settings.set("mask_content", True)
    gui_settings.set("mask_categories", "ZZ9")  # a category no verdict here names
    service(window).create("reports", [reports(tmp_path / "b.jsonl", 4)], ["spam-scams"])
    view = open_queue(qtbot, window, integ)
    assert view.content_mask.masked or view.shown is None  # not classified yet: masked
    qtbot.waitUntil(lambda: classified(view), timeout=30_000)
    qtbot.waitUntil(lambda: view.shown is not None and view.shown.item.state == "classified")
    item = view.shown
    assert item is not None
    named = [r for c in item.item.verdicts if c.label == "violation" for r in c.rule_ids]
    expect = any(c.label == "violation" and not c.rule_ids for c in item.item.verdicts)
    assert view.content_mask.masked is expect, named


def test_pause_stops_classifying_and_run_resumes(
    qtbot, queue_window, tmp_path: Path, fast_ollama: FakeOllama
) -> None:
    window, integ = queue_window
    service(window).create("big", [reports(tmp_path / "b.jsonl", 30)], ["harassment"])
    fast_ollama.token_rate = 400  # slow enough to pause half-way
    view = open_queue(qtbot, window, integ)
    qtbot.waitUntil(lambda: "big" in view.runs)
    press(qtbot, window, Qt.Key.Key_P)
    qtbot.waitUntil(lambda: "big" not in view.runs, timeout=30_000)
    status = service(window).status("big")
    assert status.counts["classifying"] == 0 and not status.running
    left = status.counts["pending"]
    assert status.counts["classified"] + left == 30
    fast_ollama.token_rate = 50_000
    press(qtbot, window, Qt.Key.Key_R)
    qtbot.waitUntil(
        lambda: service(window).status("big").counts["classified"] == 30, timeout=30_000
    )
    qtbot.waitUntil(lambda: "big" not in view.runs)
    assert len(fast_ollama.requests_to("/api/chat")) >= 30


def test_dialog_cancel_records_nothing(qtbot, queue_window, tmp_path: Path) -> None:
    window, integ = queue_window
    service(window).create("reports", [reports(tmp_path / "b.jsonl", 2)], ["harassment"])
    view = open_queue(qtbot, window, integ)
    qtbot.waitUntil(lambda: classified(view), timeout=30_000)
    press(qtbot, window, Qt.Key.Key_S)
    qtbot.waitUntil(lambda: any(d.isVisible() for d in view.findChildren(ReasonDialog)))
    dialog = next(d for d in view.findChildren(ReasonDialog) if d.isVisible())
    qtbot.waitUntil(lambda: QApplication.focusWidget() is dialog.reason)
    qtbot.keyClick(dialog.reason, Qt.Key.Key_Return)  # no reason: the dialog says so, stays
    assert dialog.isVisible() and "reason" in dialog.message.text()
    dialog.reject()
    assert dialog.result() == QDialog.DialogCode.Rejected
    qtbot.waitUntil(lambda: QApplication.focusWidget() is view.work_page)
    assert all(i.decision is None for i in items(window, "reports").values())


def test_undo_appends_a_retraction_and_notes_stay_on_the_item(
    qtbot, queue_window, tmp_path: Path
) -> None:
    window, integ = queue_window
    service(window).create("reports", [reports(tmp_path / "b.jsonl", 4)], ["harassment"])
    view = open_queue(qtbot, window, integ)
    qtbot.waitUntil(lambda: classified(view), timeout=30_000)
    press(qtbot, window, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: shown_position(view) == 2)
    press(qtbot, window, Qt.Key.Key_E)
    qtbot.waitUntil(lambda: shown_position(view) == 3)

    press(qtbot, window, Qt.Key.Key_U)  # the escalation of item 2 is retracted
    qtbot.waitUntil(lambda: shown_position(view) == 2 and view.shown.item.decision is None)
    got = items(window, "reports")
    assert got[2].decision is None and got[2].state == "classified"
    assert got[1].decision is not None and got[1].decision.action == "agree"
    press(qtbot, window, Qt.Key.Key_U)  # and then the agreement on item 1
    qtbot.waitUntil(lambda: "item 1 undone" in view.work_message.text())
    assert items(window, "reports")[1].decision is None
    press(qtbot, window, Qt.Key.Key_U)  # nothing left to undo: said, nothing written
    qtbot.waitUntil(lambda: "No decision" in view.work_message.text())

    trail = window.ctx.history.audit(limit=20)
    actions = sorted(d.action for d in trail)
    assert actions == ["agree", "escalate", "retracted", "retracted"]  # nothing rewritten
    assert window.ctx.history.verify().ok

    press(qtbot, window, Qt.Key.Key_N)
    answer(qtbot, view, "sender also posted in #general")
    qtbot.waitUntil(lambda: "Note added" in view.work_message.text())
    assert shown_position(view) == 1  # a note decides nothing: the item stays
    assert items(window, "reports")[1].decision is None


def test_a_break_reminder_after_continuous_reviewing(
    qtbot, queue_window, tmp_path: Path, gui_settings: Settings
) -> None:
    window, integ = queue_window
    gui_settings.set("break_minutes", 10)
    service(window).create("reports", [reports(tmp_path / "b.jsonl", 6)], ["harassment"])
    view = open_queue(qtbot, window, integ)
    minutes = iter([0, 4, 8, 12])
    view.now = lambda: 60.0 * next(minutes)  # a decision every four minutes, no pause
    qtbot.waitUntil(lambda: classified(view), timeout=30_000)
    for position in range(1, 5):
        press(qtbot, window, Qt.Key.Key_A)
        qtbot.waitUntil(lambda p=position: shown_position(view) == p + 1)
        if position < 4:
            assert "Take a few minutes" not in view.work_message.text()
    assert "reviewing for 12 minutes" in view.work_message.text()


def test_violations_first_order_is_kept_with_the_queue(qtbot, queue_window, tmp_path: Path) -> None:
    window, integ = queue_window
    service(window).create("reports", [reports(tmp_path / "b.jsonl", 8)], ["spam-scams"])
    view = open_queue(qtbot, window, integ)
    qtbot.waitUntil(lambda: classified(view), timeout=30_000)
    qtbot.waitUntil(lambda: "reports" not in view.runs)
    view.order_picker.setCurrentIndex(2)
    view.order_picker.activated.emit(2)
    qtbot.waitUntil(lambda: service(window).status("reports").order == "verdict")
    qtbot.waitUntil(lambda: [i.violation for i in view.items][:1] == [True])
    flags = [i.violation for i in view.items]
    assert flags == sorted(flags, key=lambda v: not v)  # every violation before the rest
