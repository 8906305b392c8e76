"""`safeguard-desktop server ...` and `models ...` as a user runs them: output, JSON, exit codes."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from safeguard_desktop.cli import main
from safeguard_desktop.engine import server_state
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama
from tests.test_bundle import MANIFEST, NAME, make_models_dir, snapshot

pytest_plugins = ["tests.server_fixtures"]
REPO = Path(__file__).resolve().parents[1]
MODEL = "gpt-oss-safeguard:20b"


def cli(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_clean_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- server ------------------------------------------------------------------------------------
def test_server_start_status_logs_stop(
    settings: Settings, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = settings["host"]

    code, out, err = cli(capsys, data_dir, "server", "start")
    assert code == 0, err
    assert out.startswith("Started Ollama 0.12.10 at " + host) and "keeps running" in out

    code, out, _ = cli(capsys, data_dir, "server", "status", "--json")
    status = json.loads(out)
    assert code == 0
    assert (status["running"], status["managed"], status["host"]) == (True, True, host)
    assert status["version"] == "0.12.10" and isinstance(status["pid"], int)
    assert status["binary"].endswith("tests/bin/ollama") and status["binary_version"] == "0.12.10"
    assert status["loaded"] == []

    code, out, _ = cli(capsys, data_dir, "server", "start")
    assert code == 0 and "already running" in out and "started by Safeguard Desktop" in out

    code, out, _ = cli(capsys, data_dir, "server", "logs", "-n", "3")
    assert code == 0 and len(out.splitlines()) == 3 and "[GIN]" in out

    code, out, _ = cli(capsys, data_dir, "server", "stop")
    assert code == 0 and out.startswith(f"Stopped Ollama (pid {status['pid']})")
    assert not server_state.pid_alive(status["pid"])

    code, out, _ = cli(capsys, data_dir, "server", "status", "--json")
    assert json.loads(out)["running"] is False and json.loads(out)["pid"] is None


def test_a_crashed_server_started_from_the_cli_is_reported(
    settings: Settings,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, err = cli(capsys, data_dir, "server", "start")
    assert code == 0, err
    pid = json.loads(cli(capsys, data_dir, "server", "status", "--json")[1])["pid"]
    os.kill(pid, signal.SIGKILL)  # the crash, at a moment the test chooses
    deadline = time.monotonic() + 30
    while server_state.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(2):  # said every time until the next start, not only once
        status = json.loads(cli(capsys, data_dir, "server", "status", "--json")[1])
        assert (status["running"], status["managed"]) == (False, False)
        assert f"pid {pid}" in status["problem"] and "no longer running" in status["problem"]


def test_status_and_stop_of_a_server_we_did_not_start(
    settings: Settings, data_dir: Path, fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.load(fake.registry.get(MODEL), "5m", 8192)  # type: ignore[arg-type]
    code, out, _ = cli(capsys, data_dir, "server", "status", "--json", "--host", fake.url)
    status = json.loads(out)
    assert (status["running"], status["managed"], status["pid"]) == (True, False, None)
    assert [m["name"] for m in status["loaded"]] == [MODEL]
    assert status["loaded"][0]["context_length"] == 8192

    code, out, err = cli(capsys, data_dir, "server", "stop", "--host", fake.url)

    assert code == 1 and out == ""
    assert "not started by Safeguard Desktop" in one_clean_line(err)
    assert httpx.get(fake.url).text == "Ollama is running"


def test_start_without_ollama_says_where_to_get_it(
    settings: Settings,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.set("ollama_path", "")
    settings.save()
    monkeypatch.setenv("PATH", "")
    code, _, err = cli(capsys, data_dir, "server", "start")
    assert code == 1
    assert "https://ollama.com/download" in one_clean_line(err)


def test_start_on_a_port_held_by_another_program(
    settings: Settings, data_dir: Path, other_http_server: int, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{other_http_server}"
    code, _, err = cli(capsys, data_dir, "server", "start", "--host", url)
    assert code == 1
    assert f"Port {other_http_server} is taken by another program" in one_clean_line(err)


def test_logs_before_any_start(
    settings: Settings, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, data_dir, "server", "logs")
    assert code == 1 and "No server log yet" in one_clean_line(err)


def test_token_set_without_a_keyring_is_refused_and_not_stored(
    settings: Settings,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("sup3r-secret\n"))
    code, _, err = cli(capsys, data_dir, "server", "token", "set", "--host", "https://gpu.example")
    assert code == 1
    assert "No system keyring is available" in one_clean_line(err)
    stored = b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())
    assert b"sup3r-secret" not in stored
    assert sys.stdin.readline() == "sup3r-secret\n"  # refused before the token was read


def test_token_clear_without_a_keyring_does_not_claim_it_removed_one(
    settings: Settings, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(
        capsys, data_dir, "server", "token", "clear", "--host", "https://gpu.example"
    )
    assert code == 1 and out == ""
    assert "No system keyring is available here" in one_clean_line(err)
    assert "nothing to remove" in one_clean_line(err)


def test_token_set_with_a_keyring_warns_about_plain_http(
    settings: Settings,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keyring
    from keyring.backend import KeyringBackend

    class Memory(KeyringBackend):
        priority = 1  # type: ignore[assignment]
        store: ClassVar[dict[tuple[str, str], str]] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.store.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(Memory())
    try:
        monkeypatch.setattr(sys, "stdin", io.StringIO("tok\n"))
        code, out, err = cli(
            capsys, data_dir, "server", "token", "set", "--host", "http://10.0.0.5:11434"
        )
        assert code == 0 and "saved in the OS keyring (Memory)" in out
        assert "unencrypted" in err
        assert Memory.store == {("safeguard-desktop", "http://10.0.0.5:11434"): "tok"}
        code, out, _ = cli(
            capsys, data_dir, "server", "token", "clear", "--host", "http://10.0.0.5:11434"
        )
        assert code == 0 and Memory.store == {}
    finally:
        keyring.set_keyring(previous)


# -- models ------------------------------------------------------------------------------------
def test_models_list_ps_show_json(
    settings: Settings, data_dir: Path, fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, data_dir, "models", "list", "--json", "--host", fake.url)
    listed = json.loads(out)
    assert code == 0 and listed[0]["name"] == MODEL and listed[0]["size"] == 13_780_173_839

    code, out, _ = cli(capsys, data_dir, "models", "warm", MODEL, "--host", fake.url)
    assert code == 0 and f"{MODEL} is loaded" in out

    code, out, _ = cli(capsys, data_dir, "models", "ps", "--json", "--host", fake.url)
    loaded = json.loads(out)
    assert [m["name"] for m in loaded] == [MODEL] and loaded[0]["size_vram"] > 0

    code, out, _ = cli(capsys, data_dir, "models", "show", MODEL, "--json", "--host", fake.url)
    shown = json.loads(out)
    assert "thinking" in shown["capabilities"] and shown["warnings"] == []

    code, out, _ = cli(capsys, data_dir, "models", "unload", MODEL, "--host", fake.url)
    assert code == 0 and fake.running() == []


def test_missing_model_is_one_line_exit_1(
    settings: Settings, data_dir: Path, fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, data_dir, "models", "rm", "nope:1b", "--host", fake.url)
    assert code == 1 and "nope:1b is not installed" in one_clean_line(err)


def test_warm_warns_when_the_model_will_not_fit(
    settings: Settings,
    data_dir: Path,
    fake: FakeOllama,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho '8192, 512, 7680'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    code, out, err = cli(capsys, data_dir, "models", "warm", MODEL, "--host", fake.url)

    assert code == 0 and "is loaded" in out
    assert f"{MODEL} (13.8 GB) needs about" in err and "8.1 GB is free" in err


def test_pull_prints_plain_progress_lines(
    settings: Settings, data_dir: Path, fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.pullable = {"tiny:1b": 1_000_000}
    code, out, _ = cli(capsys, data_dir, "models", "pull", "tiny:1b", "--host", fake.url)
    lines = out.splitlines()
    assert code == 0 and "\r" not in out
    assert any("100.0%" in line and "MB" in line for line in lines)
    assert lines[-1] == "Pulled tiny:1b (1.0 MB)."


def test_ctrl_c_during_pull_then_resume(
    settings: Settings, data_dir: Path, fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.pullable = {"tiny:1b": 2_000_000}
    fake.pull_rate = 20_000_000
    fake.pull_hold_at = 0.3  # the pull waits there until the interrupt has landed
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "safeguard_desktop",
            "--data-dir",
            str(data_dir),
            "models",
            "pull",
            "tiny:1b",
            "--host",
            fake.url,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell running the suite in the background (CI, nohup ... &)
        # leaves SIGINT ignored, which the child would inherit and never see Ctrl+C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            percent = re.search(r"(\d+\.\d)%", line)
            if percent and 0 < float(percent.group(1)) < 50:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # a bound for a hang, not a timing claim
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fake.release_pull()
    assert proc.returncode == 130
    assert one_clean_line(err) == (
        "safeguard-desktop: Pull cancelled; run the same command again to resume."
    )
    fake.pull_rate = 1e9

    code, out, _ = cli(capsys, data_dir, "models", "pull", "tiny:1b", "--host", fake.url)

    lines = out.splitlines()
    assert code == 0 and lines[0] == "pulling manifest" and lines[1].startswith("Resuming at ")


def test_import_gguf_and_a_non_gguf(
    settings: Settings,
    data_dir: Path,
    fake: FakeOllama,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 50_000)
    code, out, _ = cli(
        capsys, data_dir, "models", "import", str(gguf), "--name", "mine:1", "--host", fake.url
    )
    assert code == 0 and out.splitlines()[-1].startswith("Imported mine:1 from mine.gguf")
    assert "mine:1" in fake.models

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, err = cli(
        capsys, data_dir, "models", "import", str(text), "--name", "x", "--host", fake.url
    )
    assert code == 2 and "not a GGUF model file" in one_clean_line(err)


def test_export_and_import_bundle(
    settings: Settings, data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    make_models_dir(tmp_path / "source")
    bundle = tmp_path / "tiny.tar"
    code, out, err = cli(
        capsys,
        data_dir,
        "models",
        "export",
        NAME,
        str(bundle),
        "--models-dir",
        str(tmp_path / "source"),
    )
    assert code == 0, err
    assert out.splitlines()[-1].startswith(f"Wrote {bundle} (3 blobs")

    code, out, _ = cli(
        capsys,
        data_dir,
        "models",
        "import-bundle",
        str(bundle),
        "--models-dir",
        str(tmp_path / "dest"),
    )
    assert code == 0 and f"Imported {NAME} into" in out and "restart Ollama" in out
    assert (tmp_path / "dest" / MANIFEST).is_file()

    data = bytearray(bundle.read_bytes())
    data[data.index(b"GGUF") + 100] ^= 1
    bundle.write_bytes(bytes(data))
    before = snapshot(tmp_path / "other")
    code, _, err = cli(
        capsys,
        data_dir,
        "models",
        "import-bundle",
        str(bundle),
        "--models-dir",
        str(tmp_path / "other"),
    )
    assert code == 2 and "fails its checksum" in one_clean_line(err)
    assert snapshot(tmp_path / "other") == before == {}


def test_progress_on_a_terminal_is_one_redrawn_line() -> None:
    from safeguard_desktop.cli.progress import ProgressPrinter
    from safeguard_desktop.engine.progress import Progress

    screen = io.StringIO()
    printer = ProgressPrinter(screen, tty=True)
    printer(Progress("pulling", "pulling abc", 250, 1000, resumed_from=25.0))
    printer(Progress("pulling", "pulling def", 1000, 1000, rate=2e6, eta=0.0))
    printer(Progress("done", "success", 1000, 1000))
    printer.finish()

    text = screen.getvalue()
    assert text.startswith("Resuming at 25%.\n")
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 2
    assert "100.0%  1.0 KB/1.0 KB  2.0 MB/s" in text
