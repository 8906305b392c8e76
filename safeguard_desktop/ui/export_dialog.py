"""The escalation-note export: a safe rendered preview, the raw Markdown, copy and save.

The preview never fetches anything: `SafeBrowser` refuses every resource (and records the
request), links are not followed, and `render_html` already shows raw HTML as text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safeguard_desktop import paths
from safeguard_desktop.qt import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFontDatabase,
    QGuiApplication,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QTextBrowser,
    QUrl,
    QVBoxLayout,
    QWidget,
)
from safeguard_desktop.services.escalation import NoteOptions, escalation_note, render_html
from safeguard_desktop.services.history_service import Review
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.message_bar import InlineMessage

log = logging.getLogger("safeguard.ui.history")


class SafeBrowser(QTextBrowser):
    """A QTextBrowser that loads no resource at all (air-gapped promise) and opens no link."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenExternalLinks(False)
        self.setOpenLinks(False)
        self.setSearchPaths([])
        self.requested: list[str] = []

    def loadResource(self, kind: int, name: QUrl | str) -> Any:
        url = name.toString() if isinstance(name, QUrl) else str(name)
        self.requested.append(url)
        log.warning("preview refused to load %s", url[:200])
        return None


def default_file_name(reviews: Sequence[Review]) -> str:
    if len(reviews) == 1:
        return f"escalation-review-{reviews[0].id}.md"
    return f"escalation-{len(reviews)}-reviews.md"


def build_note(reviews: Sequence[Review], options: NoteOptions) -> tuple[str, str]:
    """(Markdown, safe HTML) for the reviews; pure, so it runs in a worker thread."""
    markdown = escalation_note(reviews, options)
    return markdown, render_html(markdown)


class ExportDialog(QDialog):
    """Non-modal: open it with `show()` (or `open()`); nothing here blocks the loop."""

    def __init__(
        self,
        reviews: Sequence[Review],
        parent: QWidget | None = None,
        *,
        folder: Path | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("exportDialog")
        self.reviews = list(reviews)
        self.folder = folder or Path.home()
        self.markdown = ""
        self._generation = 0
        self._shown: NoteOptions | None = None
        self._tasks = TaskKeeper()
        self.save_dialog: QFileDialog | None = None
        self.saved_to: Path | None = None
        ids = ", ".join(f"#{r.id}" for r in self.reviews[:8])
        more = f" and {len(self.reviews) - 8} more" if len(self.reviews) > 8 else ""
        self.setWindowTitle(f"Escalation note — review {ids}{more}")

        self.redact_box = QCheckBox("&Redact emails, phones, URLs, handles", self)
        self.reasoning_box = QCheckBox("Include reasoni&ng", self)
        self.reasoning_box.setChecked(True)
        self.preview = SafeBrowser(self)
        self.preview.setObjectName("notePreview")
        self.preview.document().setDefaultStyleSheet("pre { white-space: pre-wrap; }")
        self.source = QPlainTextEdit(self)
        self.source.setObjectName("noteMarkdown")
        self.source.setReadOnly(True)
        self.source.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.source.setPlaceholderText("Preparing the note…")
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.preview, "Preview")
        self.tabs.addTab(self.source, "Markdown")
        self.message = InlineMessage(self)
        hint = QLabel("Content and model output are fenced in the note; nothing is sent.", self)
        hint.setObjectName("hint")
        self.copy_button = QPushButton("&Copy Markdown", self)
        self.save_button = QPushButton("&Save as .md…", self)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.save_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)

        options = QHBoxLayout()
        options.addWidget(self.redact_box)
        options.addWidget(self.reasoning_box)
        options.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(options)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.message)
        layout.addWidget(hint)
        layout.addWidget(buttons)

        self.redact_box.toggled.connect(self.update_note)
        self.reasoning_box.toggled.connect(self.update_note)
        self.copy_button.clicked.connect(self.copy)
        self.save_button.clicked.connect(self.ask_save)
        self.resize(860, 680)
        self.update_note()

    def options(self) -> NoteOptions:
        return NoteOptions(
            redact=self.redact_box.isChecked(), include_reasoning=self.reasoning_box.isChecked()
        )

    @property
    def ready(self) -> bool:
        """The shown note matches the checkboxes."""
        return self._shown == self.options()

    def update_note(self) -> None:
        """Rebuild the note in a worker thread (hundreds of reviews take seconds to render)."""
        self._generation += 1
        self.copy_button.setEnabled(False)
        self.save_button.setEnabled(False)
        self._tasks.spawn(self._build(self._generation, self.options()), name="note")

    async def _build(self, generation: int, options: NoteOptions) -> None:
        markdown, html = await asyncio.to_thread(build_note, self.reviews, options)
        if generation != self._generation:
            return
        self.markdown = markdown
        self.source.setPlainText(markdown)
        self.preview.setHtml(html)
        self._shown = options
        self.copy_button.setEnabled(True)
        self.save_button.setEnabled(True)

    def done(self, result: int) -> None:
        self._tasks.cancel_all()
        super().done(result)

    def copy(self) -> None:
        clipboard = QGuiApplication.clipboard()
        clipboard.setText(self.markdown)
        self.message.show_message("The Markdown note is on the clipboard.", "info")

    def ask_save(self) -> None:
        """A window-modal file dialog opened with open(): never a nested event loop."""
        dialog = QFileDialog(
            self,
            "Save escalation note",
            str(self.folder / default_file_name(self.reviews)),
            "Markdown (*.md);;All files (*)",
        )
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("md")
        dialog.fileSelected.connect(lambda name: self.save_to(Path(name)))
        self.save_dialog = dialog
        dialog.open()

    def save_to(self, path: Path) -> bool:
        try:
            paths.write_private(path, self.markdown)  # the note holds the content: 0600
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            self.message.show_message(
                f"Could not save {path.name} ({reason}); pick another folder.", "error"
            )
            return False
        self.saved_to = path
        self.folder = path.parent
        self.message.show_message(f"Saved to {path}.", "info")
        return True
