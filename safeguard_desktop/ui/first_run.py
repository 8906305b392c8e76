"""First-run assistant: says in one sentence each what is missing (the Ollama program, the
model) and offers the fix in place: locate the program, pull the model, or, in an offline
room, import a GGUF file or a bundle. Opened with `show()`, never `exec()`.

Signals:
    locate_chosen(str): the user picked the ollama program at this path.
    start_requested(): start Ollama now.
    recheck_requested(): look again (after an outside change).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safeguard_desktop.qt import (
    QDialog,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    Qt,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.server_service import DOWNLOAD_URL
from safeguard_desktop.ui.message_bar import InlineMessage
from safeguard_desktop.ui.model_ops import ModelOps, Outcome
from safeguard_desktop.ui.models_panel import BUNDLE_FILTER, GGUF_FILTER, LEVEL_COLOURS
from safeguard_desktop.ui.progress_row import ProgressRow


@dataclass(frozen=True)
class SetupState:
    """What the assistant checks; None for the model means "unknown, the server is down"."""

    url: str
    local: bool
    binary: str | None = None
    binary_problem: str | None = None
    configured: str = ""  # the ollama_path setting
    running: bool = False
    server_problem: str | None = None
    model: str = "gpt-oss-safeguard:20b"
    model_installed: bool | None = None

    @property
    def ready(self) -> bool:
        return self.running and bool(self.model_installed)

    def problems(self) -> list[str]:
        """One sentence per missing piece, in the order they must be fixed."""
        found: list[str] = []
        if self.local and not self.binary and not self.running:
            found.append(
                "Ollama is not installed on this computer (or not where Settings says): "
                "locate the ollama program below, or install it first."
            )
        elif not self.running:
            found.append(
                self.server_problem
                or f"No Ollama answers at {self.url}: "
                + ("start it below." if self.local else "start it on that machine.")
            )
        if self.running and self.model_installed is False:
            found.append(
                f"The model {self.model} is not on the server yet: pull it, or in an offline "
                "room import a GGUF file or a bundle."
            )
        return found


class FirstRunAssistant(QDialog):
    locate_chosen = Signal(str)
    start_requested = Signal()
    recheck_requested = Signal()

    def __init__(self, ops: ModelOps, model: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("firstRunAssistant")
        self.setWindowTitle("Set up Safeguard Desktop")
        self.setModal(False)
        self.ops = ops
        self.state: SetupState | None = None
        self.dialog: QFileDialog | None = None
        layout = QVBoxLayout(self)
        heading = QLabel("Get ready to review", self)
        heading.setObjectName("paneTitle")
        layout.addWidget(heading)
        intro = QLabel(
            "Reviews run on the gpt-oss-safeguard model, served by Ollama on this computer. "
            "Nothing is sent anywhere else.",
            self,
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.summary = QLabel(self)
        self.summary.setObjectName("setupSummary")
        self.summary.setTextFormat(Qt.TextFormat.PlainText)
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        layout.addWidget(self._program_box())
        layout.addWidget(self._model_box(model))
        self.message = InlineMessage(self)
        layout.addWidget(self.message)
        layout.addStretch(1)
        buttons = QHBoxLayout()
        again = QPushButton("Check &again", self)
        again.clicked.connect(self.recheck_requested)
        self.close_button = QPushButton("&Close", self)
        self.close_button.clicked.connect(self.close)
        buttons.addWidget(again)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout.addLayout(buttons)
        ops.busy_changed.connect(self._busy_changed)
        ops.finished.connect(self._finished)
        self.resize(640, 520)

    def _program_box(self) -> QGroupBox:
        box = QGroupBox("1 · The Ollama program", self)
        layout = QVBoxLayout(box)
        self.program = QLabel(box)
        self.program.setObjectName("setupProgram")
        self.program.setTextFormat(Qt.TextFormat.PlainText)
        self.program.setWordWrap(True)
        layout.addWidget(self.program)
        hint = QLabel(
            f"Not installed? Get it from {DOWNLOAD_URL}; in an air-gapped room, copy the "
            "installer from a connected machine.",
            box,
        )
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        hint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(hint)
        row = QHBoxLayout()
        self.locate_button = QPushButton("&Locate ollama…", box)
        self.locate_button.setToolTip("Choose the ollama program; it is kept in Settings")
        self.locate_button.clicked.connect(self.locate)
        self.start_button = QPushButton("&Start Ollama", box)
        self.start_button.clicked.connect(self.start_requested)
        row.addWidget(self.locate_button)
        row.addWidget(self.start_button)
        row.addStretch(1)
        layout.addLayout(row)
        return box

    def _model_box(self, model: str) -> QGroupBox:
        box = QGroupBox("2 · The model", self)
        layout = QVBoxLayout(box)
        self.model_status = QLabel(box)
        self.model_status.setObjectName("setupModel")
        self.model_status.setTextFormat(Qt.TextFormat.PlainText)
        self.model_status.setWordWrap(True)
        layout.addWidget(self.model_status)
        row = QHBoxLayout()
        self.model_name = QLineEdit(model, box)
        self.model_name.setObjectName("setupModelName")
        self.pull_button = QPushButton("&Pull", box)
        self.pull_button.setToolTip("Download it (about 14 GB for 20b); a cancelled pull resumes")
        self.pull_button.clicked.connect(self.pull)
        self.gguf_button = QPushButton("Import &GGUF…", box)
        self.gguf_button.clicked.connect(self.import_gguf)
        self.bundle_button = QPushButton("Import &bundle…", box)
        self.bundle_button.clicked.connect(self.import_bundle)
        row.addWidget(self.model_name, 1)
        row.addWidget(self.pull_button)
        row.addWidget(self.gguf_button)
        row.addWidget(self.bundle_button)
        layout.addLayout(row)
        hint = QLabel(
            "Offline room: import a .gguf file, or a bundle made with Export bundle… in the "
            "Server panel of a connected machine.",
            box,
        )
        hint.setObjectName("hint")
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.progress = ProgressRow(self.ops, box)
        layout.addWidget(self.progress)
        return box

    # -- state -----------------------------------------------------------------------------------
    def set_state(self, state: SetupState) -> None:
        self.state = state
        problems = state.problems()
        if problems:
            self.summary.setText("\n".join(f"✘ {p}" for p in problems))
            self.summary.setStyleSheet(f"color: {LEVEL_COLOURS['error']};")
        else:
            self.summary.setText(f"✔ All set: Ollama runs at {state.url} and has {state.model}.")
            self.summary.setStyleSheet(f"color: {LEVEL_COLOURS['ok']};")
        if state.binary:
            self.program.setText(f"✔ Found: {state.binary}")
        elif state.running:
            self.program.setText(f"✔ Ollama answers at {state.url}.")
        elif state.local and state.configured:
            self.program.setText(f"✘ Settings point to {state.configured}, which cannot be run.")
        elif state.local:
            self.program.setText("✘ No ollama program on PATH or in the usual install folders.")
        else:
            self.program.setText(f"{state.url} is a remote server: start Ollama there.")
        self.locate_button.setEnabled(state.local)
        self.start_button.setEnabled(state.local and bool(state.binary) and not state.running)
        if state.model_installed:
            self.model_status.setText(f"✔ {state.model} is installed.")
        elif state.model_installed is False:
            self.model_status.setText(f"✘ {state.model} is not installed yet.")
        else:
            self.model_status.setText("Start Ollama first; then get the model here.")
        self.close_button.setText("&Done" if state.ready else "&Close")
        self._busy_changed(self.ops.busy)

    def _busy_changed(self, busy: bool) -> None:
        running = self.state is not None and self.state.running
        for button in (self.pull_button, self.gguf_button):
            button.setEnabled(running and not busy)
        self.bundle_button.setEnabled(not busy)  # writes the models folder; no server needed

    def _finished(self, outcome: Outcome) -> None:
        if self.isVisible():
            self.message.show_message(outcome.message, outcome.level)

    # -- actions ---------------------------------------------------------------------------------
    def locate(self) -> None:
        dialog = QFileDialog(self, "Locate the ollama program", str(Path.home()))
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(self.locate_chosen)
        self.dialog = dialog
        dialog.open()

    def pull(self) -> None:
        name = self.model_name.text().strip()
        if name:
            self.ops.pull(name)

    def import_gguf(self) -> None:
        dialog = QFileDialog(self, "Import a GGUF model file", str(Path.home()), GGUF_FILTER)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(
            lambda path: self.ops.import_gguf(
                Path(path), self.model_name.text().strip() or Path(path).stem.lower()
            )
        )
        self.dialog = dialog
        dialog.open()

    def import_bundle(self) -> None:
        dialog = QFileDialog(self, "Import a model bundle", str(Path.home()), BUNDLE_FILTER)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(lambda path: self.ops.import_bundle(Path(path)))
        self.dialog = dialog
        dialog.open()
