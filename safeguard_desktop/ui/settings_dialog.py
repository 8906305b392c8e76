"""The Settings dialog, generated from the one registry `settings.REGISTRY`.

One tab per group; each setting gets the editor its type asks for, its help as caption and
tooltip, and an error line. Save checks every value first: a bad one is shown next to its
field and nothing is written, so whatever was typed stays. The remote token goes to the OS
keyring only; without a keyring the dialog says so and refuses it. Every keyring call runs
on a worker thread: a locked Secret Service can block on an unlock prompt for as long as the
user takes, and the window must not freeze meanwhile.

Signals:
    saved(SavedSettings): after a successful save (the dialog then closes).
    save_finished(bool): after every click on Save, True when everything was saved.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from safeguard_desktop import secrets
from safeguard_desktop.qt import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    Qt,
    QTabWidget,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.server_service import save_token
from safeguard_desktop.services.session import (
    HostError,
    configured_url,
    normalize_host,
    token_warning,
)
from safeguard_desktop.settings import REGISTRY, Setting, Settings, SettingsError, coerce
from safeguard_desktop.ui.async_utils import TaskKeeper

BROWSE = {"ollama_path": "file", "models_dir": "folder", "policy_folder": "folder"}
SERVER_KEYS = frozenset(
    {
        "ollama_path",
        "models_dir",
        "keep_alive",
        "num_parallel",
        "max_queue",
        "context_length",
        "flash_attention",
        "manage_server",
    }
)
ERROR_COLOUR = "#c62828"
WARNING_COLOUR = "#b45309"
INT_LIMIT = 2**31 - 1
KEYRING_BUSY = "Talking to the keyring…"
LOOKUP_DELAY_MS = 300  # ask the keyring about a typed host once typing pauses
T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class SavedSettings:
    """What a save changed, so the app can replace the endpoint or restart the server."""

    changed: frozenset[str]
    token_changed: bool = False
    warning: str | None = None  # e.g. a token over plain http

    @property
    def server_changed(self) -> bool:
        return bool(self.changed & SERVER_KEYS)


class SettingField(QWidget):
    """Editor, caption (the help line) and error line of one setting."""

    def __init__(self, setting: Setting, value: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setting = setting
        layout = self.box = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 4)
        layout.setSpacing(2)
        row = QHBoxLayout()
        self.editor = self._make_editor(setting)
        self.editor.setObjectName(f"setting_{setting.name}")
        self.editor.setToolTip(setting.help)
        row.addWidget(self.editor, 1)
        if isinstance(self.editor, QSpinBox | QDoubleSpinBox | QComboBox):
            self.editor.setMinimumWidth(180)
            row.setStretch(0, 0)
            row.addStretch(1)
        if setting.name in BROWSE:
            browse = QPushButton("Browse…", self)
            browse.setObjectName(f"browse_{setting.name}")
            browse.clicked.connect(self._browse)
            row.addWidget(browse)
        layout.addLayout(row)
        self.caption = QLabel(setting.help, self)
        self.caption.setObjectName("hint")
        self.caption.setTextFormat(Qt.TextFormat.PlainText)
        self.caption.setWordWrap(True)
        layout.addWidget(self.caption)
        self.error = QLabel(self)
        self.error.setObjectName("settingError")
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.error.hide()
        layout.addWidget(self.error)
        self.dialog: QFileDialog | None = None
        self.set_value(value)

    def _make_editor(self, setting: Setting) -> QWidget:
        if setting.choices:
            combo = QComboBox(self)
            combo.addItems(list(setting.choices))
            return combo
        if setting.type is bool:
            return QCheckBox(setting.title, self)
        if setting.type is int:
            spin = QSpinBox(self)
            low = -INT_LIMIT if setting.minimum is None else int(setting.minimum)
            high = INT_LIMIT if setting.maximum is None else int(setting.maximum)
            spin.setRange(low, high)
            spin.setGroupSeparatorShown(True)
            return spin
        if setting.type is float:
            double = QDoubleSpinBox(self)
            double.setDecimals(2)
            double.setRange(
                -1e9 if setting.minimum is None else setting.minimum,
                1e9 if setting.maximum is None else setting.maximum,
            )
            return double
        line = QLineEdit(self)
        if setting.secret:
            line.setEchoMode(QLineEdit.EchoMode.Password)
        return line

    def value(self) -> Any:
        editor = self.editor
        if isinstance(editor, QComboBox):
            return editor.currentText()
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QSpinBox | QDoubleSpinBox):
            return editor.value()
        assert isinstance(editor, QLineEdit)
        return editor.text().strip() if not self.setting.secret else editor.text()

    def set_value(self, value: Any) -> None:
        editor = self.editor
        if isinstance(editor, QComboBox):
            editor.setCurrentText(str(value))
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, QSpinBox):
            editor.setValue(int(value))
        elif isinstance(editor, QDoubleSpinBox):
            editor.setValue(float(value))
        elif isinstance(editor, QLineEdit):
            editor.setText("" if value is None else str(value))

    def show_error(self, text: str | None) -> None:
        self.error.setText(text or "")
        self.error.setVisible(bool(text))

    def _browse(self) -> None:
        current = str(self.value() or "")
        start = str(Path(current).expanduser().parent if current else Path.home())
        dialog = QFileDialog(self, f"Choose: {self.setting.title}", start)
        if BROWSE[self.setting.name] == "folder":
            dialog.setFileMode(QFileDialog.FileMode.Directory)
            dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
        else:
            dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(lambda path: self.set_value(path))
        self.dialog = dialog
        dialog.open()


def _path_problem(name: str, value: str) -> str | None:
    """An Ollama path that cannot run is caught here rather than at the next start."""
    if name != "ollama_path" or not value:
        return None
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / ("ollama.exe" if sys.platform == "win32" else "ollama")
    if path.is_file() and (sys.platform == "win32" or os.access(path, os.X_OK)):
        return None
    return "No runnable ollama program there: choose the ollama file itself with Browse…."


class SettingsDialog(QDialog):
    saved = Signal(object)
    save_finished = Signal(bool)

    def __init__(
        self,
        settings: Settings,
        parent: QWidget | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Settings")
        self.settings = settings
        self.env = os.environ if env is None else env
        self.fields: dict[str, SettingField] = {}
        self._token_forgotten = False
        self._stored: dict[str, bool] = {}  # address -> a token is stored (once asked)
        self._looking_up: set[str] = set()
        self._busy = 0  # keyring calls in flight
        self._saving = False
        self._keyring_lock = asyncio.Lock()  # one keyring call at a time
        self._tasks = TaskKeeper()
        # A task resumed after the widgets are gone would touch deleted Qt objects.
        self.destroyed.connect(self._tasks.cancel_all)
        self._lookup_timer = QTimer(self)
        self._lookup_timer.setSingleShot(True)
        self._lookup_timer.setInterval(LOOKUP_DELAY_MS)
        self._lookup_timer.timeout.connect(self._look_up_typed)
        self.tabs = QTabWidget(self)
        self._tab_of: dict[str, int] = {}
        groups: dict[str, QFormLayout] = {}
        for setting in REGISTRY:
            form = groups.get(setting.group)
            if form is None:
                page = QWidget(self.tabs)
                form = QFormLayout(page)
                form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                groups[setting.group] = form
                self.tabs.addTab(page, setting.group)
            value = "" if setting.secret else settings[setting.name]
            field = SettingField(setting, value, self)
            self.fields[setting.name] = field
            self._tab_of[setting.name] = self.tabs.count() - 1
            title = "" if setting.type is bool else f"{setting.title}:"
            label = QLabel(title, self)
            label.setToolTip(setting.help)
            label.setBuddy(field.editor)
            form.addRow(label, field)
        self._setup_host_and_token()

        self.problem = QLabel(self)
        self.problem.setObjectName("settingsProblem")
        self.problem.setWordWrap(True)
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.setStyleSheet(f"color: {ERROR_COLOUR};")
        self.problem.hide()
        self.busy_note = QLabel(KEYRING_BUSY, self)
        self.busy_note.setObjectName("keyringBusy")
        self.busy_note.hide()
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults,
            self,
        )
        self.save_button = buttons.button(QDialogButtonBox.StandardButton.Save)
        buttons.accepted.connect(self._save_clicked)
        buttons.rejected.connect(self.reject)
        defaults = buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults)
        defaults.setToolTip("Put the defaults in every field (nothing is saved until Save)")
        defaults.clicked.connect(self.restore_defaults)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.problem)
        layout.addWidget(self.busy_note)
        layout.addWidget(buttons)
        self.resize(680, 560)
        self._update_token_note()
        self._look_up_typed()

    # -- host and token --------------------------------------------------------------------------
    def _setup_host_and_token(self) -> None:
        host = self.fields["host"]
        if self.env.get("OLLAMA_HOST"):
            host.caption.setText(
                f"{host.setting.help} OLLAMA_HOST is set ({self.env['OLLAMA_HOST']}), "
                "so it is used instead of this value."
            )
        token = self.fields["remote_token"]
        self.token_note = QLabel(token)
        self.token_note.setObjectName("tokenStore")
        self.token_note.setWordWrap(True)
        self.token_note.setTextFormat(Qt.TextFormat.PlainText)
        token.box.insertWidget(2, self.token_note)
        self.forget_button = QPushButton("Forget the stored token", token)
        self.forget_button.setObjectName("forgetToken")
        self.forget_button.clicked.connect(self.forget_token)
        token.box.insertWidget(3, self.forget_button)
        editor = token.editor
        assert isinstance(editor, QLineEdit)
        editor.textChanged.connect(self._update_token_note)
        host_editor = host.editor
        assert isinstance(host_editor, QLineEdit)
        host_editor.textChanged.connect(self._update_token_note)

    def _url(self) -> str | None:
        """The saved address (OLLAMA_HOST first); no keyring read, unlike the endpoint."""
        try:
            return configured_url(self.settings, env=self.env)
        except HostError:
            return None

    def _typed_url(self) -> str | None:
        """The address the token would belong to, from what is typed now."""
        if self.env.get("OLLAMA_HOST"):
            return self._url()
        try:
            return normalize_host(str(self.fields["host"].value()))
        except HostError:
            return None

    def _update_token_note(self) -> None:
        token = str(self.fields["remote_token"].value())
        url = self._typed_url()
        stored = bool(url) and self._has_token(str(url))
        if not secrets.available():
            text = (
                "No system keyring is available here, so a token cannot be saved (it is never "
                "written to a file). Pass it for one session with SAFEGUARD_OLLAMA_TOKEN."
            )
            colour = WARNING_COLOUR
        else:
            where = f"Kept in the OS keyring ({secrets.backend_name()})."
            text = (
                f"{where} A token is stored for {url}; type a new one to replace it."
                if stored
                else where
            )
            colour = ""
        warning = token_warning(url, token) if url else None
        if warning:
            text, colour = f"{text} {warning}", WARNING_COLOUR
        self.token_note.setText(text)
        self.token_note.setStyleSheet(f"color: {colour};" if colour else "")
        self.forget_button.setVisible(stored)

    def _has_token(self, url: str) -> bool:
        """What the keyring said for `url`; until it has answered, ask once typing pauses."""
        if url not in self._stored and url not in self._looking_up:
            self._lookup_timer.start()
        return self._stored.get(url, False)

    def _look_up_typed(self) -> None:
        url = self._typed_url()
        if url and url not in self._stored and url not in self._looking_up and secrets.available():
            self._looking_up.add(url)
            self._tasks.spawn(self._look_up(url), name="keyring-lookup")

    async def _look_up(self, url: str) -> None:
        try:
            token = await self._keyring(secrets.read_token, url)
        finally:
            self._looking_up.discard(url)
        self._stored[url] = token is not None
        self._update_token_note()

    def forget_token(self) -> None:
        url = self._typed_url()
        if url and not self._busy:
            self._tasks.spawn(self._forget(url), name="keyring-forget")

    async def _forget(self, url: str) -> None:
        await self._keyring(secrets.delete_token, url)
        self._stored[url] = False
        self._token_forgotten = True
        self._update_token_note()

    async def _keyring(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run one keyring call on a worker thread, Save and Forget disabled meanwhile."""
        self._set_busy(1)
        try:
            async with self._keyring_lock:
                result = await asyncio.to_thread(call, *args, **kwargs)
        except asyncio.CancelledError:
            raise  # the dialog is gone: leave its widgets alone
        except BaseException:
            self._set_busy(-1)
            raise
        self._set_busy(-1)
        return result

    def _set_busy(self, step: int) -> None:
        self._busy += step
        busy = self._busy > 0
        self.busy_note.setVisible(busy)
        self.save_button.setEnabled(not busy)
        self.forget_button.setEnabled(not busy)

    @property
    def busy(self) -> bool:
        """A keyring call or a save is under way (or about to start)."""
        return self._busy > 0 or self._saving or bool(self._looking_up)

    # -- actions ---------------------------------------------------------------------------------
    def restore_defaults(self) -> None:
        for setting in REGISTRY:
            if not setting.secret:
                self.fields[setting.name].set_value(setting.default)
                self.fields[setting.name].show_error(None)

    def errors(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Every typed value checked against the registry (plus host and path checks)."""
        values: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for setting in REGISTRY:
            if setting.secret:
                continue
            raw = self.fields[setting.name].value()
            try:
                values[setting.name] = coerce(setting, raw)
            except SettingsError as exc:
                errors[setting.name] = str(exc)
                continue
            problem = _path_problem(setting.name, str(raw))
            if problem:
                errors[setting.name] = problem
        try:
            normalize_host(str(values.get("host", "")))
        except HostError as exc:
            errors["host"] = str(exc)
        token = str(self.fields["remote_token"].value())
        if token and not secrets.available():
            errors["remote_token"] = secrets.NO_BACKEND
        return values, errors

    def _save_clicked(self) -> None:
        if not self._saving:
            self._tasks.spawn(self._save_and_report(), name="settings-save")

    async def _save_and_report(self) -> None:
        self.save_finished.emit(await self.save_async())

    async def save_async(self) -> bool:
        """Check, write, close; on any problem show it and keep the dialog open as typed.

        Settings are written at once; the token then goes to the keyring off the GUI thread.
        Closed meanwhile, the save still completes and is announced.
        """
        if self._saving:
            return False
        self._saving = True
        self._lookup_timer.stop()  # a lookup still running finishes first (one call at a time)
        try:
            return await self._save()
        finally:
            self._saving = False

    async def _save(self) -> bool:
        values, errors = self.errors()
        for name, field in self.fields.items():
            field.show_error(errors.get(name))
        self.problem.hide()
        if errors:
            first = next(name for name in self.fields if name in errors)
            self.tabs.setCurrentIndex(self._tab_of[first])
            self.fields[first].editor.setFocus()
            return False
        before = {name: self.settings[name] for name in values}
        try:
            for name, value in values.items():
                self.settings.set(name, value)
            self.settings.save()
        except (SettingsError, OSError) as exc:
            for name, value in before.items():
                self.settings.set(name, value)
            reason = getattr(exc, "strerror", None) or exc
            self._fail(f"Settings could not be saved to {self.settings.path} ({reason}).")
            return False
        changed = frozenset(n for n, v in values.items() if before[n] != v)
        warning, token_changed = None, self._token_forgotten
        token = str(self.fields["remote_token"].value())
        if token:
            url = self._url() or normalize_host(str(values["host"]))
            try:
                warning = await self._keyring(save_token, url, token)
            except secrets.SecretStoreUnavailable as exc:
                self.fields["remote_token"].show_error(f"{exc} The other settings were saved.")
                self.tabs.setCurrentIndex(self._tab_of["remote_token"])
                self.saved.emit(SavedSettings(changed, token_changed))
                return False
            token_changed = True
        self.saved.emit(SavedSettings(changed, token_changed, warning))
        if self.isVisible():
            self.accept()
        return True

    def _fail(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.show()
