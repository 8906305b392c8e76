"""The review window driven like a moderator drives it: keys, clicks, a fake Ollama behind it."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.core.policy import lint, load_policy
from safeguard_desktop.qt import QApplication, QFileDialog, QMimeData, Qt, QTextCursor, QUrl
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from safeguard_desktop.ui.main_window import MainWindow
from safeguard_desktop.ui.policy_panel import lint_summary
from tests.fake_ollama import FakeOllama, Scenario, tokenize
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import run_async, save_screenshot

POLICY = """---
id: test-spam
title: Test spam policy
version: "2"
output: json-rationale
---
# Test spam policy

## Instructions
Return a JSON object with violation, rule_ids, confidence and rationale.

## Violates (1)
- TS2.a Pushing the reader to buy something they did not ask for.
- TS2.b Fake prizes and giveaways.

## Does not violate (0)
- TS0.a Ordinary conversation between people who know each other.
"""
SPAM = "Buy now and save big, friend"
FAKE_OLLAMA_BIN = Path(__file__).resolve().parent / "bin" / "ollama"
LONG_THINKING = " ".join(f"Step {i} weighs the wording against the policy." for i in range(400))


@pytest.fixture
def policy_file(gui_settings: object) -> Path:
    path = paths.user_policies_dir() / "test-spam.md"
    path.write_text(POLICY, encoding="utf-8")
    return path


@pytest.fixture
def window(make_main_window, fake_ollama: FakeOllama, policy_file: Path) -> MainWindow:
    win = make_main_window(fake_ollama.url)
    assert win.review.policy_panel.select("test-spam")
    return win


def type_and_classify(qtbot, win: MainWindow, text: str = SPAM) -> None:
    editor = win.review.editor.editor
    editor.setFocus()
    qtbot.keyClicks(editor, text)
    qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)


def badge(win: MainWindow) -> str:
    return win.review.verdict.badge.text()


def wait_badge(qtbot, win: MainWindow, *texts: str, timeout: int = 10_000) -> None:
    qtbot.waitUntil(lambda: badge(win) in texts, timeout=timeout)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_window_starts_focused_and_reports_the_server(
    qtbot, make_main_window, fake_ollama, tmp_path
):
    fake_ollama.add_model("gpt-oss-safeguard:120b")
    window = make_main_window(fake_ollama.url)
    assert "Safeguard" in window.windowTitle()
    assert not window.windowIcon().isNull()
    assert window.review.editor.editor.hasFocus()
    qtbot.waitUntil(lambda: "0.12.10" in window.status_text("server"), timeout=5000)
    assert window.status_text("model") == "No model loaded"
    assert window.status_text("history") == "History off"
    picker = window.review.model_picker
    models = [picker.itemText(i) for i in range(picker.count())]
    assert models == ["gpt-oss-safeguard:120b", "gpt-oss-safeguard:20b"]
    assert picker.currentText() == "gpt-oss-safeguard:20b"  # the setting stays selected
    save_screenshot(window, tmp_path, "review-empty")


def test_full_review_by_keys(qtbot, make_main_window, fake_ollama, policy_file, tmp_path):
    history = History.open(tmp_path / "history.sqlite3")
    try:
        win = make_main_window(fake_ollama.url, history=history)
        assert win.review.policy_panel.select("test-spam")
        type_and_classify(qtbot, win)
        wait_badge(qtbot, win, "VIOLATION")
        verdict = win.review.verdict
        chips = [chip.text() for chip in verdict.chip_buttons()]
        assert chips == ["TS2.a"]
        reasoning = win.review.reasoning.toPlainText()
        assert 'The content says "Buy now".' in reasoning
        assert "This violates TS2.a." in reasoning
        assert "Buy now" in verdict.rationale.text()
        assert "tokens/s" in verdict.stats.text()
        rule_span = next(s for s in win.review.reasoning.spans() if s.kind == "rule")
        tip = win.review.reasoning.tooltip_for(rule_span) or ""
        assert "Pushing the reader to buy something" in tip
        verdict.chip_buttons()[0].click()
        viewer = win.review.policy_panel.viewer
        assert viewer.marked_rule == "TS2.a"
        assert viewer.textCursor().selectedText() == "TS2.a"
        qtbot.waitUntil(lambda: "gpt-oss-safeguard:20b" in win.status_text("model"))
        assert "violation" in win.status_text("last_review")
        assert history.count() == 1
        save_screenshot(win, tmp_path, "review-violation", publish=True)
    finally:
        history.close()


def test_escape_cancels_mid_stream_and_keeps_the_partial_reasoning(qtbot, window, fake_ollama):
    fake_ollama.token_rate = 60
    fake_ollama.script(Scenario(thinking=LONG_THINKING, content="1"))
    type_and_classify(qtbot, window)
    wait_badge(qtbot, window, "RUNNING…")
    qtbot.waitUntil(lambda: len(window.review.reasoning.toPlainText()) > 20, timeout=5000)
    qtbot.keyClick(window.review.editor.editor, Qt.Key.Key_Escape)
    wait_badge(qtbot, window, "CANCELLED")
    partial = window.review.reasoning.toPlainText()
    assert partial and LONG_THINKING.startswith(partial)
    assert len(partial) < len(LONG_THINKING)
    assert window.review.classify_button.isEnabled()
    assert "cancelled" in window.status_text("last_review")


def test_server_down_fails_with_the_not_running_sentence(
    qtbot, make_main_window, policy_file, tmp_path
):
    url = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(tmp_path / "settings.json")
    settings.set("ollama_path", str(FAKE_OLLAMA_BIN))  # installed here, just not running
    win = make_main_window(url, settings)
    qtbot.waitUntil(lambda: "Not running" in win.status_text("server"), timeout=5000)
    type_and_classify(qtbot, win)
    wait_badge(qtbot, win, "FAILED")
    problem = win.review.verdict.problem.text()
    assert f"Ollama is not running at {url}" in problem
    save_screenshot(win, tmp_path, "review-server-down", publish=True)


def test_ollama_not_installed_is_said_as_such(qtbot, make_main_window, policy_file, tmp_path):
    """Issue 15 item 6: not "start it from the Server panel" when there is nothing to start."""
    url = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(tmp_path / "settings.json")
    settings.set("ollama_path", str(tmp_path / "no-such-ollama"))
    win = make_main_window(url, settings)
    type_and_classify(qtbot, win)
    wait_badge(qtbot, win, "FAILED")
    problem = win.review.verdict.problem.text()
    assert "Ollama is not installed on this machine" in problem
    assert "Server panel" not in problem
    save_screenshot(win, tmp_path, "review-ollama-not-installed", publish=True)


def test_missing_model_says_how_to_pull_it(qtbot, window):
    window.review.model_picker.setCurrentText("gpt-oss-safeguard:120b")
    type_and_classify(qtbot, window)
    wait_badge(qtbot, window, "FAILED")
    problem = window.review.verdict.problem.text()
    assert "safeguard-desktop models pull gpt-oss-safeguard:120b" in problem


def test_stream_error_fails_and_keeps_the_partial_reasoning(qtbot, window, fake_ollama):
    fake_ollama.script(Scenario(thinking=LONG_THINKING, content="1", error_after=25))
    type_and_classify(qtbot, window)
    wait_badge(qtbot, window, "FAILED")
    assert window.review.reasoning.toPlainText() == "".join(tokenize(LONG_THINKING)[:25])
    assert "stopped with an error while answering" in window.review.verdict.problem.text()


def test_quote_click_links_reasoning_and_content(qtbot, window):
    type_and_classify(qtbot, window)
    wait_badge(qtbot, window, "VIOLATION")
    reasoning, content = window.review.reasoning, window.review.content_pane
    quote = next(s for s in reasoning.spans() if s.kind == "quote")
    qtbot.mouseClick(
        reasoning.viewport(), Qt.MouseButton.LeftButton, pos=reasoning.span_rect(quote).center()
    )
    assert content.selected_text() == "Buy now"
    back = content.spans()[0]
    qtbot.mouseClick(
        content.viewport(), Qt.MouseButton.LeftButton, pos=content.span_rect(back).center()
    )
    assert reasoning.selected_text() == "Buy now"
    rule = next(s for s in reasoning.spans() if s.kind == "rule")
    qtbot.mouseClick(
        reasoning.viewport(), Qt.MouseButton.LeftButton, pos=reasoning.span_rect(rule).center()
    )
    assert window.review.policy_panel.viewer.marked_rule == "TS2.a"


HOSTILE = "<b>x</b><img src=http://evil.example/p.png>"


def test_markup_in_content_and_model_output_is_shown_literally(qtbot, window, fake_ollama):
    answer = (
        '{"violation": 1, "rule_ids": ["TS2.a"], "confidence": "high", '
        '"rationale": "It says <b>x</b><img src=http://evil.example/p.png>"}'
    )
    fake_ollama.script(
        Scenario(thinking=f'The content says "{HOSTILE}". It violates TS2.a.', content=answer)
    )
    type_and_classify(qtbot, window, HOSTILE)
    wait_badge(qtbot, window, "VIOLATION")
    review = window.review
    assert HOSTILE in review.reasoning.toPlainText()
    assert review.content_pane.toPlainText() == HOSTILE
    assert review.verdict.rationale.text() == f"It says {HOSTILE}"
    assert review.verdict.rationale.textFormat() == Qt.TextFormat.PlainText
    for pane in (review.reasoning, review.content_pane):
        block = pane.document().begin()
        while block.isValid():
            it = block.begin()
            while not it.atEnd():
                assert not it.fragment().charFormat().isImageFormat()
                it += 1
            block = block.next()
    assert all(r.path.startswith("/api/") for r in fake_ollama.requests)


def test_open_file_errors_stay_in_the_window_and_keep_the_text(qtbot, window, tmp_path):
    editor = window.review.editor
    qtbot.keyClicks(editor.editor, "my notes")
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert not run_async(qtbot, editor.import_path(binary))
    assert editor.message.level == "error" and "photo.txt" in editor.message.text()
    assert editor.text() == "my notes"
    assert QApplication.activeModalWidget() is None
    items = tmp_path / "queue.jsonl"
    items.write_text('{"text": "first item"}\n{"text": "second"}\n{"text": "third"}\n')
    assert run_async(qtbot, editor.import_path(items))
    assert editor.text() == "first item"
    assert "3 items" in editor.message.text() and editor.message.level == "info"
    editor.editor.setFocus()
    qtbot.keyClick(editor.editor, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert editor.text() == "my notes"  # opening a file is undoable: nothing typed is lost


def test_ctrl_o_opens_a_file_dialog_without_blocking(qtbot, window):
    qtbot.keyClick(window.review.editor.editor, Qt.Key.Key_O, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window._file_dialog.isVisible(), timeout=3000)
    dialog: QFileDialog = window._file_dialog
    dialog.reject()


def test_chat_turns_are_listed_and_the_judged_turn_selectable(qtbot, window, tmp_path):
    editor = window.review.editor
    editor.set_kind("chat")
    editor.set_text("user: hello there\nassistant: hi, how can I help?\nuser: buy now, friend")
    qtbot.waitUntil(lambda: editor.turns.count() == 3, timeout=3000)
    assert editor.turns.item(2).text().endswith("◀ judged")
    editor.turns.setCurrentRow(0)
    assert editor.turns.item(0).text().endswith("◀ judged")
    content = editor.current_content()
    assert content.kind == "chat" and content.judged == 0
    save_screenshot(window, tmp_path, "review-chat")


def test_policy_edited_on_disk_is_reloaded(qtbot, window, policy_file):
    viewer = window.review.policy_panel.viewer
    assert "TS2.c" not in viewer.toPlainText()
    policy_file.write_text(POLICY + "- TS2.c Chain letters.\n", encoding="utf-8")
    qtbot.waitUntil(lambda: "TS2.c Chain letters." in viewer.toPlainText(), timeout=5000)
    current = window.review.policy_panel.current_policy()
    assert current is not None and current.rule("TS2.c") is not None


def test_policy_picker_shows_title_version_and_lint(window):
    picker = window.review.policy_panel.picker
    texts = [picker.itemText(i) for i in range(picker.count())]
    mine = next(t for t in texts if t.startswith("Test spam policy"))
    assert "v2" in mine
    status, _level = lint_summary(lint(load_policy(paths.user_policies_dir() / "test-spam.md")))
    assert mine.endswith(f"· {status}")
    assert any("Spam and scams" in t for t in texts)  # built-ins are listed too


def test_keyboard_shortcuts_and_help(qtbot, window, tmp_path):
    review = window.review
    before = review.effort_picker.currentText()
    qtbot.keyClick(review.editor.editor, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert review.effort_picker.currentText() != before
    qtbot.keyClick(review.editor.editor, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert review.policy_panel.picker.hasFocus()
    qtbot.keyClick(window, Qt.Key.Key_F1)
    dialog = window.shortcuts_dialog
    assert dialog is not None and dialog.isVisible()
    keys = {entry.action: entry.keys for entry in dialog.entries}
    assert keys["Classify"].startswith("Ctrl+Return")
    assert keys["Cancel review"] == "Esc"
    assert keys["Open content"] == "Ctrl+O" and keys["Quit"] == "Ctrl+Q"
    assert keys["Review"] == "Ctrl+1"
    save_screenshot(dialog, tmp_path, "shortcuts", publish=True)
    dialog.close()


def test_masked_content_and_quotes_until_revealed(
    qtbot, make_main_window, fake_ollama, policy_file, gui_settings, tmp_path
):
    gui_settings.set("mask_content", True)
    gui_settings.set("mask_quotes", True)
    win = make_main_window(fake_ollama.url)
    assert win.review.policy_panel.select("test-spam")
    source = tmp_path / "reported.txt"
    source.write_text(SPAM, encoding="utf-8")
    assert run_async(qtbot, win.review.editor.import_path(source))
    assert win.review.editor.masked.masked and win.review.editor.masked.cover.isVisible()
    qtbot.keyClick(win.review.editor.editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_badge(qtbot, win, "VIOLATION")
    reasoning = win.review.reasoning
    quote = next(s for s in reasoning.spans() if s.kind == "quote")
    cursor = QTextCursor(reasoning.document())
    cursor.setPosition(quote.start + 1)
    fmt = cursor.charFormat()
    assert fmt.foreground().color() == fmt.background().color()  # drawn as a solid block
    assert win.review.content_mask.masked
    save_screenshot(win, tmp_path, "review-masked", publish=True)
    qtbot.keyClick(win.review.editor.editor, Qt.Key.Key_R, Qt.KeyboardModifier.AltModifier)
    assert win.reveal.revealed and not win.review.content_mask.masked
    fmt = QTextCursor(reasoning.document())
    fmt.setPosition(quote.start + 1)
    assert fmt.charFormat().foreground().color() != fmt.charFormat().background().color()


def test_quit_cancels_the_running_review_and_runs_quit_hooks(qtbot, window, fake_ollama):
    fake_ollama.token_rate = 40
    fake_ollama.script(Scenario(thinking=LONG_THINKING, content="1"))
    calls: list[str] = []
    window.on_quit.append(lambda: calls.append("server stopped"))
    type_and_classify(qtbot, window)
    reasoning = window.review.reasoning
    qtbot.waitUntil(lambda: window.review.running and reasoning.toPlainText() != "")
    with qtbot.waitSignal(window.closed, timeout=10_000):
        qtbot.keyClick(
            window.review.editor.editor, Qt.Key.Key_Q, Qt.KeyboardModifier.ControlModifier
        )
    assert calls == ["server stopped"]
    assert badge(window) == "CANCELLED"
    assert not window.isVisible()


def test_cut_off_answer_is_incomplete_and_keeps_the_raw_text(qtbot, window, fake_ollama):
    fake_ollama.script(Scenario(thinking="Looking at it.", content='{"viol', done_reason="length"))
    type_and_classify(qtbot, window)
    wait_badge(qtbot, window, "INCOMPLETE")
    verdict = window.review.verdict
    assert "num_ctx" in verdict.problem.text()
    assert '{"viol' in verdict.answer.text()


def test_dropping_a_file_imports_it(qtbot, window, tmp_path):
    source = tmp_path / "ticket.md"
    source.write_text("Reported message: buy now", encoding="utf-8")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(source))])
    editor = window.review.editor.editor
    assert editor.canInsertFromMimeData(mime)
    editor.insertFromMimeData(mime)  # imported off the GUI thread
    qtbot.waitUntil(lambda: window.review.editor.text() == "Reported message: buy now")


def test_dark_palette_follows_the_scheme(
    qtbot, make_main_window, fake_ollama, policy_file, tmp_path
):
    from safeguard_desktop.ui.theme import apply_theme

    app = QApplication.instance()
    win = make_main_window(fake_ollama.url)
    try:
        apply_theme(app, dark=True, follow=False)
        assert win.palette().color(win.backgroundRole()).lightness() < 80
        assert win.review.policy_panel.select("test-spam")
        type_and_classify(qtbot, win)
        wait_badge(qtbot, win, "VIOLATION")
        text = win.review.reasoning.palette().color(win.review.reasoning.foregroundRole())
        assert text.lightness() > 170
        save_screenshot(win, tmp_path, "review-dark", publish=True)
    finally:
        apply_theme(app, dark=False, follow=False)


def test_full_disk_keeps_the_verdict_and_offers_save_again(
    qtbot, make_main_window, fake_ollama, policy_file, tmp_path, monkeypatch
):
    from tests.test_disk_full_review import FillingDisk

    disk = FillingDisk(monkeypatch, room=4)  # the history can grow by 16 KB, then it is full
    history = History.open(tmp_path / "history.sqlite3")
    try:
        fake_ollama.token_rate = 100_000
        reasoning_text = 'The content says "Buy now". ' + " ".join(
            f"Step {i} weighs the wording against TS2.a." for i in range(1500)
        )
        answer = (
            '{"violation": 1, "policy_category": "TS2", "rule_ids": ["TS2.a"], '
            '"confidence": "high", "rationale": "It pushes the reader to buy."}'
        )
        fake_ollama.script(Scenario(thinking=reasoning_text, content=answer))
        win = make_main_window(fake_ollama.url, history=history)
        assert win.review.policy_panel.select("test-spam")
        type_and_classify(qtbot, win)
        wait_badge(qtbot, win, "VIOLATION")  # not FAILED: the verdict stands
        verdict = win.review.verdict
        assert [chip.text() for chip in verdict.chip_buttons()] == ["TS2.a"]
        assert win.review.reasoning.toPlainText() == reasoning_text
        notes = verdict.problem.text()
        assert "This review is not saved in the history" in notes and "full" in notes
        assert verdict.save_button.isVisible() and verdict.save_button.text() == "Save again"
        save_screenshot(win, tmp_path, "review-not-saved")

        # Still full: the moderator is told so and can try again later.
        qtbot.mouseClick(verdict.save_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "still not saved" in verdict.problem.text())
        assert verdict.save_button.isVisible() and verdict.save_button.isEnabled()
        assert badge(win) == "VIOLATION"

        disk.free()
        qtbot.mouseClick(verdict.save_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not verdict.save_button.isVisible())
        assert "not saved" not in verdict.problem.text()
        assert "saved as review #1" in verdict.meta.text()
        stored = history.get(1)
        assert stored is not None and stored.status == "done"
        assert stored.verdict_label == "violation" and stored.reasoning == reasoning_text
        assert history.count() == 1  # the started review was completed, not written twice
    finally:
        history.close()


def test_an_edited_or_loaded_content_marks_the_verdict_stale(qtbot, window, tmp_path):
    """Issue 15 item 6: an old verdict never sits silently beside other content."""
    type_and_classify(qtbot, window)
    wait_badge(qtbot, window, "VIOLATION")
    panel = window.review.verdict
    assert not panel.stale
    editor = window.review.editor.editor
    editor.setFocus()
    qtbot.keyClick(editor, Qt.Key.Key_End, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(editor, " and more")
    assert panel.stale and "content has changed" in panel.stale_note.text()
    save_screenshot(window, tmp_path, "review-stale-verdict", publish=True)
    for _ in range(len(" and more")):
        qtbot.keyClick(editor, Qt.Key.Key_Backspace)
    assert editor.toPlainText() == SPAM
    assert not panel.stale  # back to the judged text: the verdict holds again

    other = tmp_path / "other.txt"
    other.write_text("see you at lunch", encoding="utf-8")
    assert run_async(qtbot, window.review.editor.import_path(other))
    assert panel.stale
    qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: not panel.stale and badge(window) in ("SAFE", "VIOLATION"))


def test_an_error_banner_goes_once_the_content_is_fixed(qtbot, window, tmp_path):
    editor = window.review.editor
    binary = tmp_path / "photo.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    assert not run_async(qtbot, editor.import_path(binary))
    assert editor.message.level == "error"
    qtbot.keyClicks(editor.editor, "typed instead")
    assert editor.message.text() == ""
