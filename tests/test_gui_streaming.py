"""A long reasoning streaming into the review window: it looks exactly as the same text laid
out at once, it ends as exactly the model's text, and the verdict arrives whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from safeguard_desktop.qt import QApplication, Qt, QTextCursor
from safeguard_desktop.store.history import History
from safeguard_desktop.ui.reasoning_view import ReasoningView
from safeguard_desktop.ui.theme import apply_theme
from safeguard_desktop.ui.wellness import RevealState
from tests.fake_ollama import FakeOllama, Scenario, tokenize
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import save_screenshot

# One paragraph of about 14,000 characters, as the model writes it: no line breaks.
PARAGRAPH = " ".join(
    f'Step {i} weighs "the wording" against the policy, sentence by sentence, and finds '
    "nothing the earlier steps missed."
    for i in range(120)
)
POLICY = """---
id: test-spam
title: Test spam policy
version: "1"
---
# Test spam policy

## Violates (1)
- TS2.a Pushing the reader to buy something they did not ask for.

## Does not violate (0)
- TS0.a Ordinary conversation.
"""


@pytest.fixture
def pair(qtbot, qapp: QApplication):
    """Two reasoning panes of one size: one to stream into, one to show the text at once."""
    apply_theme(qapp, dark=False, follow=False)
    reveal = RevealState()
    panes = []
    for _ in range(2):
        pane = ReasoningView(reveal)
        pane.resize(520, 420)
        qtbot.addWidget(pane)
        pane.show()
        qtbot.waitExposed(pane)
        panes.append(pane)
    return panes[0], panes[1]


def stream(qtbot, pane: ReasoningView, text: str, every: int = 12) -> None:
    """Append `text` token by token, letting each batch reach the document as it would."""
    pane.begin()
    for i, token in enumerate(tokenize(text), 1):
        pane.append(token)
        if i % every == 0:
            pane._buffer.flush()  # the 40 ms batch, without waiting for it
            QApplication.processEvents()
    pane._buffer.flush()
    QApplication.processEvents()


def wrapped_lines(pane: ReasoningView) -> list[str]:
    """The text of each line as the pane wraps it, paragraph breaks left out."""
    lines: list[str] = []
    block = pane.document().begin()
    while block.isValid():
        layout = block.layout()
        for i in range(layout.lineCount()):
            line = layout.lineAt(i)
            lines.append(block.text()[line.textStart() : line.textStart() + line.textLength()])
        block = block.next()
    return lines


def same_picture(a: ReasoningView, b: ReasoningView, where: str) -> bool:
    for pane in (a, b):
        bar = pane.verticalScrollBar()
        bar.setValue({"top": 0, "middle": bar.maximum() // 2, "end": bar.maximum()}[where])
    QApplication.processEvents()
    return a.viewport().grab().toImage() == b.viewport().grab().toImage()


def test_a_long_paragraph_looks_the_same_streamed_as_laid_out_at_once(qtbot, pair, tmp_path: Path):
    streamed, at_once = pair
    stream(qtbot, streamed, PARAGRAPH)
    at_once.begin()
    at_once.finish(PARAGRAPH)
    QApplication.processEvents()  # its scroll bar shows: the width both wrap at
    assert streamed.document().blockCount() > 1  # laid out in pieces while it streams
    assert wrapped_lines(streamed) == wrapped_lines(at_once)
    for where in ("top", "middle", "end"):
        assert same_picture(streamed, at_once, where), where
    save_screenshot(streamed, tmp_path, "reasoning-streaming-long-paragraph")
    assert streamed.finish(PARAGRAPH) == PARAGRAPH
    assert streamed.toPlainText() == PARAGRAPH  # one paragraph again, the model's text
    assert streamed.document().blockCount() == 1
    assert same_picture(streamed, at_once, "middle")


def test_a_narrower_pane_mid_stream_still_wraps_as_the_text_at_once(qtbot, pair):
    streamed, at_once = pair
    stream(qtbot, streamed, PARAGRAPH[: len(PARAGRAPH) // 2])
    for pane in pair:
        pane.resize(380, 420)
    QApplication.processEvents()
    assert streamed.toPlainText() == PARAGRAPH[: len(PARAGRAPH) // 2]  # nothing cut now
    for token in tokenize(PARAGRAPH[len(PARAGRAPH) // 2 :]):
        streamed.append(token)
    streamed._buffer.flush()
    QApplication.processEvents()
    at_once.begin()
    at_once.finish(PARAGRAPH)
    QApplication.processEvents()
    assert wrapped_lines(streamed) == wrapped_lines(at_once)  # every word on the same line


def test_masked_quotes_stay_hidden_while_a_long_paragraph_streams(qtbot, pair):
    streamed, _ = pair
    streamed.set_mask_quotes(True)
    stream(qtbot, streamed, PARAGRAPH)
    assert streamed.document().blockCount() > 1
    streamed.refresh_formats()  # e.g. the moderator let go of Alt+R mid-stream
    assert streamed.toPlainText() == PARAGRAPH
    quote = PARAGRAPH.index('"the wording"', 5000) + 2
    cursor = QTextCursor(streamed.document())
    cursor.setPosition(quote)
    fmt = cursor.charFormat()
    assert fmt.foreground().color() == fmt.background().color()  # a solid block


def test_a_streamed_long_review_ends_with_the_exact_text_its_highlights_and_verdict(
    qtbot, make_main_window, fake_ollama: FakeOllama, gui_settings, tmp_path: Path
):
    from safeguard_desktop import paths

    (paths.user_policies_dir() / "test-spam.md").write_text(POLICY, encoding="utf-8")
    thinking = 'The content says "Buy now". The closest rule is TS2.a. ' + PARAGRAPH
    thinking += " This violates TS2.a."
    fake_ollama.token_rate = 20_000
    fake_ollama.script(Scenario(thinking=thinking, content="1"))
    win = make_main_window(fake_ollama.url)
    review = win.review
    assert review.policy_panel.select("test-spam")
    review.editor.set_text("Buy now and save big, friend")
    editor = review.editor.editor
    editor.setFocus()
    with qtbot.waitSignal(review.review_finished, timeout=20_000):
        qtbot.keyClick(editor, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert review.verdict.badge.text() == "VIOLATION"
    assert review.reasoning.toPlainText() == thinking
    assert review.reasoning.document().blockCount() == 1
    kinds = {span.kind for span in review.reasoning.spans()}
    assert {"quote", "rule"} <= kinds
    rule = next(s for s in review.reasoning.spans() if s.kind == "rule")
    cursor = QTextCursor(review.reasoning.document())
    cursor.setPosition(rule.start + 1)
    assert cursor.charFormat().fontUnderline()  # the rule id is marked, at its place
    assert [chip.text() for chip in review.verdict.chip_buttons()] == ["TS2.a"]
    save_screenshot(win, tmp_path, "review-long-reasoning")


def test_escape_while_the_verdict_is_being_shown_does_not_cancel_it(
    qtbot, make_main_window, fake_ollama: FakeOllama, gui_settings
):
    from safeguard_desktop import paths

    (paths.user_policies_dir() / "test-spam.md").write_text(POLICY, encoding="utf-8")
    fake_ollama.token_rate = 20_000
    fake_ollama.script(Scenario(thinking="It says buy now. This violates TS2.a.", content="1"))
    win = make_main_window(fake_ollama.url)
    review = win.review
    assert review.policy_panel.select("test-spam")
    review.editor.set_text("Buy now and save big, friend")
    cancelled: list[bool] = []
    show = review.reasoning.finish_with_highlights

    def finish_then_escape(*args, **kwargs):  # the moment the stream has ended
        result = show(*args, **kwargs)
        cancelled.append(review.cancel())
        return result

    review.reasoning.finish_with_highlights = finish_then_escape  # type: ignore[method-assign]
    with qtbot.waitSignal(review.review_finished, timeout=20_000):
        review.classify()
    assert cancelled == [False]
    assert review.verdict.badge.text() == "VIOLATION"


@pytest.fixture
def history(tmp_path: Path):
    """Listed before make_main_window: closed after the window has shut down."""
    store = History.open(tmp_path / "history.db")
    yield store
    store.close()


def test_escape_once_the_stream_has_ended_keeps_the_verdict_on_screen_and_in_history(
    qtbot, history: History, make_main_window, fake_ollama: FakeOllama, gui_settings
):
    # The moment between the stream's end and the verdict on screen (highlights and the
    # history write): the screen must say what the history keeps.
    from safeguard_desktop import paths

    (paths.user_policies_dir() / "test-spam.md").write_text(POLICY, encoding="utf-8")
    fake_ollama.token_rate = 20_000
    fake_ollama.script(Scenario(thinking="It says buy now. This violates TS2.a.", content="1"))
    win = make_main_window(fake_ollama.url, history=history)
    review = win.review
    assert review.policy_panel.select("test-spam")
    review.editor.set_text("Buy now and save big, friend")
    answered = review._on_answered
    cancelled: list[bool] = []

    def answered_then_escape() -> None:
        answered()
        cancelled.append(review.cancel())
        cancelled.append(review.cancel_button.isEnabled())

    review._on_answered = answered_then_escape  # type: ignore[method-assign]
    with qtbot.waitSignal(review.review_finished, timeout=20_000):
        review.classify()
    assert cancelled == [False, False]  # refused, and the Cancel button is off
    assert review.verdict.badge.text() == "VIOLATION"
    result = review.last_result
    assert result is not None and result.review_id is not None
    stored = history.get(result.review_id)
    assert (stored.status, stored.verdict["label"]) == ("done", "violation")


def test_the_line_being_read_stays_in_place_when_the_stream_ends(qtbot, pair):
    streamed, _ = pair
    tokens = tokenize(PARAGRAPH)
    stream(qtbot, streamed, "".join(tokens[: len(tokens) // 2]))
    bar = streamed.verticalScrollBar()
    bar.setValue(bar.maximum() // 2)  # the moderator scrolled up to read
    QApplication.processEvents()

    def line_at_top() -> str:  # the first line fully in view (a few pixels may shift)
        point = streamed.viewport().rect().topLeft()
        point.setY(streamed.fontMetrics().height() * 3 // 4)
        cursor = streamed.cursorForPosition(point)
        cursor.select(QTextCursor.SelectionType.LineUnderCursor)
        return cursor.selectedText()

    reading = line_at_top()
    for token in tokens[len(tokens) // 2 :]:
        streamed.append(token)
    streamed._buffer.flush()
    QApplication.processEvents()
    assert line_at_top() == reading
    streamed.finish_with_highlights(PARAGRAPH, [], None)
    QApplication.processEvents()
    assert line_at_top() == reading
    assert bar.value() < bar.maximum()


def test_copying_mid_stream_gives_the_models_text_without_the_hidden_cuts(qtbot, pair):
    streamed, _ = pair
    tokens = tokenize(PARAGRAPH)
    half = "".join(tokens[: len(tokens) // 2])
    stream(qtbot, streamed, half)
    streamed._streaming = True  # still streaming: the last batch is in, the cuts are there
    assert streamed.document().blockCount() > 1  # the paragraph is laid out in pieces
    streamed.selectAll()
    streamed.copy()
    assert QApplication.clipboard().text() == half


def test_a_pane_that_grows_shorter_keeps_the_end_in_view(qtbot, pair):
    streamed, _ = pair
    stream(qtbot, streamed, PARAGRAPH)
    streamed.finish_with_highlights(PARAGRAPH, [], None)
    bar = streamed.verticalScrollBar()
    bar.setValue(bar.maximum())  # following the end
    QApplication.processEvents()
    streamed.resize(streamed.width(), streamed.height() - 60)  # the verdict takes its place
    QApplication.processEvents()
    assert bar.value() == bar.maximum() > 0
    bar.setValue(bar.maximum() // 2)  # reading further up: left where it is
    streamed.resize(streamed.width(), streamed.height() - 40)
    QApplication.processEvents()
    assert bar.value() == bar.maximum() // 2 or bar.value() < bar.maximum()
