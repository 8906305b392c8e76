"""Ctrl+K: every action of the window in one filterable list, run with Enter.

The list is read from the window's menus when the palette opens (never hand-kept), so an
action added anywhere shows up here and in F1 alike. Disabled actions are listed greyed.
"""

from __future__ import annotations

from dataclasses import dataclass

from safeguard_desktop.qt import (
    QAction,
    QDialog,
    QKeyEvent,
    QKeySequence,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QObject,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
)
from safeguard_desktop.ui.shortcuts import clean_text

MOVE_KEYS = (Qt.Key.Key_Down, Qt.Key.Key_Up, Qt.Key.Key_PageDown, Qt.Key.Key_PageUp)


@dataclass(frozen=True)
class Command:
    group: str
    text: str
    keys: str
    action: QAction

    @property
    def words(self) -> str:
        return f"{self.group} {self.text} {self.keys}".lower()


def collect_commands(menus: list[QMenu]) -> list[Command]:
    """Every action of the menus (submenus included), in menu order, each once."""
    found: list[Command] = []
    seen: set[int] = set()

    def walk(menu: QMenu, group: str) -> None:
        for action in menu.actions():
            if action.isSeparator() or id(action) in seen or not action.isVisible():
                continue
            seen.add(id(action))
            sub = action.menu()
            if isinstance(sub, QMenu):
                walk(sub, f"{group} › {clean_text(sub.title())}")
                continue
            if not clean_text(action.text()):
                continue
            keys = ", ".join(
                k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts()
            )
            found.append(Command(group, clean_text(action.text()), keys, action))

    for menu in menus:
        walk(menu, clean_text(menu.title()))
    return found


def matches(command: Command, query: str) -> bool:
    """Every word typed appears in the command's menu, name or keys (any order)."""
    words = command.words
    return all(part in words for part in query.lower().split())


class CommandPalette(QDialog):
    """A frameless list under a search field; Enter runs the chosen command, Esc closes."""

    def __init__(self, menus: list[QMenu], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("commandPalette")
        self.setWindowTitle("Commands")
        self.commands = collect_commands(menus)
        self.search = QLineEdit(self)
        self.search.setObjectName("paletteSearch")
        self.search.setPlaceholderText("Type a command (e.g. “agree”, “export”, “next”)…")
        self.search.setClearButtonEnabled(True)
        self.list = QListWidget(self)
        self.list.setObjectName("paletteList")
        self.list.setUniformItemSizes(True)
        hint = QLabel("↑ ↓ choose · Enter runs · Esc closes", self)
        hint.setObjectName("hint")
        layout = QVBoxLayout(self)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        layout.addWidget(hint)
        self.search.textChanged.connect(self._filter)
        self.search.returnPressed.connect(self.run_current)
        self.list.itemActivated.connect(lambda _item: self.run_current())
        self.search.installEventFilter(self)
        self._filter("")
        self.resize(560, 420)

    def shown_texts(self) -> list[str]:
        return [
            self.list.item(i).text()
            for i in range(self.list.count())
            if not self.list.item(i).isHidden()
        ]

    def _filter(self, query: str) -> None:
        self.list.clear()
        for command in self.commands:
            if not matches(command, query):
                continue
            label = f"{command.text}    ({command.group}"
            label += f" · {command.keys})" if command.keys else ")"
            item = QListWidgetItem(label, self.list)
            item.setData(Qt.ItemDataRole.UserRole, self.commands.index(command))
            if not command.action.isEnabled():
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
        for row in range(self.list.count()):
            if self.list.item(row).flags() & Qt.ItemFlag.ItemIsEnabled:
                self.list.setCurrentRow(row)
                break

    def run_current(self) -> None:
        item = self.list.currentItem()
        if item is None or not item.flags() & Qt.ItemFlag.ItemIsEnabled:
            return
        action = self.commands[int(item.data(Qt.ItemDataRole.UserRole))].action
        self.accept()
        # After the palette has closed and the focus is back where it was.
        QTimer.singleShot(0, action, action.trigger)

    def eventFilter(self, watched: QObject, event: object) -> bool:
        if (
            watched is self.search
            and isinstance(event, QKeyEvent)
            and event.type() == QKeyEvent.Type.KeyPress
            and event.key() in MOVE_KEYS
        ):
            self.list.keyPressEvent(event)  # arrows move the choice, typing stays here
            return True
        return super().eventFilter(watched, event)  # type: ignore[arg-type]
