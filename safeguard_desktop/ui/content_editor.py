"""The content editor: type, paste, drop or open a file; pick the kind; pick the judged turn.

Import errors appear in a message bar inside the window, and opening a file replaces the
text through the undo stack, so nothing typed is ever lost (Ctrl+Z brings it back).

Signals:
    file_loaded(str): a file was imported into the editor.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from safeguard_desktop.core.content import (
    KINDS,
    Content,
    ContentError,
    Kind,
    from_text,
)
from safeguard_desktop.core.importers import import_file
from safeguard_desktop.qt import (
    QComboBox,
    QDragEnterEvent,
    QDropEvent,
    QFont,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    Qt,
    QTextCursor,
    QTimer,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.settings import Settings
from safeguard_desktop.ui.message_bar import InlineMessage
from safeguard_desktop.ui.wellness import MaskedArea, RevealState

log = logging.getLogger("safeguard.ui")
KIND_LABELS: dict[str, str] = {
    "message": "Message",
    "chat": "Chat transcript",
    "completion": "Prompt + completion",
}
PLACEHOLDER = {
    "message": "Paste or type the content to review, or drop a file here (Ctrl+O opens one).",
    "chat": "One turn per speaker line, e.g.\nuser: hi\nassistant: hello\n\n"
    "or paste a JSON list of {role, content} messages.",
    "completion": "Prompt:\n…\n\nCompletion:\n…   (or put a line --- between them)",
}


def editable_text(content: Content) -> str:
    """A text form of imported content that `from_text` reads back as the same kind."""
    if content.kind == "chat":
        return "\n\n".join(f"{t.role}: {t.content}" for t in content.turns)
    if content.kind == "completion":
        return f"Prompt:\n{content.prompt}\n\nCompletion:\n{content.completion}"
    return content.text


def local_files(mime: object) -> list[str]:
    urls = mime.urls() if mime.hasUrls() else []  # type: ignore[attr-defined]
    return [u.toLocalFile() for u in urls if u.isLocalFile()]


class ContentTextEdit(QPlainTextEdit):
    """Plain-text input; a dropped or pasted file is imported instead of inserted as a path.

    Signals:
        file_dropped(str), pasted().
    """

    file_dropped = Signal(str)
    pasted = Signal()

    def canInsertFromMimeData(self, source: object) -> bool:
        return bool(local_files(source)) or super().canInsertFromMimeData(source)  # type: ignore[arg-type]

    def insertFromMimeData(self, source: object) -> None:
        files = local_files(source)
        if files:
            self.file_dropped.emit(files[0])
            return
        super().insertFromMimeData(source)  # type: ignore[arg-type]
        self.pasted.emit()

    def raw_text(self) -> str:
        """The text as typed (unlike toPlainText, keeps non-breaking spaces)."""
        return self.document().toRawText().replace("\u2029", "\n")


class ContentEditor(QWidget):
    file_loaded = Signal(str)
    content_changed = Signal()  # typed, pasted or loaded: a verdict shown is for other text

    def __init__(self, settings: Settings, reveal: RevealState, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.reveal = reveal
        self._loaded: Content | None = None
        self._judged: int | None = None
        self._programmatic = False
        self.setAcceptDrops(True)

        title = QLabel("Content", self)
        title.setObjectName("paneTitle")
        self.kind_picker = QComboBox(self)
        for kind in KINDS:
            self.kind_picker.addItem(KIND_LABELS[kind], kind)
        self.kind_picker.setToolTip(
            "What the text is: one message, a chat, or a prompt + completion"
        )
        self.open_button = QToolButton(self)
        self.open_button.setText("Open…")
        self.open_button.setToolTip("Import a .txt .md .json .jsonl .csv or .eml file (Ctrl+O)")
        self.message = InlineMessage(self)
        self.editor = ContentTextEdit(self)
        self.editor.setObjectName("contentEditor")
        self.editor.setTabChangesFocus(True)
        self.masked = MaskedArea(self.editor, reveal, self)
        self.masked.set_mask_enabled(bool(settings["mask_content"]))

        self.turns_title = QLabel("Turns — select the one to judge", self)
        self.turns_title.setObjectName("subTitle")
        self.turns = QListWidget(self)
        self.turns.setObjectName("turnList")
        self.turns.setMaximumHeight(150)
        self.turns_hint = QLabel(self)
        self.turns_hint.setObjectName("hint")
        self.turns_hint.setTextFormat(Qt.TextFormat.PlainText)
        self.turns_hint.setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(title)
        row.addStretch(1)
        row.addWidget(self.kind_picker)
        row.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addLayout(row)
        layout.addWidget(self.message)
        layout.addWidget(self.masked, 1)
        layout.addWidget(self.turns_title)
        layout.addWidget(self.turns)
        layout.addWidget(self.turns_hint)

        self._turns_timer = QTimer(self)
        self._turns_timer.setSingleShot(True)
        self._turns_timer.setInterval(300)
        self._turns_timer.timeout.connect(self.refresh_turns)
        self.editor.textChanged.connect(self._edited)
        self.editor.file_dropped.connect(self.load_file)
        self.editor.pasted.connect(self._pasted)
        self.kind_picker.currentIndexChanged.connect(self._kind_changed)
        self.turns.currentRowChanged.connect(self._turn_selected)
        self._kind_changed()

    # --- state -----------------------------------------------------------------------

    def kind(self) -> Kind:
        value = self.kind_picker.currentData()
        return value if value in KINDS else "message"

    def set_kind(self, kind: Kind) -> None:
        self.kind_picker.setCurrentIndex(KINDS.index(kind))

    def apply_wellness(self) -> None:
        """The masking setting, now (no restart needed)."""
        self.masked.set_mask_enabled(bool(self.settings["mask_content"]))

    def text(self) -> str:
        return self.editor.raw_text()

    def set_text(self, text: str) -> None:
        """Replace the text through the undo stack (Ctrl+Z restores what was there)."""
        self._programmatic = True
        try:
            cursor = QTextCursor(self.editor.document())
            cursor.select(QTextCursor.SelectionType.Document)
            cursor.insertText(text)
        finally:
            self._programmatic = False
        self._after_text_change()

    def current_content(self) -> Content:
        """The content to classify; ContentError says what is wrong with the input."""
        content = self._loaded if self._loaded is not None else from_text(self.text(), self.kind())
        judged = self._judged
        if content.kind == "chat" and judged is not None and 0 <= judged < len(content.turns):
            content = replace(content, judged=judged)
        return content

    def show_error(self, text: str) -> None:
        self.message.show_message(text, "error")

    # --- files -----------------------------------------------------------------------

    def load_file(self, path: str | Path) -> None:
        """Import `path` off the GUI thread (files can be large); see `import_path`."""
        self._import_task = asyncio.ensure_future(self.import_path(path))

    async def import_path(self, path: str | Path) -> bool:
        """Import `path`; on a problem the message bar says so and the editor is untouched."""
        path = Path(path)
        max_bytes = int(self.settings["max_file_mb"]) * 1024 * 1024
        self.message.show_message(f"Reading {path.name}…", "info")
        try:
            items = await asyncio.to_thread(import_file, path, max_bytes=max_bytes)
        except ContentError as exc:
            self.message.show_message(str(exc), "error")
            return False
        if not items:
            self.message.show_message(
                f"{path.name} holds no item to classify; choose another file.", "error"
            )
            return False
        content = items[0]
        self.kind_picker.blockSignals(True)
        self.set_kind(content.kind)
        self.kind_picker.blockSignals(False)
        if self.settings["mask_content"]:
            self.reveal.conceal()
        self.set_text(editable_text(content))
        self._loaded = content
        self._judged = content.judged
        self._kind_changed()
        if len(items) > 1:
            self.message.show_message(
                f"{path.name} holds {len(items)} items; item 1 is loaded. Classify the others "
                f"with `safeguard-desktop classify --file {path} --item N`.",
                "info",
            )
        else:
            self.message.dismiss()
        self.file_loaded.emit(str(path))
        return True

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_files(event.mimeData()):
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        files = local_files(event.mimeData())
        if files:
            event.acceptProposedAction()
            self.load_file(files[0])
        else:
            super().dropEvent(event)

    # --- reactions -------------------------------------------------------------------

    def _edited(self) -> None:
        if self.message.level == "error":
            self.message.dismiss()  # the content that error was about has changed
        if self._programmatic:
            self.content_changed.emit()
            return
        self._loaded = None  # the moderator changed the text: parse what is there now
        self._after_text_change()
        self.content_changed.emit()

    def _after_text_change(self) -> None:
        self.masked.set_has_content(bool(self.editor.document().characterCount() > 1))
        if self.kind() == "chat":
            self._turns_timer.start()

    def _pasted(self) -> None:
        if self.settings["mask_content"]:
            self.reveal.conceal()

    def _kind_changed(self, _index: int = -1) -> None:
        kind = self.kind()
        if self._loaded is not None and self._loaded.kind != kind:
            self._loaded = None
        self.editor.setPlaceholderText(PLACEHOLDER[kind])
        chat = kind == "chat"
        for widget in (self.turns_title, self.turns, self.turns_hint):
            widget.setVisible(chat)
        if chat:
            self.refresh_turns()

    def refresh_turns(self) -> None:
        """List the chat's turns, the judged one marked; parse problems show as a hint."""
        self.turns.blockSignals(True)
        self.turns.clear()
        self.turns_hint.clear()
        try:
            content = self.current_content() if self.text().strip() else None
        except ContentError as exc:
            content = None
            self.turns_hint.setText(str(exc))
        if content is not None and content.kind == "chat":
            judged = content.judged_index
            for i, turn in enumerate(content.turns):
                preview = " ".join(turn.content.split())[:90]
                mark = "   ◀ judged" if i == judged else ""
                item = QListWidgetItem(f"{i + 1}. {turn.role}: {preview}{mark}")
                if i == judged:
                    font = QFont(item.font())
                    font.setBold(True)
                    item.setFont(font)
                self.turns.addItem(item)
            self.turns.setCurrentRow(judged)
        elif not self.turns_hint.text():
            self.turns_hint.setText("Type or paste a chat to list its turns.")
        self.turns.blockSignals(False)

    def _turn_selected(self, row: int) -> None:
        if row < 0:
            return
        self._judged = row
        self.refresh_turns()
