"""The policy workbench (Ctrl+5): edit a policy, measure it on a labelled set, compare versions.

Left, the policy editor with its lint findings and token count (the usage guide's 400-600
sweet spot shown). Right, a labelled set, Evaluate (the batch runner, with progress), and
the results: the runs of the set, one run's metrics with 95% intervals, its confusion
matrix as a heat map (click a cell: its items), a chart of F1 / precision / recall across
the policy's versions (pyqtgraph), and a comparison of two runs with McNemar's exact test
and the flips (double-click one: both reasonings and the policy diff side by side).

All reading and writing goes through `Session.evaluations()` on worker threads; the text of
items, reasonings and policies is shown as plain text only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import pyqtgraph as pg

from safeguard_desktop import paths
from safeguard_desktop.core.metrics import Metrics
from safeguard_desktop.core.policy import Policy, PolicyError, lint, parse_policy
from safeguard_desktop.core.policy_lint import SWEET_SPOT, estimate_tokens
from safeguard_desktop.core.vocabulary import EFFORTS
from safeguard_desktop.qt import (
    QAbstractItemView,
    QAction,
    QColor,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFont,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QKeySequence,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    Qt,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.evaluation import (
    ComparisonView,
    EvaluationError,
    EvaluationService,
    FlipView,
    ItemPrediction,
    RunDetail,
    RunInfo,
    SetInfo,
)
from safeguard_desktop.services.history_service import HistoryError
from safeguard_desktop.services.queue_service import EngineError, Progress
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper, dialog_result
from safeguard_desktop.ui.message_bar import InlineMessage
from safeguard_desktop.ui.queue_view import progress_text
from safeguard_desktop.ui.theme import titled_pane
from safeguard_desktop.ui.verdict_panel import plain_label

log = logging.getLogger("safeguard.ui.workbench")

METRIC_ROWS = (
    ("n", "Items", False),
    ("tp", "True positives", False),
    ("fp", "False positives", False),
    ("tn", "True negatives", False),
    ("fn", "False negatives", False),
    ("unparsed", "Unparsed / incomplete / failed", False),
    ("precision", "Precision", True),
    ("recall", "Recall", True),
    ("f1", "F1", False),
    ("accuracy", "Accuracy", True),
    ("fpr", "False-positive rate", True),
    ("kappa", "Cohen's κ", False),
    ("median_seconds", "Median seconds per item", False),
    ("median_tokens", "Median tokens per item", False),
)
PREDICTED = ("violation", "safe", "unclear")  # unclear: unparsed, incomplete, failed
CHART_SERIES = (
    ("f1", "F1", "#1f77b4"),
    ("precision", "Precision", "#2ca02c"),
    ("recall", "Recall", "#d62728"),
)
NO_SET = "No labelled set yet: Import… one (JSONL, CSV, a queue export)"


def figure(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def interval(ci: object) -> str:
    if isinstance(ci, list | tuple) and len(ci) == 2:
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    return ""


def predicted_column(item: ItemPrediction) -> str | None:
    if item.predicted is None:
        return None
    return item.predicted if item.predicted in ("violation", "safe") else "unclear"


def token_note(tokens: int) -> tuple[str, str]:
    """(text, level) for the policy's size against the usage guide's sweet spot."""
    low, high = SWEET_SPOT
    if low <= tokens <= high:
        return f"≈ {tokens} tokens · in the {low}-{high} sweet spot", "ok"
    side = "below" if tokens < low else "above"
    return f"≈ {tokens} tokens · {side} the {low}-{high} sweet spot", "warning"


class PositiveDialog(QDialog):
    """Which label values mean violation (the file's values are not the usual ones)."""

    def __init__(self, values: Sequence[str], message: str, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("positiveDialog")
        self.setWindowTitle("Which labels mean violation?")
        note = QLabel(message, self)
        note.setWordWrap(True)
        note.setTextFormat(Qt.TextFormat.PlainText)
        self.values = QListWidget(self)
        for value in values:
            item = QListWidgetItem(value, self.values)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Unchecked)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.values, 1)
        layout.addWidget(buttons)

    def chosen(self) -> list[str]:
        return [
            self.values.item(i).text()
            for i in range(self.values.count())
            if self.values.item(i).checkState() == Qt.CheckState.Checked
        ]


class ColumnsDialog(QDialog):
    """The text and label columns of a file whose columns could not be guessed."""

    def __init__(self, columns: Sequence[str], message: str, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("columnsDialog")
        self.setWindowTitle("Which columns?")
        note = QLabel(message, self)
        note.setWordWrap(True)
        note.setTextFormat(Qt.TextFormat.PlainText)
        self.text_column = QComboBox(self)
        self.label_column = QComboBox(self)
        self.text_column.addItems(list(columns))
        self.label_column.addItems(list(columns))
        if len(columns) > 1:
            self.label_column.setCurrentIndex(1)
        form = QFormLayout()
        form.addRow("&Text column", self.text_column)
        form.addRow("&Label column", self.label_column)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addLayout(form)
        layout.addWidget(buttons)


class FlipDialog(QDialog):
    """One flipped item: the two reasonings side by side, the content, the policy diff."""

    def __init__(self, flip: FlipView, comparison: ComparisonView, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("flipDialog")
        truth = "violation" if flip.truth else "safe"
        self.setWindowTitle(f"Item {flip.position}: truth {truth}, A {flip.a}, B {flip.b}")
        self.content = self._text(flip.text)
        self.reasoning_a = self._text("Loading…")
        self.reasoning_b = self._text("Loading…")
        self.diff = self._text(comparison.policy_diff or "The two runs used the same policy.")
        sides = QSplitter(Qt.Orientation.Horizontal, self)
        sides.addWidget(titled_pane(f"Run {comparison.a.id}: {flip.a}", self.reasoning_a, sides))
        sides.addWidget(titled_pane(f"Run {comparison.b.id}: {flip.b}", self.reasoning_b, sides))
        tabs = QTabWidget(self)
        tabs.addTab(sides, "Reasonings")
        tabs.addTab(self.diff, "Policy diff (A → B)")
        layout = QVBoxLayout(self)
        layout.addWidget(titled_pane("Content", self.content, self), 1)
        layout.addWidget(tabs, 3)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.resize(1100, 720)

    def _text(self, text: str) -> QPlainTextEdit:
        edit = QPlainTextEdit(self)
        edit.setReadOnly(True)
        edit.setPlainText(text)
        return edit


class WorkbenchView(QWidget):
    """Signals: evaluated(int): a run finished (its id)."""

    evaluated = Signal(int)

    def __init__(self, ctx: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("workbenchView")
        self.ctx = ctx
        self._tasks = TaskKeeper()
        self.policies: list[Policy] = []
        self.sets: list[SetInfo] = []
        self.runs: list[RunInfo] = []
        self.run_metrics: dict[int, Metrics] = {}
        self.detail: RunDetail | None = None
        self.comparison: ComparisonView | None = None
        self.stop: asyncio.Event | None = None
        self.source_text = ""  # the policy as loaded, to tell an edited draft
        self.editor_policy_id = "policy"  # the id of the text in the editor
        self._wanted_run: int | None = None  # the run whose figures are to be shown
        self.dialogs: list[QDialog] = []

        self._build()
        self.actions_by_name = self._build_actions()
        self.refresh()

    # --- building -------------------------------------------------------------------------

    def _build(self) -> None:
        self.policy_picker = QComboBox(self)
        self.policy_picker.setObjectName("workbenchPolicy")
        self.policy_picker.activated.connect(lambda i: self.load_policy(i))
        self.editor = QPlainTextEdit(self)
        self.editor.setObjectName("policyEditor")
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.Monospace)
        self.editor.setFont(mono)
        self.editor.textChanged.connect(self._policy_edited)
        self.size_note = plain_label(self, "policyTokens", wrap=False)
        self.lint_list = QListWidget(self)
        self.lint_list.setObjectName("lintList")
        self.lint_list.setMaximumHeight(self.fontMetrics().height() * 6)
        left = QWidget(self)
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)
        col.addWidget(self.policy_picker)
        col.addWidget(
            titled_pane("Policy (edit freely: each text is its own version)", self.editor, left), 1
        )
        col.addWidget(self.size_note)
        col.addWidget(self.lint_list)

        self.set_picker = QComboBox(self)
        self.set_picker.setObjectName("labelledSet")
        self.set_picker.activated.connect(lambda _i: self._set_chosen())
        self.import_button = QPushButton("&Import…", self)
        self.import_button.setToolTip(
            "A labelled set: JSONL, CSV (also with section rows), or a queue export"
        )
        self.import_button.clicked.connect(self.import_dialog)
        self.effort_picker = QComboBox(self)
        self.effort_picker.addItem("policy / setting", None)
        for effort in EFFORTS:
            self.effort_picker.addItem(effort, effort)
        self.evaluate_button = QPushButton("E&valuate", self)
        self.evaluate_button.setObjectName("evaluateButton")
        self.evaluate_button.setToolTip(
            "Classify every item of the set with this policy (Ctrl+Shift+Enter)"
        )
        self.evaluate_button.clicked.connect(self.evaluate)
        self.stop_button = QPushButton("Stop", self)
        self.stop_button.clicked.connect(self.stop_run)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar(self)
        self.progress.setObjectName("evalProgress")
        self.progress_text = plain_label(self, "evalRate", wrap=False)
        self.message = InlineMessage(self)

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Labelled set", self))
        bar.addWidget(self.set_picker, 1)
        bar.addWidget(self.import_button)
        bar.addWidget(QLabel("Effort", self))
        bar.addWidget(self.effort_picker)
        bar.addWidget(self.evaluate_button)
        bar.addWidget(self.stop_button)
        progress = QHBoxLayout()
        progress.addWidget(self.progress, 1)
        progress.addWidget(self.progress_text)

        self.runs_table = self._table(
            ("Run", "Policy", "Version", "Model", "Effort", "Done", "F1", "Precision", "Recall"),
            "evalRuns",
        )
        self.runs_table.itemSelectionChanged.connect(self._run_chosen)
        self.metrics_table = self._table(("Metric", "Value", "95% interval"), "evalMetrics")
        self.confusion = self._table(
            ("Predicted violation", "Predicted safe", "Unclear"), "confusionMatrix"
        )
        self.confusion.setRowCount(2)
        self.confusion.setVerticalHeaderLabels(["Truly violation", "Truly safe"])
        self.confusion.verticalHeader().show()
        self.confusion.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.confusion.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.confusion.cellClicked.connect(self.show_cell_items)
        self.cell_items = self._table(("Item", "Ref", "Truth", "Predicted", "Text"), "cellItems")
        self.chart = pg.PlotWidget(self)
        self.chart.setObjectName("versionsChart")
        self.chart.setBackground("w")
        self.chart.setYRange(0, 1)
        self.chart.showGrid(x=False, y=True, alpha=0.3)
        self.chart.addLegend(offset=(10, 10))
        self.chart.getPlotItem().setLabel("left", "score")
        self.chart.getPlotItem().setLabel("bottom", "runs of this policy on this set, oldest first")
        self.chart_points: dict[str, list[tuple[int, float]]] = {}

        self.compare_a = QComboBox(self)
        self.compare_b = QComboBox(self)
        self.compare_button = QPushButton("&Compare", self)
        self.compare_button.clicked.connect(self.compare)
        self.compare_summary = plain_label(self, "compareSummary")
        self.compare_table = self._table(("Metric", "A", "B", "B − A"), "compareMetrics")
        self.flips_table = self._table(("Item", "Truth", "A", "B", "Text"), "flipsTable")
        self.flips_table.doubleClicked.connect(lambda index: self.open_flip(index.row()))

        results = QWidget(self)
        grid = QVBoxLayout(results)
        grid.setContentsMargins(0, 0, 0, 0)
        figures = QSplitter(Qt.Orientation.Horizontal, results)
        figures.addWidget(titled_pane("Metrics", self.metrics_table, figures))
        right = QSplitter(Qt.Orientation.Vertical, figures)
        right.addWidget(titled_pane("Confusion matrix (click a cell)", self.confusion, right))
        right.addWidget(titled_pane("Items of the cell", self.cell_items, right))
        figures.addWidget(right)
        grid.addWidget(titled_pane("Runs on this set", self.runs_table, results), 1)
        grid.addWidget(figures, 3)
        compare = QWidget(self)
        ccol = QVBoxLayout(compare)
        pick = QHBoxLayout()
        pick.addWidget(QLabel("A", compare))
        pick.addWidget(self.compare_a, 1)
        pick.addWidget(QLabel("B", compare))
        pick.addWidget(self.compare_b, 1)
        pick.addWidget(self.compare_button)
        ccol.addLayout(pick)
        ccol.addWidget(self.compare_summary)
        ccol.addWidget(self.compare_table, 2)
        ccol.addWidget(
            titled_pane("Flips (double-click: both reasonings)", self.flips_table, compare), 3
        )
        self.tabs = QTabWidget(self)
        self.tabs.addTab(results, "Results")
        self.tabs.addTab(self.chart, "Across versions")
        self.tabs.addTab(compare, "Compare two runs")

        right_col = QWidget(self)
        rcol = QVBoxLayout(right_col)
        rcol.setContentsMargins(0, 0, 0, 0)
        rcol.addLayout(bar)
        rcol.addLayout(progress)
        rcol.addWidget(self.message)
        rcol.addWidget(self.tabs, 1)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(right_col)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        layout = QVBoxLayout(self)
        layout.addWidget(split)

    def _table(self, columns: Sequence[str], name: str) -> QTableWidget:
        table = QTableWidget(0, len(columns), self)
        table.setObjectName(name)
        table.setHorizontalHeaderLabels(list(columns))
        table.verticalHeader().hide()
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.setAlternatingRowColors(True)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        return table

    def _build_actions(self) -> dict[str, QAction]:
        specs: list[tuple[str, str, Callable[[], object], list[str]]] = [
            ("evaluate", "&Evaluate the policy", self.evaluate, []),  # key: the menu's
            ("stop", "&Stop the evaluation", self.stop_run, []),
            ("import", "&Import a labelled set…", self.import_dialog, []),
            ("compare", "&Compare two runs", self.compare, []),
        ]
        actions: dict[str, QAction] = {}
        for name, text, slot, keys in specs:
            action = QAction(text, self)
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.triggered.connect(lambda _checked=False, s=slot: s())
            self.addAction(action)
            actions[name] = action
        return actions

    # --- loading ----------------------------------------------------------------------------

    def service(self) -> EvaluationService:
        return self.ctx.evaluations()

    def refresh(self) -> None:
        self._tasks.spawn(self._refresh(), name="workbench-refresh")

    async def _refresh(self) -> None:
        def read() -> tuple[list[Policy], list[SetInfo], list[RunInfo], dict[int, Metrics]]:
            policies, _problems = self.ctx.policies()
            service = self.service()
            runs = service.list()
            return policies, service.sets(), runs, {r.id: service.metrics(r.id) for r in runs}

        try:
            policies, sets, runs, metrics = await asyncio.to_thread(read)
        except (HistoryError, EvaluationError) as exc:
            self.message.show_message(str(exc), "error")
            return
        first = not self.policies
        self.policies = policies
        self.policy_picker.clear()
        for policy in policies:
            self.policy_picker.addItem(f"{policy.title} ({policy.id})", policy.id)
        if first and policies and not self.editor.toPlainText():
            self.load_policy(0)
        chosen = self.set_picker.currentData()
        self.sets = sets
        self.set_picker.clear()
        for s in sets:
            self.set_picker.addItem(f"{s.name} · {s.items} items ({s.violations} violations)", s.id)
        if not sets:
            self.set_picker.addItem(NO_SET, None)
        index = self.set_picker.findData(chosen)
        self.set_picker.setCurrentIndex(max(index, 0))
        self.runs = runs
        self.run_metrics = metrics
        self._show_runs()

    def load_policy(self, index: int) -> None:
        if not 0 <= index < len(self.policies):
            return
        policy = self.policies[index]
        self.policy_picker.setCurrentIndex(index)
        self.source_text = policy.text
        self.editor.setPlainText(policy.text)

    def _policy_edited(self) -> None:
        text = self.editor.toPlainText()
        tokens = estimate_tokens(text)
        note, level = token_note(tokens)
        self.lint_list.clear()
        try:
            policy = parse_policy(text.encode("utf-8"), source=Path(f"{self._policy_id()}.md"))
            self.editor_policy_id = policy.id
        except PolicyError as exc:
            self.size_note.setText(note)
            self.lint_list.addItem(f"error: {exc}")
            return
        issues = lint(policy)
        for issue in issues:
            where = f" (line {issue.line})" if issue.line else ""
            self.lint_list.addItem(f"{issue.severity}{where}: {issue.message}")
        errors = sum(1 for i in issues if i.severity == "error")
        found = len(issues)
        lint_text = "lint clean" if not issues else f"{found} lint finding{'s' * (found != 1)}"
        if errors:
            lint_text += f", {errors} error{'s' * (errors != 1)}"
        draft = " · edited (a new version)" if text != self.source_text else ""
        self.size_note.setText(f"{note} · {lint_text}{draft}")
        self.size_note.setProperty("level", level if not errors else "error")

    def _policy_id(self) -> str:
        return str(self.policy_picker.currentData() or "policy")

    # --- labelled sets ----------------------------------------------------------------------

    def _set_chosen(self) -> None:
        self._show_runs()

    def current_set(self) -> SetInfo | None:
        set_id = self.set_picker.currentData()
        return next((s for s in self.sets if s.id == set_id), None)

    def import_dialog(self) -> None:
        dialog = QFileDialog(
            self,
            "Import a labelled set",
            str(Path.home()),
            "Labelled sets (*.jsonl *.json *.csv *.gz);;All files (*)",
        )
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(lambda path: self.import_file(Path(path)))
        dialog.open()
        self.dialogs.append(dialog)

    def import_file(self, path: Path, **options: object) -> None:
        self._tasks.spawn(self._import(path, dict(options)), name="workbench-import")

    async def _import(self, path: Path, options: dict[str, object]) -> None:
        try:
            info = await asyncio.to_thread(lambda: self.service().import_set(path, **options))  # type: ignore[arg-type]
        except EvaluationError as exc:
            await self._ask_and_retry(path, options, exc)
            return
        except HistoryError as exc:
            self.message.show_message(str(exc), "error")
            return
        what = "found again" if info.reused else "imported"
        self.message.show_message(
            f"{info.name}: {info.items} items {what} ({info.violations} violations, "
            f"{info.safe} safe; {info.left_out} rows without a label left out).",
            "info",
        )
        await self._refresh()
        self.set_picker.setCurrentIndex(max(self.set_picker.findData(info.id), 0))
        self._show_runs()

    async def _ask_and_retry(
        self, path: Path, options: dict[str, object], exc: EvaluationError
    ) -> None:
        """A file the import could not read alone: ask for the columns or the labels that
        mean violation, then try again; anything else is said as it is."""
        if exc.columns and "text_column" not in options:
            columns = ColumnsDialog(exc.columns, str(exc), self)
            self.dialogs.append(columns)
            if await dialog_result(columns) == QDialog.DialogCode.Accepted:
                options.update(
                    text_column=columns.text_column.currentText(),
                    label_column=columns.label_column.currentText(),
                )
                self.import_file(path, **options)
            return
        if exc.values and "positive" not in options:
            picker = PositiveDialog(exc.values, str(exc), self)
            self.dialogs.append(picker)
            if await dialog_result(picker) == QDialog.DialogCode.Accepted and picker.chosen():
                self.import_file(path, **options, positive=picker.chosen())
            return
        self.message.show_message(str(exc), "error")

    # --- evaluating -------------------------------------------------------------------------

    def evaluate(self) -> None:
        if self.stop is not None:
            self.message.show_message("An evaluation is running; Stop it first.", "warning")
            return
        labelled = self.current_set()
        if labelled is None:
            self.message.show_message("Import a labelled set first (Import…).", "warning")
            return
        text = self.editor.toPlainText()
        if not text.strip():
            self.message.show_message("The policy is empty: write or choose one.", "warning")
            return
        self.stop = asyncio.Event()
        self.evaluate_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.message.dismiss()
        self._tasks.spawn(self._evaluate(text, labelled, self.stop), name="workbench-evaluate")

    async def _evaluate(self, text: str, labelled: SetInfo, stop: asyncio.Event) -> None:
        def progress(p: Progress) -> None:
            self.progress.setMaximum(max(p.total, 1))
            self.progress.setValue(p.done)
            self.progress_text.setText(progress_text(p))

        try:
            path = await asyncio.to_thread(save_draft, text, self.editor_policy_id)
            outcome = await self.service().run(
                str(path),
                labelled.name,
                effort=self.effort_picker.currentData(),
                on_progress=progress,
                on_warning=lambda text: self.message.show_message(text, "warning"),
                stop=stop,
            )
        except (EvaluationError, HistoryError, EngineError, PolicyError) as exc:
            self.message.show_message(f"The evaluation stopped: {exc}", "error")
            return
        finally:
            self.stop = None
            self.evaluate_button.setEnabled(True)
            self.stop_button.setEnabled(False)
        info = outcome.info
        if info.finished:
            text_done = "measured" if not outcome.reused else "already measured (nothing sent)"
            self.message.show_message(f"Run {info.id}: {info.total} items {text_done}.", "info")
        else:
            self.message.show_message(
                f"Run {info.id} stopped at {info.done} of {info.total}: Evaluate continues it.",
                "info",
            )
        await self._refresh()
        self.select_run(info.id)
        self.evaluated.emit(info.id)

    def stop_run(self) -> None:
        if self.stop is not None:
            self.stop.set()
            self.progress_text.setText("Stopping: the items in flight finish first…")

    # --- results ----------------------------------------------------------------------------

    def set_runs(self) -> list[RunInfo]:
        labelled = self.current_set()
        if labelled is None:
            return []
        return sorted((r for r in self.runs if r.set_id == labelled.id), key=lambda r: r.id)

    def _show_runs(self) -> None:
        runs = self.set_runs()
        selected = self._wanted_run
        self.runs_table.blockSignals(True)
        self.runs_table.setRowCount(len(runs))
        for row, run in enumerate(runs):
            m = self.run_metrics.get(run.id)
            version = run.policy_version or run.policy_sha256[:12]
            cells = (
                run.id,
                run.policy_id,
                version,
                run.model,
                run.effort,
                f"{run.done}/{run.total}",
                figure(m.f1 if m else None),
                figure(m.precision if m else None),
                figure(m.recall if m else None),
            )
            for col, value in enumerate(cells):
                self.runs_table.setItem(row, col, QTableWidgetItem(str(value)))
        self.runs_table.blockSignals(False)
        for box in (self.compare_a, self.compare_b):
            box.clear()
            for run in runs:
                box.addItem(
                    f"run {run.id} · {run.policy_id} {run.policy_sha256[:8]} · "
                    f"{run.model} · {run.effort}",
                    run.id,
                )
        if len(runs) >= 2:
            self.compare_a.setCurrentIndex(len(runs) - 2)
            self.compare_b.setCurrentIndex(len(runs) - 1)
        self._draw_chart(runs)
        target = (
            selected if any(r.id == selected for r in runs) else (runs[-1].id if runs else None)
        )
        if target is not None:
            self.select_run(target)
        else:
            self.detail = None
            self._wanted_run = None
            self.metrics_table.setRowCount(0)
            self._fill_confusion([])

    def select_run(self, run_id: int) -> None:
        rows = [r.id for r in self.set_runs()]
        if run_id in rows:
            self._wanted_run = run_id
            self.runs_table.blockSignals(True)
            self.runs_table.selectRow(rows.index(run_id))
            self.runs_table.blockSignals(False)
            self._tasks.spawn(self._load_run(run_id), name="workbench-run")

    def _run_chosen(self) -> None:
        rows = self.runs_table.selectionModel().selectedRows()
        runs = self.set_runs()
        if rows and 0 <= rows[0].row() < len(runs):
            self.select_run(runs[rows[0].row()].id)

    async def _load_run(self, run_id: int) -> None:
        try:
            detail = await asyncio.to_thread(self.service().show, run_id)
        except (EvaluationError, HistoryError) as exc:
            self.message.show_message(str(exc), "error")
            return
        if run_id != self._wanted_run:
            return  # another run was chosen meanwhile: its figures come with its own load
        self.detail = detail
        self._fill_metrics(detail.metrics)
        self._fill_confusion(detail.items)
        self.cell_items.setRowCount(0)

    def _fill_metrics(self, metrics: Metrics) -> None:
        data = metrics.to_json()
        self.metrics_table.setRowCount(len(METRIC_ROWS))
        for row, (key, title, has_ci) in enumerate(METRIC_ROWS):
            ci = interval(data.get(f"{key}_ci")) if has_ci else ""
            for col, value in enumerate((title, figure(data.get(key)), ci)):
                self.metrics_table.setItem(row, col, QTableWidgetItem(value))

    def _fill_confusion(self, items: Sequence[ItemPrediction]) -> None:
        counts = {(t, p): 0 for t in (True, False) for p in PREDICTED}
        for item in items:
            column = predicted_column(item)
            if column is not None:
                counts[(item.truth, column)] += 1
        top = max(counts.values(), default=0) or 1
        for row, truth in enumerate((True, False)):
            for col, predicted in enumerate(PREDICTED):
                count = counts[(truth, predicted)]
                cell = QTableWidgetItem(str(count))
                cell.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                right = (predicted == "violation") == truth and predicted != "unclear"
                base = QColor(46, 125, 50) if right else QColor(198, 40, 40)
                alpha = 40 + int(200 * count / top) if count else 0
                base.setAlpha(alpha)
                cell.setBackground(base)
                cell.setToolTip(
                    f"{count} items: truth {'violation' if truth else 'safe'}, "
                    f"predicted {predicted}"
                )
                self.confusion.setItem(row, col, cell)

    def cell_predictions(self, row: int, column: int) -> list[ItemPrediction]:
        if self.detail is None or not 0 <= row < 2 or not 0 <= column < len(PREDICTED):
            return []
        truth, predicted = row == 0, PREDICTED[column]
        return [
            i for i in self.detail.items if i.truth == truth and predicted_column(i) == predicted
        ]

    def show_cell_items(self, row: int, column: int) -> None:
        items = self.cell_predictions(row, column)
        self.cell_items.setRowCount(len(items))
        for r, item in enumerate(items):
            values = (
                item.position,
                item.ref or "",
                "violation" if item.truth else "safe",
                item.predicted or "",
                item.text.replace("\n", " ")[:300],
            )
            for c, value in enumerate(values):
                self.cell_items.setItem(r, c, QTableWidgetItem(str(value)))

    def _draw_chart(self, runs: Sequence[RunInfo]) -> None:
        """F1, precision and recall of every run of the chosen policy id on this set."""
        plot = self.chart.getPlotItem()
        plot.clear()
        policy_id = self.editor_policy_id
        mine = [r for r in runs if r.policy_id == policy_id] or list(runs)
        self.chart_points = {}
        ticks = [
            (n, f"run {r.id}\n{r.policy_version or r.policy_sha256[:8]}")
            for n, r in enumerate(mine)
        ]
        for key, title, colour in CHART_SERIES:
            points = [
                (n, float(getattr(self.run_metrics[r.id], key)))
                for n, r in enumerate(mine)
                if r.id in self.run_metrics and getattr(self.run_metrics[r.id], key) is not None
            ]
            self.chart_points[key] = points
            if points:
                plot.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    name=title,
                    pen=pg.mkPen(colour, width=2),
                    symbol="o",
                    symbolBrush=colour,
                )
        plot.getAxis("bottom").setTicks([ticks])
        plot.setXRange(-0.5, max(len(mine) - 0.5, 0.5))
        plot.setYRange(0, 1.05)

    # --- comparing --------------------------------------------------------------------------

    def compare(self) -> None:
        a, b = self.compare_a.currentData(), self.compare_b.currentData()
        if a is None or b is None or a == b:
            self.message.show_message(
                "Choose two different runs of this set to compare.", "warning"
            )
            return
        self.tabs.setCurrentIndex(2)
        self._tasks.spawn(self._compare(int(a), int(b)), name="workbench-compare")

    async def _compare(self, a: int, b: int) -> None:
        try:
            view = await asyncio.to_thread(self.service().compare, a, b)
        except (EvaluationError, HistoryError) as exc:
            self.message.show_message(str(exc), "error")
            return
        self.comparison = view
        c = view.comparison
        a_json, b_json = c.a.to_json(), c.b.to_json()
        keys = [k for k, _t, _ci in METRIC_ROWS]
        self.compare_table.setRowCount(len(keys))
        for row, (key, title, _ci) in enumerate(METRIC_ROWS):
            diff = c.difference.get(key)
            values = (
                title,
                figure(a_json.get(key)),
                figure(b_json.get(key)),
                "—"
                if diff is None
                else f"{diff:+.3f}"
                if isinstance(diff, float)
                else f"{diff:+d}",
            )
            for col, value in enumerate(values):
                self.compare_table.setItem(row, col, QTableWidgetItem(value))
        chance = "more than chance" if c.mcnemar_p < 0.05 else "within chance"
        self.compare_summary.setText(
            f"{len(view.flips)} flips · only A right on {c.only_a_correct}, only B right on "
            f"{c.only_b_correct} · McNemar exact p = {c.mcnemar_p:.3g} ({chance} at 5%)"
        )
        self.flips_table.setRowCount(len(view.flips))
        for row, flip in enumerate(view.flips):
            flip_values = (
                flip.position,
                "violation" if flip.truth else "safe",
                flip.a,
                flip.b,
                flip.text.replace("\n", " ")[:300],
            )
            for col, flip_value in enumerate(flip_values):
                self.flips_table.setItem(row, col, QTableWidgetItem(str(flip_value)))

    def open_flip(self, row: int) -> FlipDialog | None:
        view = self.comparison
        if view is None or not 0 <= row < len(view.flips):
            return None
        flip = view.flips[row]
        dialog = FlipDialog(flip, view, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self._tasks.spawn(self._fill_flip(dialog, flip), name="workbench-flip")
        return dialog

    async def _fill_flip(self, dialog: FlipDialog, flip: FlipView) -> None:
        history = self.ctx.history
        if history is None:
            return

        def read(review_id: int | None) -> str:
            if review_id is None:
                return "No review of this item in this run."
            review = history.get(review_id)
            if review is None:
                return f"Review #{review_id} is no longer in the history."
            answer = f"\n\n— Answer —\n{review.answer}" if review.answer else ""
            return (review.reasoning or "(no reasoning)") + answer

        try:
            a, b = await asyncio.to_thread(lambda: (read(flip.review_a), read(flip.review_b)))
        except HistoryError as exc:
            a = b = str(exc)
        try:
            dialog.reasoning_a.setPlainText(a)
            dialog.reasoning_b.setPlainText(b)
        except RuntimeError:  # closed meanwhile
            pass

    # --- lifecycle --------------------------------------------------------------------------

    def focus(self) -> None:
        self.editor.setFocus(Qt.FocusReason.OtherFocusReason)

    async def shutdown(self) -> None:
        self.stop_run()
        await self._tasks.wait_all(timeout=15)


def save_draft(text: str, policy_id: str) -> Path:
    """The editor's text as a file the evaluation reads: <data>/workbench/<sha12>/<id>.md,
    so a text without front matter keeps its policy id. Each text is its own version."""
    import hashlib

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    folder = paths.data_dir() / "workbench" / digest
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{policy_id}.md"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path
