"""The models half of the Server panel: installed table, get a model, loaded models in VRAM.

Queries (tags, ps, show, fit) run as short tasks here; long operations go through the
shared `ModelOps`. Messages go out through `notice` so the panel shows them in one place.

Signals:
    notice(str, str): a sentence and its level ("info", "warning", "error").
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from safeguard_desktop.qt import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    Qt,
    QTableView,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.models_service import (
    EngineError,
    FitCheck,
    ModelDetails,
)
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import BY_NAME
from safeguard_desktop.ui.async_utils import TaskKeeper, dialog_result
from safeguard_desktop.ui.model_ops import ModelOps, Outcome
from safeguard_desktop.ui.models_table import LoadedModelsView, ModelsTableModel
from safeguard_desktop.ui.progress_row import ProgressRow, human_size

log = logging.getLogger("safeguard.ui.models")
DEFAULT_MODEL = str(BY_NAME["model"].default)  # the registry's, whatever the setting holds
GGUF_FILTER = "GGUF model files (*.gguf);;All files (*)"
BUNDLE_FILTER = "Model bundles (*.tar);;All files (*)"
LEVEL_COLOURS = {"ok": "#1a7f37", "warning": "#b45309", "error": "#c62828"}


def fit_text(fit: FitCheck, details: ModelDetails | None) -> tuple[str, str]:
    """The fit sentence (plus a missing-capability warning) and its level."""
    level = {True: "ok", False: "error", None: "warning"}[fit.fits]
    lines = [fit.message]
    if details is not None and details.warnings():
        lines.extend(details.warnings())
        level = "error" if level == "error" else "warning"
    return " ".join(lines), level


def gguf_model_name(path: Path) -> str:
    """An Ollama model name from a GGUF file name: lower case, safe characters, and a tag
    from a trailing size such as -20b (gpt-oss-safeguard-20b.gguf -> gpt-oss-safeguard:20b)."""
    stem = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-.") or "imported"
    found = re.fullmatch(r"(.+?)[-_](\d+(?:\.\d+)?b)(?:[-_.].*)?", stem)
    return f"{found.group(1)}:{found.group(2)}" if found else stem


class ModelsPanel(QWidget):
    notice = Signal(str, str)

    def __init__(self, ctx: Session, ops: ModelOps, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctx = ctx
        self.ops = ops
        self._tasks = TaskKeeper()
        self._dialogs: list[QWidget] = []
        self.last_dialog: QWidget | None = None  # the latest confirmation or file dialog
        self.fit: FitCheck | None = None
        self.closed = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._installed_box(), 3)
        layout.addWidget(self._get_box())
        layout.addWidget(self._loaded_box(), 1)
        ops.busy_changed.connect(self._busy_changed)
        ops.finished.connect(self._op_finished)
        ops.models_changed.connect(self.refresh)
        self._update_buttons()

    # -- building --------------------------------------------------------------------------------
    def _installed_box(self) -> QGroupBox:
        box = QGroupBox("Installed models", self)
        layout = QVBoxLayout(box)
        self.model = ModelsTableModel(self)
        self.table = QTableView(box)
        self.table.setTabKeyNavigation(False)  # Tab leaves the table (rows move with arrows)
        self.table.setObjectName("modelsTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, self.model.columnCount()):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.selectionModel().selectionChanged.connect(self._selection_changed)
        layout.addWidget(self.table)

        self.fit_label = QLabel(box)
        self.fit_label.setObjectName("fitStatus")
        self.fit_label.setTextFormat(Qt.TextFormat.PlainText)
        self.fit_label.setWordWrap(True)
        layout.addWidget(self.fit_label)

        buttons = QHBoxLayout()
        self.refresh_button = self._button("&Refresh", "List installed and loaded models again")
        self.refresh_button.clicked.connect(self.refresh)
        self.warm_button = self._button("&Warm up", "Load the selected model now (checks it fits)")
        self.warm_button.clicked.connect(self.warm_selected)
        self.unload_button = self._button("&Unload", "Free the selected model's memory now")
        self.unload_button.clicked.connect(self.unload_selected)
        self.delete_button = self._button("&Delete…", "Remove the selected model from the server")
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button = self._button(
            "E&xport bundle…", "Write the selected model to one .tar file for an offline machine"
        )
        self.export_button.clicked.connect(self.export_selected)
        for button in (self.refresh_button, self.warm_button, self.unload_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.delete_button)
        layout.addLayout(buttons)
        return box

    def _get_box(self) -> QGroupBox:
        box = QGroupBox("Get a model", self)
        layout = QVBoxLayout(box)
        row = QHBoxLayout()
        self.pull_name = QLineEdit(str(self.ctx.settings["model"] or DEFAULT_MODEL), box)
        self.pull_name.setObjectName("pullName")
        self.pull_name.setPlaceholderText(DEFAULT_MODEL)
        self.pull_name.setToolTip("Model name in the Ollama library, e.g. gpt-oss-safeguard:20b")
        self.pull_name.returnPressed.connect(self.pull)
        self.pull_button = self._button("&Pull", "Download the model (a cancelled pull resumes)")
        self.pull_button.clicked.connect(self.pull)
        self.gguf_button = self._button(
            "Import &GGUF…", "Create the model named in Name from a local .gguf file (offline)"
        )
        self.gguf_button.clicked.connect(self.import_gguf)
        self.bundle_button = self._button(
            "Import &bundle…", "Place a bundle exported on another machine (works offline)"
        )
        self.bundle_button.clicked.connect(self.import_bundle)
        row.addWidget(QLabel("Name:", box))
        row.addWidget(self.pull_name, 1)
        row.addWidget(self.pull_button)
        row.addWidget(self.gguf_button)
        row.addWidget(self.bundle_button)
        layout.addLayout(row)
        self.progress = ProgressRow(self.ops, box)
        layout.addWidget(self.progress)
        return box

    def _loaded_box(self) -> QGroupBox:
        box = QGroupBox("Loaded models", self)
        layout = QVBoxLayout(box)
        self.loaded = LoadedModelsView(box)
        layout.addWidget(self.loaded)
        layout.addStretch(1)
        return box

    def _button(self, text: str, tip: str) -> QPushButton:
        button = QPushButton(text, self)
        button.setToolTip(tip)
        return button

    # -- state -----------------------------------------------------------------------------------
    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.models[rows[0].row()].name

    def select(self, name: str) -> bool:
        row = self.model.row_of(name)
        if row >= 0:
            self.table.selectRow(row)
        return row >= 0

    def _update_buttons(self) -> None:
        idle = not self.ops.busy
        chosen = self.selected_name() is not None
        for button in (self.warm_button, self.unload_button, self.delete_button):
            button.setEnabled(idle and chosen)
        self.export_button.setEnabled(idle and chosen)
        for button in (self.pull_button, self.gguf_button, self.bundle_button):
            button.setEnabled(idle)

    def _busy_changed(self, _busy: bool) -> None:
        self._update_buttons()

    def _op_finished(self, outcome: Outcome) -> None:
        self.notice.emit(outcome.message, outcome.level)
        name = self.selected_name()
        if name is not None and not self.closed and outcome.kind in ("warm", "unload"):
            self._tasks.spawn(self._check_fit(name), name="model-fit")  # it changed

    def _selection_changed(self, *_args: object) -> None:
        self._update_buttons()
        self.fit_label.clear()
        name = self.selected_name()
        if name is not None and not self.closed:
            self._tasks.spawn(self._check_fit(name), name="model-fit")

    # -- queries ---------------------------------------------------------------------------------
    def refresh(self) -> None:
        if not self.closed:
            self._tasks.spawn(self._refresh(), name="models-refresh")

    async def _refresh(self) -> None:
        async with self.ctx.models() as service:
            try:
                installed = await service.installed()
                loaded = await service.loaded()
            except EngineError as exc:
                self.model.set_models([])
                self.loaded.set_loaded([])
                self.fit_label.setText(f"No model list: {exc}")
                self.fit_label.setStyleSheet(f"color: {LEVEL_COLOURS['warning']};")
                return
        if not self.selected_name():
            self.fit_label.clear()
        if sorted(installed, key=lambda m: m.name) != self.model.models:
            selected = self.selected_name()  # now: the user may have clicked meanwhile
            self.model.set_models(installed)
            if selected:
                self.select(selected)
        if tuple(loaded) != self.loaded.loaded:
            self.loaded.set_loaded(loaded)
        self._update_buttons()
        vram = await service.vram()
        if vram.known:
            self.loaded.set_gpu(
                f"GPU memory: {human_size(vram.total)} total, {human_size(vram.free)} free."
            )
        else:
            self.loaded.set_gpu(f"GPU memory unknown: {vram.problem}.")

    async def _check_fit(self, name: str) -> FitCheck | None:
        """Show whether `name` fits in free GPU memory, and capability warnings, before warm-up."""
        async with self.ctx.models() as service:
            try:
                fit = await service.fit(name)
                details = await service.show(name)
            except EngineError as exc:
                if self.selected_name() == name:
                    self.fit_label.setText(str(exc))
                return None
        if self.selected_name() == name:
            text, level = fit_text(fit, details)
            self.fit_label.setText(text)
            self.fit_label.setStyleSheet(f"color: {LEVEL_COLOURS[level]};")
        self.fit = fit
        return fit

    # -- actions ---------------------------------------------------------------------------------
    def pull(self) -> None:
        name = self.pull_name.text().strip() or DEFAULT_MODEL
        self.pull_name.setText(name)
        self.ops.pull(name)

    def warm_selected(self) -> None:
        name = self.selected_name()
        if name is not None:
            self._tasks.spawn(self._warm(name), name="model-warm")

    async def _warm(self, name: str) -> None:
        fit = await self._check_fit(name)
        if fit is not None and fit.fits is False:
            ok = await self.confirm("Load anyway?", f"{fit.message}\n\nLoad {name} anyway?", "Load")
            if not ok:
                return
        self.ops.warm(name)

    def unload_selected(self) -> None:
        name = self.selected_name()
        if name is not None:
            self.ops.unload(name)

    def delete_selected(self) -> None:
        name = self.selected_name()
        if name is not None:
            self._tasks.spawn(self._delete(name), name="model-delete")

    async def _delete(self, name: str) -> None:
        text = f"Delete {name} from the server? It must be pulled or imported again to be used."
        if await self.confirm("Delete model", text, "Delete"):
            self.ops.delete(name)

    async def confirm(self, title: str, text: str, yes: str) -> bool:
        """A question box opened with `open()` (never `exec()` inside a coroutine)."""
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        box.setTextFormat(Qt.TextFormat.PlainText)  # model names come from the server
        box.setObjectName("confirmDialog")
        yes_button = box.addButton(yes, QMessageBox.ButtonRole.AcceptRole)
        box.setDefaultButton(box.addButton(QMessageBox.StandardButton.Cancel))
        self._keep(box)
        await dialog_result(box)
        return box.clickedButton() is yes_button

    def import_gguf(self) -> None:
        """Import a GGUF under the name typed in the pull field, else the name of its file
        (never the field's default, which silently replaced the installed
        gpt-oss-safeguard); replacing an installed model is asked about first."""

        def chosen(path: str) -> None:
            self._tasks.spawn(self._import_gguf(Path(path)), name="model-import")

        self._open_file("Import a GGUF model file", GGUF_FILTER, chosen)

    async def _import_gguf(self, path: Path) -> None:
        typed = self.pull_name.text().strip()
        model = typed if typed and typed != DEFAULT_MODEL else gguf_model_name(path)
        if model in self.model.names():
            text = (
                f"A model named {model} is installed. Replace it with {path.name}? "
                "Reviews made with the installed one keep their recorded digest."
            )
            if not await self.confirm("Replace model", text, "Replace"):
                return
        self.ops.import_gguf(path, model)

    def import_bundle(self) -> None:
        self._open_file(
            "Import a model bundle", BUNDLE_FILTER, lambda path: self.ops.import_bundle(Path(path))
        )

    def export_selected(self) -> None:
        name = self.selected_name()
        if name is None:
            return
        suggested = Path.home() / f"{name.replace(':', '-').replace('/', '_')}.tar"
        dialog = QFileDialog(self, f"Export {name}", str(suggested), BUNDLE_FILTER)
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("tar")
        dialog.fileSelected.connect(lambda path: self.ops.export_bundle(name, Path(path)))
        self._keep(dialog)
        dialog.open()

    def _open_file(self, title: str, filters: str, on_chosen: object) -> None:
        dialog = QFileDialog(self, title, str(Path.home()), filters)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(on_chosen)
        self._keep(dialog)
        dialog.open()  # window-modal, no nested event loop

    def _keep(self, dialog: QWidget) -> None:
        """Hold the dialog until it closes (Qt owns it through its parent too)."""
        self._dialogs = [d for d in self._dialogs if d.isVisible()]
        self._dialogs.append(dialog)
        self.last_dialog = dialog

    async def shutdown(self) -> None:
        """Stop queries and refuse new ones (at quit)."""
        self.closed = True
        await self._tasks.wait_all(timeout=2)
