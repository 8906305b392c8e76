"""The Server panel and the first-run assistant driven like a moderator: buttons, a fake
Ollama in-process (attached) or started through the fake `ollama` executable (managed)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safeguard_desktop.engine import server_state
from safeguard_desktop.qt import QFileDialog, QMessageBox, Qt
from safeguard_desktop.settings import Settings
from safeguard_desktop.ui.main_window import MainWindow
from safeguard_desktop.ui.server_integration import ServerIntegration, install
from tests.fake_ollama import FakeOllama
from tests.gui_fixtures import *  # noqa: F403
from tests.gui_fixtures import MODEL, run_async, save_screenshot
from tests.server_fixtures import FAKE_BIN, free_port, reaper  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("reaper")
BIG = "gpt-oss-safeguard:120b"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OLLAMA_MODELS", "SAFEGUARD_OLLAMA_TOKEN", "FAKE_OLLAMA_MODELS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def local_settings(gui_settings: Settings) -> Settings:
    """The fake executable as `ollama_path`, a free loopback port, no autostart."""
    gui_settings.set("ollama_path", str(FAKE_BIN))
    gui_settings.set("host", f"http://127.0.0.1:{free_port()}")
    gui_settings.set("manage_server", False)
    gui_settings.save()
    return gui_settings


@pytest.fixture
def empty_fake() -> Iterator[FakeOllama]:
    """An attached server without models, pulling 10 GB/s (a 20b pull takes about 1.4 s)."""
    with FakeOllama(models=()) as fake:
        fake.pull_rate = 1e10
        yield fake


def open_server(qtbot, make_main_window, url: str, settings: Settings | None = None):
    win: MainWindow = make_main_window(url, settings)
    integration = install(win, win.ctx)
    integration.view_action.trigger()
    assert win.views.currentWidget() is integration.panel
    return win, integration


def wait_report(qtbot, integ: ServerIntegration, running: bool, timeout: int = 15_000) -> None:
    def done() -> bool:
        report = integ.panel.report
        return report is not None and report.status.running is running and not integ._starting

    qtbot.waitUntil(done, timeout=timeout)


def model_names(integ: ServerIntegration) -> list[str]:
    return integ.panel.models.model.names()


def test_attached_server_is_shown_as_not_ours_and_survives_quit(
    qtbot, make_main_window, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    win, integ = open_server(qtbot, make_main_window, fake_ollama.url)
    panel = integ.panel

    wait_report(qtbot, integ, running=True)
    qtbot.waitUntil(lambda: model_names(integ) == [MODEL], timeout=5000)

    assert "attached" in panel.fields["state"].text()
    assert panel.fields["version"].text() == fake_ollama.version
    assert not panel.stop_button.isEnabled()
    assert "not started by Safeguard Desktop" in panel.stop_button.toolTip()
    assert not panel.start_button.isEnabled()
    assert panel.models.model.data(panel.models.model.index(0, 1)) == "13.8 GB"
    save_screenshot(win, tmp_path, "server-panel-attached")

    run_async(qtbot, win.shutdown())
    win._closed = True
    assert httpx.get(fake_ollama.url).text == "Ollama is running"


def test_start_and_stop_a_managed_server_from_the_panel(
    qtbot, make_main_window, local_settings: Settings, tmp_path: Path
) -> None:
    win, integ = open_server(qtbot, make_main_window, local_settings["host"], local_settings)
    panel = integ.panel
    wait_report(qtbot, integ, running=False)
    assert panel.start_button.isEnabled() and not panel.stop_button.isEnabled()
    assert integ.assistant is None  # autostart is off: no nagging

    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    wait_report(qtbot, integ, running=True)

    status = panel.report.status
    assert status.managed and status.pid
    assert "started by Safeguard Desktop in this session" in panel.fields["state"].text()
    assert str(FAKE_BIN.resolve()) in panel.fields["binary"].text()
    assert panel.stop_button.isEnabled()
    assert win.status_text("ollama").startswith("● Ollama started here")
    qtbot.waitUntil(lambda: "Listening on" in panel.log_text(), timeout=5000)
    qtbot.waitUntil(lambda: model_names(integ) == [MODEL], timeout=5000)
    save_screenshot(win, tmp_path, "server-panel", publish=True)

    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    wait_report(qtbot, integ, running=False)

    assert not server_state.pid_alive(status.pid)
    assert win.status_text("ollama") == "Ollama stopped"
    assert panel.start_button.isEnabled()


def test_autostart_at_launch_and_quit_stops_only_what_it_started(
    qtbot, make_main_window, local_settings: Settings
) -> None:
    local_settings.set("manage_server", True)
    win, integ = open_server(qtbot, make_main_window, local_settings["host"], local_settings)

    wait_report(qtbot, integ, running=True)
    pid = integ.panel.report.status.pid
    assert pid and server_state.pid_alive(pid)
    assert integ.assistant is None  # program and model are there

    run_async(qtbot, win.shutdown(), timeout=20_000)
    win._closed = True
    assert not server_state.pid_alive(pid)


def test_pull_shows_progress_to_100_percent(qtbot, make_main_window, empty_fake) -> None:
    _win, integ = open_server(qtbot, make_main_window, empty_fake.url)
    models = integ.panel.models
    seen: list[float] = []
    integ.ops.progress.connect(lambda event: seen.append(event.percent or 0.0))
    qtbot.waitUntil(lambda: integ.assistant is not None and integ.assistant.isVisible())
    integ.assistant.close()  # model missing: the assistant offered help; use the panel here

    assert models.pull_name.text() == MODEL
    qtbot.mouseClick(models.pull_button, Qt.MouseButton.LeftButton)
    assert not models.pull_button.isEnabled()
    qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=10_000)

    assert integ.ops.last.ok, integ.ops.last.message
    assert models.progress.bar.format() == "100%"
    assert any(0 < p < 100 for p in seen)
    assert "13.8 GB of 13.8 GB" in models.progress.detail.text() or "Pulled" in (
        models.progress.detail.text()
    )
    assert "Pulled gpt-oss-safeguard:20b" in integ.panel.message.text()
    qtbot.waitUntil(lambda: model_names(integ) == [MODEL], timeout=5000)
    assert models.pull_button.isEnabled()


def test_cancelled_pull_resumes_where_it_stopped(qtbot, make_main_window, empty_fake) -> None:
    empty_fake.pull_rate = 5e9  # 65 GB: 13 s, far longer than the test waits
    _win, integ = open_server(qtbot, make_main_window, empty_fake.url)
    models = integ.panel.models
    models.pull_name.setText(BIG)
    percents: list[float] = []
    integ.ops.progress.connect(lambda event: percents.append(event.percent or 0.0))

    qtbot.mouseClick(models.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: any(p > 2 for p in percents), timeout=10_000)
    qtbot.mouseClick(models.progress.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)

    assert integ.ops.last.cancelled
    assert "Pull cancelled" in integ.panel.message.text()
    assert BIG not in model_names(integ)
    assert models.pull_name.text() == BIG  # what was typed is kept

    integ.ops.last = None
    qtbot.mouseClick(models.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "resuming at" in models.progress.detail.text(), timeout=10_000)
    qtbot.mouseClick(models.progress.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)


def _answer(qtbot, integ: ServerIntegration, text: str) -> None:
    qtbot.waitUntil(
        lambda: (
            isinstance(integ.panel.models.last_dialog, QMessageBox)
            and integ.panel.models.last_dialog.isVisible()
        )
    )
    box = integ.panel.models.last_dialog
    assert isinstance(box, QMessageBox)
    button = next(b for b in box.buttons() if b.text().replace("&", "") == text)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def test_delete_asks_first(qtbot, make_main_window, fake_ollama: FakeOllama) -> None:
    _win, integ = open_server(qtbot, make_main_window, fake_ollama.url)
    models = integ.panel.models
    qtbot.waitUntil(lambda: model_names(integ) == [MODEL], timeout=5000)
    assert models.select(MODEL)
    qtbot.waitUntil(lambda: "GPU memory unknown" in models.fit_label.text(), timeout=5000)

    qtbot.mouseClick(models.delete_button, Qt.MouseButton.LeftButton)
    _answer(qtbot, integ, "Cancel")
    qtbot.wait(50)
    assert integ.ops.last is None and fake_ollama.registry.get(MODEL) is not None

    qtbot.mouseClick(models.delete_button, Qt.MouseButton.LeftButton)
    _answer(qtbot, integ, "Delete")
    qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)

    assert integ.ops.last.ok and fake_ollama.registry.get(MODEL) is None
    qtbot.waitUntil(lambda: model_names(integ) == [], timeout=5000)


def test_warm_up_and_unload_show_the_vram_bar(
    qtbot, make_main_window, fake_ollama: FakeOllama
) -> None:
    _win, integ = open_server(qtbot, make_main_window, fake_ollama.url)
    models = integ.panel.models
    qtbot.waitUntil(lambda: model_names(integ) == [MODEL], timeout=5000)
    models.select(MODEL)

    qtbot.mouseClick(models.warm_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: MODEL in models.loaded.bars, timeout=10_000)
    assert "in GPU memory" in models.loaded.bars[MODEL].format()

    qtbot.mouseClick(models.unload_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not models.loaded.bars, timeout=10_000)


def test_first_run_assistant_when_the_program_is_missing(
    qtbot, make_main_window, local_settings: Settings, tmp_path: Path
) -> None:
    local_settings.set("manage_server", True)
    local_settings.set("ollama_path", str(tmp_path / "nowhere" / "ollama"))
    win, integ = open_server(qtbot, make_main_window, local_settings["host"], local_settings)

    qtbot.waitUntil(
        lambda: integ.assistant is not None and integ.assistant.isVisible(), timeout=10_000
    )
    assistant = integ.assistant
    assert "Ollama is not installed on this computer" in assistant.summary.text()
    assert win.status_text("ollama") == "Ollama not found"
    assert "does not exist" in integ.panel.message.text()
    save_screenshot(assistant, tmp_path, "first-run-assistant", publish=True)

    assistant.locate_chosen.emit(str(FAKE_BIN))  # as if picked in the file dialog
    qtbot.waitUntil(lambda: assistant.state is not None and assistant.state.ready, timeout=15_000)

    assert "All set" in assistant.summary.text()
    assert Settings(local_settings.path)["ollama_path"] == str(FAKE_BIN.resolve())
    assert integ.panel.report.status.managed


def test_first_run_assistant_offers_the_missing_model(
    qtbot, make_main_window, empty_fake: FakeOllama
) -> None:
    _win, integ = open_server(qtbot, make_main_window, empty_fake.url)
    qtbot.waitUntil(
        lambda: integ.assistant is not None and integ.assistant.isVisible(), timeout=10_000
    )
    assistant = integ.assistant
    assert f"The model {MODEL} is not on the server yet" in assistant.summary.text()

    qtbot.mouseClick(assistant.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: assistant.state is not None and assistant.state.ready, timeout=10_000)
    assert assistant.progress.bar.format() == "100%"
    assert assistant.close_button.text() == "&Done"


def test_a_crashed_managed_server_is_restarted_and_said_so(
    qtbot, make_main_window, local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_settings.set("manage_server", True)
    win, integ = open_server(qtbot, make_main_window, local_settings["host"], local_settings)
    wait_report(qtbot, integ, running=True)
    qtbot.waitUntil(lambda: integ.panel.report.status.pid is not None, timeout=30_000)
    first = integ.panel.report.status.pid
    assert integ.panel.report.status.managed
    os.kill(first, signal.SIGKILL)  # the crash, once the server is up

    qtbot.waitUntil(
        lambda: win.status_text("ollama").startswith("● Ollama restarted"), timeout=30_000
    )

    assert "Ollama restarted (pid" in integ.panel.event_label.text()
    assert f"pid {first}" not in win.status_text("ollama")


def _choose_file(qtbot, integ: ServerIntegration, path: Path) -> None:
    dialog = integ.panel.models.last_dialog
    assert isinstance(dialog, QFileDialog) and dialog.isVisible()
    dialog.selectFile(str(path))
    dialog.accept()


def test_gguf_import_from_the_file_dialog_with_errors_inline(
    qtbot, make_main_window, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    _win, integ = open_server(qtbot, make_main_window, fake_ollama.url)
    models = integ.panel.models
    models.pull_name.setText("mine:1")
    notes = tmp_path / "notes.gguf"
    notes.write_text("this is not a model")

    qtbot.mouseClick(models.gguf_button, Qt.MouseButton.LeftButton)
    _choose_file(qtbot, integ, notes)
    qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)

    assert "is not a GGUF model file" in integ.panel.message.text()
    assert integ.panel.message.level == "error"
    assert models.pull_name.text() == "mine:1"

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 400)
    integ.ops.last = None
    qtbot.mouseClick(models.gguf_button, Qt.MouseButton.LeftButton)
    _choose_file(qtbot, integ, gguf)
    qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)

    assert integ.ops.last.ok, integ.ops.last.message
    assert "Imported mine:1 from model.gguf" in integ.panel.message.text()
    qtbot.waitUntil(lambda: "mine:1" in model_names(integ), timeout=5000)


def test_bundle_export_and_import_through_the_dialogs(
    qtbot, make_main_window, gui_settings: Settings, tmp_path: Path
) -> None:
    from tests.test_bundle import MANIFEST, NAME, make_models_dir

    make_models_dir(tmp_path / "source")
    gui_settings.set("models_dir", str(tmp_path / "source"))
    bundle = tmp_path / "tiny.tar"
    with FakeOllama(models=(NAME,)) as fake:
        _win, integ = open_server(qtbot, make_main_window, fake.url)
        models = integ.panel.models
        qtbot.waitUntil(lambda: model_names(integ) == [NAME], timeout=5000)
        models.select(NAME)

        qtbot.mouseClick(models.export_button, Qt.MouseButton.LeftButton)
        _choose_file(qtbot, integ, bundle)
        qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)
        assert integ.ops.last.ok, integ.ops.last.message
        assert bundle.is_file() and f"Wrote {bundle}" in integ.panel.message.text()

        gui_settings.set("models_dir", str(tmp_path / "offline"))
        integ.ops.last = None
        qtbot.mouseClick(models.bundle_button, Qt.MouseButton.LeftButton)
        _choose_file(qtbot, integ, bundle)
        qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)

        assert integ.ops.last.ok, integ.ops.last.message
        assert (tmp_path / "offline" / MANIFEST).is_file()
        assert models.progress.bar.format() == "100%"
        assert f"Imported {NAME} from the bundle" in integ.panel.message.text()


def test_a_gguf_import_never_replaces_a_model_without_asking(
    qtbot, make_main_window, fake_ollama: FakeOllama, tmp_path: Path
) -> None:
    """Issue 15 item 5: the pull field's default name no longer names the import, and an
    installed name is asked about; models that are not gpt-oss-safeguard are marked."""
    from safeguard_desktop.qt import QMessageBox
    from safeguard_desktop.ui.models_panel import gguf_model_name

    assert gguf_model_name(Path("Qwen3_8B-Q4_K_M.gguf")) == "qwen3:8b"
    assert gguf_model_name(Path("my model.gguf")) == "my-model"
    _win, integ = open_server(qtbot, make_main_window, fake_ollama.url)
    models = integ.panel.models
    qtbot.waitUntil(lambda: "gpt-oss-safeguard:20b" in model_names(integ), timeout=5000)
    models.pull_name.clear()
    gguf = tmp_path / "gpt-oss-safeguard-20b-custom.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 400)
    qtbot.mouseClick(models.gguf_button, Qt.MouseButton.LeftButton)
    _choose_file(qtbot, integ, gguf)
    qtbot.waitUntil(lambda: isinstance(models.last_dialog, QMessageBox), timeout=5000)
    box = models.last_dialog
    assert "gpt-oss-safeguard:20b is installed" in box.text()
    box.reject()  # Cancel: nothing is imported
    qtbot.waitUntil(lambda: not box.isVisible())
    assert integ.ops.last is None and "Imported" not in integ.panel.message.text()

    other = tmp_path / "qwen3-8b.gguf"
    other.write_bytes(b"GGUF" + bytes(range(256)) * 400)
    integ.ops.last = None
    qtbot.mouseClick(models.gguf_button, Qt.MouseButton.LeftButton)
    _choose_file(qtbot, integ, other)
    qtbot.waitUntil(lambda: integ.ops.last is not None, timeout=5000)
    assert "Imported qwen3:8b from qwen3-8b.gguf" in integ.panel.message.text()
    qtbot.waitUntil(lambda: "qwen3:8b" in model_names(integ), timeout=5000)
    row = models.model.row_of("qwen3:8b")
    shown = models.model.index(row, 0).data()
    assert "not a safety model" in shown
    safe_row = models.model.row_of("gpt-oss-safeguard:20b")
    assert models.model.index(safe_row, 0).data() == "gpt-oss-safeguard:20b"
    save_screenshot(_win, tmp_path, "server-models-not-safety", publish=True)


def test_a_server_gone_away_is_not_still_called_attached(
    qtbot, make_main_window, tmp_path: Path
) -> None:
    """Issue 15 item 6: after the attached Ollama died the status bar said "Not running"
    and "Attached to Ollama" at once."""
    fake = FakeOllama()
    fake.start()
    try:
        win, _integ = open_server(qtbot, make_main_window, fake.url)
        qtbot.waitUntil(lambda: win.status_text("ollama") == "Attached to Ollama", timeout=15_000)
    finally:
        fake.stop()
    win.monitor.check_now()
    qtbot.waitUntil(lambda: "Not running" in win.status_text("server"), timeout=15_000)
    qtbot.waitUntil(lambda: win.status_text("ollama") != "Attached to Ollama")
