"""The Settings dialog: generated from the registry, saved to the settings file, invalid values
kept on screen, the token only ever in a keyring (asked off the GUI thread), a new host
replacing the endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backend import KeyringBackend

from safeguard_desktop import secrets
from safeguard_desktop.core.verdict import verdict_from_dict
from safeguard_desktop.qt import (
    QCheckBox,
    QComboBox,
    QDialogButtonBox,
    QDoubleSpinBox,
    QLineEdit,
    QPushButton,
    QSpinBox,
    Qt,
    QTimer,
)
from safeguard_desktop.settings import REGISTRY, Settings
from safeguard_desktop.ui.server_integration import ServerIntegration, install
from safeguard_desktop.ui.settings_dialog import SettingsDialog
from tests.fake_ollama import FakeOllama
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import save_screenshot
from tests.keyrings import MemoryKeyring


class SlowKeyring(MemoryKeyring):
    """Like a locked Secret Service: a write waits for an unlock prompt to be answered.

    The test answers (`answer_soon`) only after it has seen the window show the wait; the
    answer then comes from a Qt timer on the GUI thread, so a write returns only while the
    window keeps running its event loop; a frozen window would leave it waiting until the
    bound and `answered` records False.
    """

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self.unlocked = threading.Event()
        self.answered: list[bool] = []
        self.thread: threading.Thread | None = None
        self.answer_soon: Callable[[], None] = lambda: None  # set by the fixture

    def set_password(self, service: str, username: str, password: str) -> None:
        self.thread = threading.current_thread()
        self.unlocked.clear()
        self.waiting.set()
        self.answered.append(self.unlocked.wait(timeout=60))  # a hang bound
        self.waiting.clear()
        super().set_password(service, username, password)

    def answer_prompt(self) -> None:
        if self.waiting.is_set():
            self.unlocked.set()


def use_keyring(backend: KeyringBackend) -> Iterator[KeyringBackend]:
    before = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(before)


@pytest.fixture
def memory_keyring() -> Iterator[KeyringBackend]:
    yield from use_keyring(MemoryKeyring())


@pytest.fixture
def slow_keyring(qapp: Any) -> Iterator[KeyringBackend]:
    backend = SlowKeyring()
    prompt = QTimer()  # the user answering the unlock prompt, on the GUI thread
    prompt.setInterval(50)
    prompt.timeout.connect(backend.answer_prompt)
    backend.answer_soon = prompt.start
    try:
        yield from use_keyring(backend)
    finally:
        prompt.stop()
        prompt.deleteLater()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEGUARD_OLLAMA_TOKEN", raising=False)


@pytest.fixture
def integ(make_main_window, fake_ollama: FakeOllama, gui_settings: Settings) -> ServerIntegration:
    gui_settings.set("manage_server", False)
    win = make_main_window(fake_ollama.url, gui_settings)
    return install(win, win.ctx)


def open_with_shortcut(qtbot, integ: ServerIntegration) -> SettingsDialog:
    qtbot.keyClick(integ.window, Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    dialog = integ.settings_dialog
    assert dialog is not None
    qtbot.waitExposed(dialog)
    return dialog


def saved_file(settings: Settings) -> dict[str, object]:
    return json.loads(settings.path.read_text(encoding="utf-8")) if settings.path.exists() else {}


def click_save(qtbot, dialog: SettingsDialog) -> None:
    """Click Save and wait until the dialog has closed (saved) or shows why not."""
    with qtbot.waitSignal(dialog.save_finished, timeout=5000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)


def test_every_registry_setting_has_the_editor_its_type_asks_for(
    qtbot, integ: ServerIntegration, tmp_path: Path
) -> None:
    dialog = open_with_shortcut(qtbot, integ)

    groups = {dialog.tabs.tabText(i) for i in range(dialog.tabs.count())}
    assert groups == {s.group for s in REGISTRY}
    for setting in REGISTRY:
        editor = dialog.fields[setting.name].editor
        expected = (
            QComboBox
            if setting.choices
            else {bool: QCheckBox, int: QSpinBox, float: QDoubleSpinBox}.get(
                setting.type, QLineEdit
            )
        )
        assert isinstance(editor, expected), setting.name
        assert editor.toolTip() == setting.help
    num_ctx = dialog.fields["num_ctx"].editor
    assert (num_ctx.minimum(), num_ctx.maximum()) == (2048, 131072)
    token = dialog.fields["remote_token"].editor
    assert token.echoMode() == QLineEdit.EchoMode.Password
    assert dialog.findChild(QPushButton, "browse_ollama_path") is not None
    save_screenshot(dialog, tmp_path, "settings-dialog", publish=True)
    dialog.reject()


def test_saved_values_reach_the_settings_file(
    qtbot, integ: ServerIntegration, gui_settings: Settings
) -> None:
    dialog = open_with_shortcut(qtbot, integ)
    num_ctx = dialog.fields["num_ctx"].editor
    num_ctx.selectAll()
    qtbot.keyClicks(num_ctx, "32768")
    dialog.fields["effort"].editor.setCurrentText("high")

    click_save(qtbot, dialog)

    assert not dialog.isVisible()
    data = saved_file(gui_settings)
    assert (data["num_ctx"], data["effort"]) == (32768, "high")
    assert Settings(gui_settings.path)["num_ctx"] == 32768
    assert integ.window.ctx.settings["effort"] == "high"


def test_an_invalid_value_keeps_the_dialog_open_with_what_was_typed(
    qtbot, integ: ServerIntegration, gui_settings: Settings
) -> None:
    before = saved_file(gui_settings)
    dialog = open_with_shortcut(qtbot, integ)
    dialog.fields["num_ctx"].editor.setValue(8192)
    host = dialog.fields["host"]
    host.editor.setText("ftp://models.example")

    click_save(qtbot, dialog)

    assert dialog.isVisible()
    assert host.error.isVisible() and "http://" in host.error.text()
    assert host.editor.text() == "ftp://models.example"
    assert dialog.fields["num_ctx"].editor.value() == 8192
    assert dialog.tabs.tabText(dialog.tabs.currentIndex()) == "Model server"
    assert saved_file(gui_settings) == before

    host.editor.setText("127.0.0.1:11434")
    click_save(qtbot, dialog)
    assert not dialog.isVisible() and saved_file(gui_settings)["num_ctx"] == 8192


def test_a_token_is_refused_without_a_keyring(
    qtbot, integ: ServerIntegration, gui_settings: Settings
) -> None:
    assert not secrets.available()  # tests run with keyring's null backend
    dialog = open_with_shortcut(qtbot, integ)
    assert "No system keyring" in dialog.token_note.text()
    token = dialog.fields["remote_token"]
    token.editor.setText("s3cret-token")

    click_save(qtbot, dialog)

    assert dialog.isVisible()
    assert "No system keyring is available, so the token was not saved" in token.error.text()
    assert token.editor.text() == "s3cret-token"
    assert "s3cret" not in gui_settings.path.read_text() if gui_settings.path.exists() else True
    dialog.reject()


def test_a_token_goes_to_the_keyring_and_plain_http_is_flagged(
    qtbot, integ: ServerIntegration, memory_keyring: MemoryKeyring, gui_settings: Settings
) -> None:
    dialog = open_with_shortcut(qtbot, integ)
    qtbot.waitUntil(lambda: not dialog.busy)
    assert "MemoryKeyring" in dialog.token_note.text()
    dialog.fields["host"].editor.setText("http://10.0.0.7:11434")
    dialog.fields["remote_token"].editor.setText("s3cret-token")
    assert "unencrypted" in dialog.token_note.text()  # said before saving

    click_save(qtbot, dialog)

    assert not dialog.isVisible()
    assert memory_keyring.store == {("safeguard-desktop", "http://10.0.0.7:11434"): "s3cret-token"}
    assert "s3cret" not in gui_settings.path.read_text()
    ctx = integ.window.ctx
    qtbot.waitUntil(lambda: ctx.endpoint.url == "http://10.0.0.7:11434", timeout=5000)
    assert ctx.endpoint.token == "s3cret-token"
    qtbot.waitUntil(lambda: "unencrypted" in integ.panel.message.text(), timeout=5000)


def test_a_new_host_replaces_the_endpoint(
    qtbot, integ: ServerIntegration, fake_ollama: FakeOllama
) -> None:
    ctx = integ.window.ctx
    old_client = ctx.client
    with FakeOllama(models=("gpt-oss-safeguard:120b",)) as other:
        dialog = open_with_shortcut(qtbot, integ)
        dialog.fields["host"].editor.setText(other.url)
        click_save(qtbot, dialog)

        qtbot.waitUntil(lambda: ctx.endpoint.url == other.url, timeout=5000)
        assert ctx.client is not old_client
        qtbot.waitUntil(
            lambda: integ.panel.models.model.names() == ["gpt-oss-safeguard:120b"], timeout=5000
        )
        qtbot.waitUntil(lambda: other.url in integ.window.status_text("server"), timeout=5000)


def test_restore_defaults_fills_the_fields_without_saving(
    qtbot, integ: ServerIntegration, gui_settings: Settings
) -> None:
    gui_settings.set("num_ctx", 4096)
    dialog = open_with_shortcut(qtbot, integ)
    assert dialog.fields["num_ctx"].editor.value() == 4096
    buttons = dialog.findChild(QDialogButtonBox)
    restore = buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults)

    qtbot.mouseClick(restore, Qt.MouseButton.LeftButton)

    assert dialog.fields["num_ctx"].editor.value() == 16384
    assert gui_settings["num_ctx"] == 4096
    dialog.reject()


def test_a_stored_token_can_be_forgotten(
    qtbot, integ: ServerIntegration, memory_keyring: MemoryKeyring, gui_settings: Settings
) -> None:
    url = "https://models.example:443"
    gui_settings.set("host", url)
    memory_keyring.set_password("safeguard-desktop", url, "old-token")
    dialog = open_with_shortcut(qtbot, integ)
    qtbot.waitUntil(lambda: f"A token is stored for {url}" in dialog.token_note.text())
    assert dialog.fields["remote_token"].editor.text() == ""  # never shown back

    qtbot.mouseClick(dialog.forget_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.forget_button.isVisible())
    assert memory_keyring.store == {}
    click_save(qtbot, dialog)

    assert not dialog.isVisible()
    assert memory_keyring.store == {}


def test_the_window_stays_responsive_while_the_keyring_blocks(
    qtbot, integ: ServerIntegration, slow_keyring: SlowKeyring
) -> None:
    dialog = open_with_shortcut(qtbot, integ)
    qtbot.waitUntil(lambda: not dialog.busy)
    dialog.fields["remote_token"].editor.setText("s3cret-token")

    qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(dialog.busy_note.isVisible)
    assert "keyring" in dialog.busy_note.text()
    assert not dialog.save_button.isEnabled()
    slow_keyring.answer_soon()
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=30_000)

    assert slow_keyring.thread is not threading.main_thread()
    assert slow_keyring.answered == [True]  # the window ran its loop while the keyring waited
    assert slow_keyring.store == {("safeguard-desktop", "http://127.0.0.1:11434"): "s3cret-token"}
    assert dialog.save_button.isEnabled() and not dialog.busy_note.isVisible()


def test_closing_the_dialog_during_a_keyring_call_still_saves(
    qtbot, integ: ServerIntegration, slow_keyring: SlowKeyring, gui_settings: Settings
) -> None:
    dialog = open_with_shortcut(qtbot, integ)
    qtbot.waitUntil(lambda: not dialog.busy)
    dialog.fields["effort"].editor.setCurrentText("high")
    dialog.fields["remote_token"].editor.setText("s3cret-token")

    with qtbot.waitSignal(dialog.saved, timeout=5000):
        qtbot.mouseClick(dialog.save_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(dialog.busy_note.isVisible)
        dialog.reject()
        slow_keyring.answer_soon()

    assert not dialog.isVisible()
    assert saved_file(gui_settings)["effort"] == "high"
    assert slow_keyring.store == {("safeguard-desktop", "http://127.0.0.1:11434"): "s3cret-token"}
    qtbot.waitUntil(lambda: "Settings saved." in integ.window.statusBar().currentMessage())


def test_masking_applies_at_once_when_saved(
    qtbot, integ: ServerIntegration, gui_settings: Settings
) -> None:
    """Issue 15 item 4: no restart needed, and the rationale is hidden with the content."""
    review = integ.window.review
    review.editor.editor.setPlainText("a message a moderator should not have to read twice")
    assert not review.editor.masked.masked and not review.content_mask.masked
    dialog = open_with_shortcut(qtbot, integ)
    qtbot.waitUntil(lambda: not dialog.busy)
    dialog.fields["mask_content"].editor.setChecked(True)
    click_save(qtbot, dialog)
    qtbot.waitUntil(lambda: review.editor.masked.masked)

    verdict = review.verdict
    said = verdict_from_dict({"violation": True, "rationale": "The content says 'read twice'."})
    verdict.set_verdict(said, model="m", effort="low")
    assert "hidden" in verdict.rationale.text()
    integ.window.reveal.reveal()
    assert verdict.rationale.text() == "The content says 'read twice'."
    integ.window.reveal.conceal()
    assert "hidden" in verdict.rationale.text()
