"""Policy picker (built-ins + the user's folder, with lint status) and a read-only viewer.

A QFileSystemWatcher reloads a policy edited on disk, so the viewer always shows the text
the next review will use.

Signals:
    policy_changed(object): the selected Policy (or None) changed or was reloaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from safeguard_desktop.core.highlight import find_rule_mentions
from safeguard_desktop.core.policy import (
    LintIssue,
    Policy,
    builtin_policies,
    find_policies_with_errors,
    lint,
)
from safeguard_desktop.qt import (
    QBrush,
    QColor,
    QComboBox,
    QFileSystemWatcher,
    QFont,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QSizePolicy,
    Qt,
    QTextCharFormat,
    QTextCursor,
    QTextEdit,
    QTextFormat,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.session import policy_folders
from safeguard_desktop.settings import Settings
from safeguard_desktop.ui.span_view import rich_tooltip
from safeguard_desktop.ui.textpos import PosMap
from safeguard_desktop.ui.theme import scheme

log = logging.getLogger("safeguard.ui")
RELOAD_DELAY_MS = 250


def lint_summary(issues: list[LintIssue]) -> tuple[str, str]:
    """(short status, level) for a policy's lint issues: clean, warnings or errors."""
    errors = sum(1 for i in issues if i.severity == "error")
    warnings = sum(1 for i in issues if i.severity == "warning")
    if errors:
        return f"✖ {errors} error{'s' * (errors > 1)}", "error"
    if warnings:
        return f"⚠ {warnings} warning{'s' * (warnings > 1)}", "warning"
    return "✓ clean", "clean"


def policy_key(policy: Policy) -> str:
    return f"builtin:{policy.id}" if policy.builtin else f"file:{policy.source}"


class PolicyViewer(QPlainTextEdit):
    """The policy text, rule ids marked; `show_rule` scrolls to a rule and marks its line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.setObjectName("policyViewer")
        self.policy: Policy | None = None
        self.marked_rule: str | None = None

    def show_policy(self, policy: Policy | None) -> None:
        self.policy = policy
        self.marked_rule = None
        self.setExtraSelections([])
        if policy is None:
            self.setPlainText("")
            return
        self.setPlainText(policy.text)
        cursor = QTextCursor(self.document())
        fmt = QTextCharFormat()
        fmt.setFontWeight(QFont.Weight.Bold)
        fmt.setForeground(QBrush(QColor(scheme().rule)))
        positions = PosMap(policy.text)
        for span in find_rule_mentions(policy.text, [r.id for r in policy.rules]):
            cursor.setPosition(positions.to_doc(span.start))
            cursor.setPosition(positions.to_doc(span.end), QTextCursor.MoveMode.KeepAnchor)
            cursor.mergeCharFormat(fmt)

    def show_rule(self, rule_id: str) -> bool:
        """Scroll to where `rule_id` (or its tier) is defined; False when the policy lacks it."""
        policy = self.policy
        if policy is None:
            return False
        rule = policy.rule(rule_id) or next(
            (r for r in policy.rules if r.id.casefold().startswith(rule_id.casefold() + ".")),
            None,
        )
        if rule is None:
            return False
        block = self.document().findBlockByNumber(rule.line - 1)
        if not block.isValid():
            return False
        cursor = QTextCursor(block)
        column = block.text().find(rule.id)
        if column >= 0:
            cursor.setPosition(block.position() + column)
            cursor.setPosition(
                block.position() + column + len(rule.id), QTextCursor.MoveMode.KeepAnchor
            )
        self.setTextCursor(cursor)
        self.centerCursor()
        mark = QTextEdit.ExtraSelection()
        mark.format.setBackground(QBrush(QColor(scheme().marked_line)))
        mark.format.setProperty(QTextFormat.Property.FullWidthSelection, True)
        mark.cursor = QTextCursor(block)
        self.setExtraSelections([mark])
        self.marked_rule = rule.id
        return True


class PolicyPanel(QWidget):
    policy_changed = Signal(object)

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._policies: list[Policy] = []
        self._problems: list[tuple[Path, str]] = []
        self.picker = QComboBox(self)
        self.picker.setObjectName("policyPicker")
        self.picker.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.picker.setToolTip("Policy the content is judged against (Ctrl+L)")
        self.status = QLabel(self)
        self.status.setObjectName("lintStatus")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        self.problems = QLabel(self)
        self.problems.setObjectName("policyProblems")
        self.problems.setTextFormat(Qt.TextFormat.PlainText)
        self.problems.setWordWrap(True)
        self.problems.hide()
        self.viewer = PolicyViewer(self)
        title = QLabel("Policy", self)
        title.setObjectName("paneTitle")
        title.setBuddy(self.picker)

        row = QHBoxLayout()
        row.addWidget(title)
        row.addWidget(self.picker, 1)
        row.addWidget(self.status)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addLayout(row)
        layout.addWidget(self.problems)
        layout.addWidget(self.viewer, 1)

        self.watcher = QFileSystemWatcher(self)
        self.watcher.fileChanged.connect(self._schedule_reload)
        self.watcher.directoryChanged.connect(self._schedule_reload)
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(RELOAD_DELAY_MS)
        self._reload_timer.timeout.connect(self.reload)
        self.picker.currentIndexChanged.connect(self._selected)
        self.reload()

    # --- public ----------------------------------------------------------------------

    def folder(self) -> Path:
        """The policy folder, by the session's rule (a relative one is in the data folder)."""
        return policy_folders(self.settings)[0]

    def policies(self) -> list[Policy]:
        return list(self._policies)

    def current_policy(self) -> Policy | None:
        index = self.picker.currentIndex()
        return self._policies[index] if 0 <= index < len(self._policies) else None

    def select(self, ref: str) -> bool:
        """Select by id, key or file path; False when no policy matches."""
        for i, policy in enumerate(self._policies):
            if ref in (policy.id, policy_key(policy), str(policy.source)):
                self.picker.setCurrentIndex(i)
                return True
        return False

    def focus_picker(self) -> None:
        self.picker.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def show_rule(self, rule_id: str) -> bool:
        return self.viewer.show_rule(rule_id)

    # --- loading ---------------------------------------------------------------------

    def _schedule_reload(self, _path: str = "") -> None:
        self._reload_timer.start()

    def reload(self) -> None:
        """Re-read built-ins and the user's folder, keeping the selection when it still exists."""
        current = self.current_policy()
        key = policy_key(current) if current is not None else None
        folder = self.folder()
        user, problems = find_policies_with_errors(folder)
        self._problems = [(p, m) for p, m in problems if p != folder]
        self._policies = builtin_policies() + user
        self._watch(folder, user)
        self.picker.blockSignals(True)
        self.picker.clear()
        for policy in self._policies:
            status, _level = lint_summary(lint(policy))
            version = f" · v{policy.version}" if policy.version else ""
            origin = "" if policy.builtin else " · yours"
            self.picker.addItem(f"{policy.title or policy.id}{version}{origin} · {status}")
            tip = f"{policy.id} · sha256 {policy.short_sha}"
            if policy.source is not None and not policy.builtin:
                tip += f"\n{policy.source}"
            self.picker.setItemData(
                self.picker.count() - 1, rich_tooltip(tip), Qt.ItemDataRole.ToolTipRole
            )
        index = next((i for i, p in enumerate(self._policies) if key and policy_key(p) == key), 0)
        self.picker.setCurrentIndex(index if self._policies else -1)
        self.picker.blockSignals(False)
        self._show_problems()
        self._selected()

    def _watch(self, folder: Path, user: list[Policy]) -> None:
        wanted = {str(p.source) for p in user if p.source is not None}
        if folder.is_dir():
            wanted.add(str(folder))
        stale = [p for p in self.watcher.files() + self.watcher.directories() if p not in wanted]
        if stale:
            self.watcher.removePaths(stale)
        watched = set(self.watcher.files() + self.watcher.directories())
        missing = [p for p in wanted if p not in watched]
        if missing:
            self.watcher.addPaths(missing)

    def _show_problems(self) -> None:
        if not self._problems:
            self.problems.hide()
            return
        lines = [message for _path, message in self._problems[:3]]
        if len(self._problems) > 3:
            lines.append(f"…and {len(self._problems) - 3} more unreadable policy files.")
        self.problems.setText("\n".join(lines))
        self.problems.show()

    def _selected(self, _index: int = -1) -> None:
        policy = self.current_policy()
        if policy is None:
            self.status.setText("")
            self.viewer.show_policy(None)
            self.policy_changed.emit(None)
            return
        issues = lint(policy)
        status, level = lint_summary(issues)
        self.status.setText(status)
        self.status.setProperty("level", level)
        self.status.style().unpolish(self.status)
        self.status.style().polish(self.status)
        details = "\n".join(
            f"{i.severity}: {i.message}" + (f" (line {i.line})" if i.line else "") for i in issues
        )
        self.status.setToolTip(rich_tooltip(details or "No lint findings."))
        self.viewer.show_policy(policy)
        self.policy_changed.emit(policy)
