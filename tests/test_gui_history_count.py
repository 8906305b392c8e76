"""The History view's total when a filter matches more than it counts, and its search order."""

from __future__ import annotations

from safeguard_desktop.qt import Qt
from tests import test_gui_history as gui_history
from tests.gui_fixtures import *  # noqa: F403
from tests.test_gui_history import add_review, ids

history = gui_history.history  # the fixtures of the History view's tests
make_view = gui_history.make_view


def test_a_filter_matching_more_than_the_cap_shows_a_capped_total(qtbot, history, make_view):
    for i in range(150):
        add_review(history, f"item {i} about pets", label="violation" if i % 3 else "safe")
    view = make_view(history, page_size=40)
    view.model.count_cap = 60  # the view counts a filter up to 10,000: "10,000+ reviews"
    view.model.reload()
    qtbot.waitUntil(lambda: view.total.text() == "150 reviews")  # no filter: exact, always
    view.filter_bar.set_filter(view.filter_bar.verdict, "violation")  # 100 of them
    qtbot.waitUntil(lambda: view.total.text() == "60+ reviews", timeout=3000)
    assert view.model.rowCount() == 40
    view.filter_bar.set_filter(view.filter_bar.verdict, "safe")  # 50 of them: not above
    qtbot.waitUntil(lambda: view.total.text() == "50 reviews", timeout=3000)
    assert view.model.rowCount() == 40
    view.table.scrollToBottom()
    qtbot.waitUntil(lambda: view.model.rowCount() == 50)
    assert view.total.text() == "50 reviews"


def test_a_search_lists_the_newest_match_first(qtbot, history, make_view):
    first = add_review(history, "giraffe giraffe giraffe for sale")
    add_review(history, "my cat sleeps all day", label="safe")
    last = add_review(history, "one giraffe among many other animals at the zoo today")
    view = make_view(history)
    view.focus_search()
    qtbot.keyClicks(view.filter_bar.search, "gira")  # the beginning of the word finds it
    qtbot.keyClick(view.filter_bar.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: view.model.rowCount() == 2, timeout=3000)
    assert ids(view) == [last, first]
    assert view.total.text() == "2 matches"
