"""The Server view's "Model hosts" box: the hosts queue and evaluation runs spread over.

Lists every host (the managed local Ollama first, as `local`) with its kind, address, model,
slots and health; marks one that lacks the model or serves other weights. Add…, Remove,
Enable/Disable and Check go through `Session.hosts()` (services/hosts.py); the keyring and
the network are used off the GUI thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from safeguard_desktop.hosts import KINDS, LOCAL, MAX_SLOTS, HostConfig, kind_of_url
from safeguard_desktop.qt import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QShowEvent,
    QSpinBox,
    Qt,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.hosts import HostConfigError, HostStatus
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper

log = logging.getLogger("safeguard.ui.hosts")
COLUMNS = ("Name", "Health", "Slots", "Kind", "Address", "Model")
KIND_TITLES = {"ollama": "Ollama", "openai": "OpenAI-compatible"}


class AddHostDialog(QDialog):
    """Name, address, kind, model, slots and token of a new host."""

    def __init__(self, default_model: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a model host")
        form = QFormLayout(self)
        self.name = QLineEdit(self)
        self.name.setObjectName("hostName")
        self.name.setPlaceholderText("gpu2")
        self.url = QLineEdit(self)
        self.url.setObjectName("hostUrl")
        self.url.setPlaceholderText("http://gpu2:11434  or  http://gpu3:8000/v1")
        self.kind = QComboBox(self)
        self.kind.setObjectName("hostKind")
        for kind in KINDS:
            self.kind.addItem(KIND_TITLES[kind], kind)
        self._kind_chosen = False
        self.kind.activated.connect(self._chosen)
        self.url.textEdited.connect(self._guess_kind)
        self.model = QLineEdit(self)
        self.model.setObjectName("hostModel")
        self.model.setPlaceholderText(f"{default_model} (the model setting)")
        self.slots = QSpinBox(self)
        self.slots.setObjectName("hostSlots")
        self.slots.setRange(1, MAX_SLOTS)
        self.token = QLineEdit(self)
        self.token.setObjectName("hostToken")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("optional; kept in the system keyring only")
        form.addRow("&Name:", self.name)
        form.addRow("&Address:", self.url)
        form.addRow("&Kind:", self.kind)
        form.addRow("&Model on that host:", self.model)
        form.addRow("&Slots (requests at once):", self.slots)
        form.addRow("&Token:", self.token)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Add host")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _chosen(self) -> None:
        self._kind_chosen = True

    def _guess_kind(self, text: str) -> None:
        if not self._kind_chosen:
            self.kind.setCurrentIndex(KINDS.index(kind_of_url(text.strip())))


class HostsPanel(QGroupBox):
    """See the module doc. `notice(text, level)` reports what happened."""

    notice = Signal(str, str)

    def __init__(self, ctx: Session, parent: QWidget | None = None) -> None:
        super().__init__("Model hosts", parent)
        self.setObjectName("hostsPanel")
        self.ctx = ctx
        self._tasks = TaskKeeper()
        self._statuses: dict[str, HostStatus] = {}
        self._checked_once = False
        layout = QVBoxLayout(self)
        hint = QLabel(
            "Queue and evaluation runs spread their items over every enabled host that has "
            "the model.",
            self,
        )
        hint.setWordWrap(True)
        layout.addWidget(hint)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setObjectName("hostsTable")
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setTabKeyNavigation(False)
        rows = self.table.fontMetrics().lineSpacing() + 12
        self.table.setMinimumHeight(rows * 4)  # the header and three hosts at least
        self.table.setMaximumHeight(rows * 7)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setWordWrap(False)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table)
        self.detail = QLabel(self)
        self.detail.setObjectName("hostDetail")
        self.detail.setTextFormat(Qt.TextFormat.PlainText)  # a server's words are never HTML
        self.detail.setWordWrap(True)
        self.detail.setMinimumHeight(self.detail.fontMetrics().lineSpacing() * 2 + 4)
        layout.addWidget(self.detail)
        buttons = QHBoxLayout()
        self.add_button = QPushButton("&Add host…", self)
        self.add_button.setObjectName("addHost")
        self.add_button.clicked.connect(self.add_host)
        self.remove_button = QPushButton("Remo&ve", self)
        self.remove_button.setObjectName("removeHost")
        self.remove_button.clicked.connect(self.remove_host)
        self.enable_button = QPushButton("&Disable", self)
        self.enable_button.setObjectName("enableHost")
        self.enable_button.clicked.connect(self.toggle_host)
        self.check_button = QPushButton("Check &hosts", self)
        self.check_button.setObjectName("checkHosts")
        self.check_button.setToolTip("Ask every host for its health and models")
        self.check_button.clicked.connect(self.check)
        for button in (self.add_button, self.remove_button, self.enable_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(self.check_button)
        layout.addLayout(buttons)
        self.fill()

    # -- display ---------------------------------------------------------------------------------
    def hosts(self) -> list[HostConfig]:
        return self.ctx.hosts().all()

    def selected(self) -> HostConfig | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        name = self._cell(rows[0].row(), 0)
        return next((h for h in self.hosts() if h.name == name), None)

    def fill(self) -> None:
        keep = self.selected()
        hosts = self.hosts()
        default_model = str(self.ctx.settings["model"])
        self.table.setRowCount(len(hosts))
        for row, host in enumerate(hosts):
            status = self._statuses.get(host.name)
            health, detail = self._health(host, status)
            cells = (
                host.name,
                health,
                str(host.slots),
                KIND_TITLES.get(host.kind, host.kind),
                host.url,
                host.model_for(default_model),
            )
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)  # plain text: a server's words are never HTML
                if col == 0 and not host.enabled:
                    item.setToolTip("Disabled: runs do not use it")
                if col == 1:
                    item.setToolTip(detail)
                    item.setData(Qt.ItemDataRole.UserRole, detail)
                if not host.enabled:
                    item.setForeground(self.palette().placeholderText())
                self.table.setItem(row, col, item)
            if keep is not None and keep.name == host.name:
                self.table.selectRow(row)
        self._update_buttons()

    @staticmethod
    def _health(host: HostConfig, status: HostStatus | None) -> tuple[str, str]:
        """(the short word the table shows, the whole sentence for the line below it)."""
        if not host.enabled:
            return "disabled", f"{host.name} is disabled: runs do not use it."
        if status is None:
            return "not checked yet", "Not checked yet: Check hosts asks every host."
        probe = status.probe
        if not probe.healthy:
            return "DOWN", f"{host.name} is down: {probe.problem or 'it does not answer'}"
        if status.mark:
            return "not used", f"{host.name} is not used: {status.mark}"
        version = f" {probe.version}" if probe.version else ""
        return f"up{version}", f"{host.name} is up{version} and has the model."

    def health_text(self, name: str) -> str:
        """The health the table shows for the host, and the sentence behind it."""
        for row in range(self.table.rowCount()):
            if self._cell(row, 0) == name:
                item = self.table.item(row, 1)
                detail = item.data(Qt.ItemDataRole.UserRole) if item is not None else ""
                return f"{self._cell(row, 1)} — {detail}"
        raise KeyError(name)

    def _cell(self, row: int, col: int) -> str:
        item = self.table.item(row, col)
        return item.text() if item is not None else ""

    def _update_buttons(self) -> None:
        host = self.selected()
        rows = self.table.selectionModel().selectedRows()
        item = self.table.item(rows[0].row(), 1) if rows else None
        self.detail.setText(
            str(item.data(Qt.ItemDataRole.UserRole)) if item is not None
            else "Select a host to see its health in full."
        )  # fmt: skip
        self.remove_button.setEnabled(host is not None and not host.managed)
        self.remove_button.setToolTip(
            "The managed local Ollama cannot be removed; disable it instead."
            if host is not None and host.managed
            else "Remove the host (and its token)"
        )
        self.enable_button.setEnabled(host is not None)
        self.enable_button.setText(
            "&Enable" if host is not None and not host.enabled else "&Disable"
        )

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._checked_once:
            self._checked_once = True
            self.check()

    # -- actions ---------------------------------------------------------------------------------
    def check(self) -> None:
        """Probe every host (in the background); the table shows health when it answers."""
        self.check_button.setEnabled(False)
        self.check_button.setText("Checking…")
        self._tasks.spawn(self._check(), name="hosts-check")

    async def _check(self) -> None:
        try:
            statuses = await self.ctx.hosts().statuses()
        except Exception as exc:  # a check that fails says so, the table stays
            log.warning("hosts check failed: %s", exc)
            self.notice.emit(f"The hosts could not be checked: {exc}", "error")
            statuses = []
        finally:
            with contextlib.suppress(RuntimeError):  # the panel may be gone at shutdown
                self.check_button.setEnabled(True)
                self.check_button.setText("Check &hosts")
        self._statuses = {s.config.name: s for s in statuses}
        with contextlib.suppress(RuntimeError):
            self.fill()

    def add_host(self) -> None:
        dialog = AddHostDialog(str(self.ctx.settings["model"]), self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        self._tasks.spawn(
            self._add(
                dialog.name.text(), dialog.url.text(), str(dialog.kind.currentData()),
                dialog.model.text(), dialog.slots.value(), dialog.token.text() or None,
            ),
            name="hosts-add",
        )  # fmt: skip

    async def _add(
        self, name: str, url: str, kind: str, model: str, slots: int, token: str | None
    ) -> None:
        try:
            host = await asyncio.to_thread(  # the token goes to the keyring: off the GUI thread
                lambda: self.ctx.hosts().add(
                    name, url, kind=kind, model=model, slots=slots, token=token
                )
            )
        except HostConfigError as exc:
            self.notice.emit(str(exc), "error")
            return
        except Exception as exc:  # the keyring's own errors: the host is added, not its token
            self.notice.emit(f"The host was added, but its token could not be kept: {exc}",
                             "warning")  # fmt: skip
            self.fill()
            self.check()
            return
        self.notice.emit(f"Host {host.name} added; checking it…", "info")
        self.fill()
        self.check()

    def remove_host(self) -> None:
        host = self.selected()
        if host is None or host.managed:
            return
        answer = QMessageBox.question(
            self,
            "Remove host",
            f"Remove the host {host.name} ({host.url})? Reviews it made stay in the history.",
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        self._tasks.spawn(self._remove(host.name), name="hosts-remove")

    async def _remove(self, name: str) -> None:
        try:
            await asyncio.to_thread(self.ctx.hosts().remove, name)  # deletes its keyring token
        except HostConfigError as exc:
            self.notice.emit(str(exc), "error")
            return
        self._statuses.pop(name, None)
        self.notice.emit(f"Host {name} removed.", "info")
        self.fill()

    def toggle_host(self) -> None:
        host = self.selected()
        if host is None:
            return
        try:
            changed = self.ctx.hosts().set_enabled(host.name, not host.enabled)
        except HostConfigError as exc:
            self.notice.emit(str(exc), "error")
            return
        state = "enabled" if changed.enabled else "disabled: runs do not use it"
        where = "the local server" if changed.name == LOCAL else changed.name
        self.notice.emit(f"Host {where} {state}.", "info")
        self.fill()

    async def shutdown(self) -> None:
        self._tasks.cancel_all()
        with contextlib.suppress(Exception):
            await self._tasks.wait_all(timeout=2)
