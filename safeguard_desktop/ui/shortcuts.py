"""The F1 list of keyboard shortcuts, generated from the window's actions (never hand-kept)."""

from __future__ import annotations

from dataclasses import dataclass

from safeguard_desktop.qt import (
    QAbstractItemView,
    QAction,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QKeySequence,
    QLabel,
    QMenu,
    QTableView,
    QtGui,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class ShortcutEntry:
    group: str
    action: str
    keys: str


def clean_text(text: str) -> str:
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip(".…")


def collect_shortcuts(
    menus: list[QMenu], extra: list[QAction] | None = None
) -> list[ShortcutEntry]:
    """Every action with a shortcut, grouped by menu, in menu order."""
    entries: list[ShortcutEntry] = []
    seen: set[int] = set()
    for menu in menus:
        group = clean_text(menu.title())
        for action in menu.actions():
            if action.isSeparator() or id(action) in seen:
                continue
            seen.add(id(action))
            keys = [s.toString(QKeySequence.SequenceFormat.NativeText) for s in action.shortcuts()]
            if keys:
                entries.append(ShortcutEntry(group, clean_text(action.text()), ", ".join(keys)))
    for action in extra or []:
        keys = [s.toString(QKeySequence.SequenceFormat.NativeText) for s in action.shortcuts()]
        if keys and id(action) not in seen:
            entries.append(ShortcutEntry("Other", clean_text(action.text()), ", ".join(keys)))
    return entries


class ShortcutsDialog(QDialog):
    """Non-modal table of shortcuts; Esc or Close dismisses it."""

    def __init__(self, entries: list[ShortcutEntry], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts — Safeguard Desktop")
        self.entries = entries
        model = QtGui.QStandardItemModel(len(entries), 3, self)
        model.setHorizontalHeaderLabels(["Area", "Action", "Keys"])
        for row, entry in enumerate(entries):
            for col, text in enumerate((entry.group, entry.action, entry.keys)):
                item = QtGui.QStandardItem(text)
                item.setEditable(False)
                model.setItem(row, col, item)
        table = QTableView(self)
        table.setModel(model)
        table.verticalHeader().hide()
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        table.setAlternatingRowColors(True)
        self.table = table
        hint = QLabel("Every action is also in the menus (Alt + the underlined letter).", self)
        hint.setObjectName("hint")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(table, 1)
        layout.addWidget(hint)
        layout.addWidget(buttons)
        self.resize(560, 440)
