"""The policy workbench as a policy writer uses it: Ctrl+5, import a labelled set (asked which
labels mean violation when the file's are not the usual ones), evaluate a policy, read the
metrics and the confusion matrix (a cell lists its items), edit the policy into a second
version, evaluate again, see both on the chart, compare them (McNemar, flips) and open a
flip's two reasonings. The figures are the ones the CLI's `eval` prints for the same runs."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop.qt import QApplication, Qt
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from safeguard_desktop.ui.main_window import MainWindow
from safeguard_desktop.ui.workbench_integration import WorkbenchIntegration, install
from safeguard_desktop.ui.workbench_view import (
    ColumnsDialog,
    FlipDialog,
    PositiveDialog,
    WorkbenchView,
)
from tests.fake_ollama import FakeOllama, Scenario
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import save_screenshot

POLICY = """---
id: sales
title: Sales pitches
version: "{version}"
---
# Sales pitches

## Violates (1)
- SA2 A message that sells something.{extra}

## Allowed (0)
- SA0 Anything else.

Answer 1 if the content violates this policy, 0 if it does not.
"""
TRUTHS = [1, 1, 1, 1, 0, 0, 0, 0, 1, 0]
A_SAYS = ["0", "0", "0", "1", "1", "1", "0", "0", "1", "0"]  # TP 2, FN 3, FP 2, TN 3
B_SAYS = ["1", "1", "1", "1", "0", "0", "0", "0", "1", "1"]  # TP 5, FP 1, TN 4


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
    with FakeOllama(token_rate=50_000) as fake:
        yield fake


@pytest.fixture
def bench(
    history: History, fast_ollama: FakeOllama, make_main_window, gui_settings: Settings
) -> tuple[MainWindow, WorkbenchIntegration]:
    gui_settings.set("num_parallel", 1)  # answers are scripted in item order
    window = make_main_window(fast_ollama.url, gui_settings, history)
    return window, install(window, window.ctx)


def answers(fake: FakeOllama, labels: list[str]) -> None:
    for label in labels:
        fake.script(Scenario(thinking=f"Reasoning for {label}.", content=label))


def open_bench(qtbot, window: MainWindow, integ: WorkbenchIntegration) -> WorkbenchView:
    qtbot.keyClick(window, Qt.Key.Key_5, Qt.KeyboardModifier.ControlModifier)
    view = integ.view
    assert view is not None and window.views.currentWidget() is integ.page
    qtbot.waitUntil(lambda: view.policy_picker.count() > 0)
    return view


def cell(table, row: int, col: int) -> str:
    item = table.item(row, col)
    return item.text() if item is not None else ""


def metric(view: WorkbenchView, title: str) -> str:
    rows = {cell(view.metrics_table, r, 0): r for r in range(view.metrics_table.rowCount())}
    return cell(view.metrics_table, rows[title], 1)


def test_evaluate_two_versions_and_see_why_they_differ(
    qtbot, bench, tmp_path: Path, fast_ollama: FakeOllama
) -> None:
    window, integ = bench
    labels = tmp_path / "pitches.csv"
    rows = ["text,verdict"] + [
        f"message {i} <b>not bold</b>,{'remove' if t else 'keep'}" for i, t in enumerate(TRUTHS, 1)
    ]
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    view = open_bench(qtbot, window, integ)

    view.import_file(labels)  # "verdict" is not a known label column: the writer is asked
    qtbot.waitUntil(lambda: any(d.isVisible() for d in view.findChildren(ColumnsDialog)))
    columns = next(d for d in view.findChildren(ColumnsDialog) if d.isVisible())
    assert columns.text_column.currentText() == "text"
    columns.label_column.setCurrentText("verdict")
    columns.accept()
    # "remove"/"keep" are not built-in label values: the writer says which means violation
    qtbot.waitUntil(lambda: any(d.isVisible() for d in view.findChildren(PositiveDialog)))
    picker = next(d for d in view.findChildren(PositiveDialog) if d.isVisible())
    values = [picker.values.item(i).text() for i in range(picker.values.count())]
    assert sorted(values) == ["keep", "remove"]
    picker.values.item(values.index("remove")).setCheckState(Qt.CheckState.Checked)
    picker.accept()
    qtbot.waitUntil(lambda: view.current_set() is not None)
    assert view.current_set().items == 10 and view.current_set().violations == 5

    view.editor.setPlainText(POLICY.format(version="1", extra=""))
    assert "tokens" in view.size_note.text()
    answers(fast_ollama, A_SAYS)
    qtbot.mouseClick(view.evaluate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Run 1: 10 items measured" in view.message.text(), timeout=30_000)
    qtbot.waitUntil(lambda: view.detail is not None and view.detail.info.id == 1)
    assert [metric(view, t) for t in ("True positives", "False negatives", "False positives",
                                       "True negatives")] == ["2", "3", "2", "3"]  # fmt: skip
    assert metric(view, "Precision") == "0.500" and metric(view, "Recall") == "0.400"
    assert [cell(view.confusion, 0, c) for c in range(3)] == ["2", "3", "0"]
    assert [cell(view.confusion, 1, c) for c in range(3)] == ["2", "3", "0"]
    view.confusion.cellClicked.emit(0, 1)  # truly violation, predicted safe: items 1-3
    assert [cell(view.cell_items, r, 0) for r in range(view.cell_items.rowCount())] == [
        "1", "2", "3"]  # fmt: skip
    assert "<b>not bold</b>" in cell(view.cell_items, 0, 4)  # shown as text, not markup

    view.editor.setPlainText(POLICY.format(version="2", extra="\n- SA2.b Asks for money."))
    assert "edited" in view.size_note.text()
    answers(fast_ollama, B_SAYS)
    qtbot.mouseClick(view.evaluate_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Run 2: 10 items measured" in view.message.text(), timeout=30_000)
    qtbot.waitUntil(lambda: view.runs_table.rowCount() == 2)
    qtbot.waitUntil(lambda: view.detail is not None and view.detail.info.id == 2)
    assert metric(view, "True positives") == "5" and metric(view, "Recall") == "1.000"
    assert [len(view.chart_points[k]) for k in ("f1", "precision", "recall")] == [2, 2, 2]
    assert view.chart_points["recall"][1] == (1, 1.0)  # version 2 catches every violation

    view.compare()
    qtbot.waitUntil(lambda: view.flips_table.rowCount() == 6)
    assert "McNemar exact p = 0.219" in view.compare_summary.text()
    assert [cell(view.flips_table, r, 0) for r in range(6)] == ["1", "2", "3", "5", "6", "10"]
    dialog = view.open_flip(0)
    assert isinstance(dialog, FlipDialog)
    qtbot.waitUntil(lambda: dialog.reasoning_a.toPlainText().startswith("Reasoning for 0"))
    assert dialog.reasoning_b.toPlainText().startswith("Reasoning for 1")
    assert "+- SA2.b Asks for money." in dialog.diff.toPlainText()
    dialog.close()

    cli_view = window.ctx.evaluations().compare(1, 2).to_json()  # the CLI's figures
    assert cli_view["a"]["tp"] == 2 and cli_view["b"]["tp"] == 5
    assert json.dumps(cli_view["mcnemar_p"])[:5] == "0.218"
    view.tabs.setCurrentIndex(0)
    save_screenshot(window, tmp_path, "workbench", publish=True)


def test_the_workbench_is_built_only_when_first_shown(qtbot, bench) -> None:
    window, integ = bench
    assert integ.view is None  # the window opened without the charting library's cost
    open_bench(qtbot, window, integ)
    assert integ.view is not None and QApplication.focusWidget() is integ.view.editor
