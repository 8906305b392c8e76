"""The Server view's Model hosts box, as a team lead sets up a second GPU: the local host
listed and checked, a host added (its token to the keyring), a host without the model
marked, the local one disabled, a host removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from safeguard_desktop import secrets
from safeguard_desktop.qt import QDialog, QMessageBox
from safeguard_desktop.settings import Settings
from safeguard_desktop.ui import hosts_panel
from safeguard_desktop.ui.hosts_panel import AddHostDialog, HostsPanel
from safeguard_desktop.ui.server_integration import install
from tests.fake_ollama import FakeOllama
from tests.fake_openai import FakeOpenAI
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import save_screenshot
from tests.keyrings import MemoryKeyring


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    mem = MemoryKeyring()
    keyring.set_keyring(mem)
    try:
        yield mem
    finally:
        keyring.set_keyring(previous)


def rows(panel: HostsPanel) -> list[str]:
    return [panel._cell(r, 0) for r in range(panel.table.rowCount())]


def select(panel: HostsPanel, name: str) -> None:
    panel.table.selectRow(rows(panel).index(name))


def test_hosts_are_listed_checked_added_marked_disabled_and_removed(
    qtbot, make_main_window, gui_settings: Settings, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, memory_keyring: MemoryKeyring,
) -> None:  # fmt: skip
    with FakeOllama() as local, FakeOllama(models=("qwen3:8b",)) as other, FakeOpenAI() as vllm:
        gui_settings.set("host", local.url)
        gui_settings.set("manage_server", False)
        gui_settings.save()
        win = make_main_window(local.url, gui_settings)
        integration = install(win, win.ctx)
        integration.view_action.trigger()
        panel = integration.panel.hosts
        assert rows(panel) == ["local"]
        qtbot.waitUntil(lambda: panel.health_text("local").startswith("up"), timeout=15_000)
        assert panel.health_text("local").endswith("has the model.")

        def fill(url: str, name: str, model: str = "", token: str = "") -> None:
            def accept(dialog: AddHostDialog) -> int:
                dialog.name.setText(name)
                dialog.url.setText(url)
                dialog.url.textEdited.emit(url)  # as typed: the kind follows the address
                dialog.model.setText(model)
                dialog.slots.setValue(2)
                dialog.token.setText(token)
                return QDialog.DialogCode.Accepted

            monkeypatch.setattr(AddHostDialog, "exec", accept)

        fill(other.url, "gpu2")
        panel.add_button.click()
        qtbot.waitUntil(lambda: rows(panel) == ["local", "gpu2"], timeout=15_000)
        qtbot.waitUntil(lambda: panel.health_text("gpu2").startswith("not used"),
                        timeout=15_000)  # fmt: skip
        assert "has no model named" in panel.health_text("gpu2")

        fill(vllm.url + "/v1", "vllm", "openai/gpt-oss-safeguard-20b", token="s3cret")
        panel.add_button.click()
        qtbot.waitUntil(lambda: rows(panel) == ["local", "gpu2", "vllm"], timeout=15_000)
        qtbot.waitUntil(lambda: panel.health_text("vllm").startswith("up"), timeout=15_000)
        assert panel._cell(2, 3) == "OpenAI-compatible" and panel._cell(2, 2) == "2"
        assert secrets.get_token(vllm.url + "/v1") == "s3cret"
        assert "s3cret" not in (Path(gui_settings.path).parent / "hosts.json").read_text()
        select(panel, "gpu2")
        assert "has no model named" in panel.detail.text()
        save_screenshot(integration.panel, tmp_path, "server-hosts", publish=True)

        select(panel, "local")
        assert not panel.remove_button.isEnabled()  # the managed server is disabled, not removed
        panel.enable_button.click()
        assert panel.health_text("local").startswith("disabled")
        assert "runs do not use it" in panel.detail.text()
        assert [h.name for h in win.ctx.hosts().select(None)] == ["gpu2", "vllm"]

        monkeypatch.setattr(
            hosts_panel.QMessageBox, "question",
            lambda *a, **k: QMessageBox.StandardButton.Yes,
        )  # fmt: skip
        select(panel, "gpu2")
        panel.remove_button.click()
        qtbot.waitUntil(lambda: rows(panel) == ["local", "vllm"], timeout=15_000)
