"""The air-gap guard: a review contacts the model host and nothing else; any other
connection from inside the process is refused with a sentence naming where it went.

The CLI and the app run in child processes: the guard is an audit hook, and audit hooks stay
for the life of a process. Each child records every socket event it sees (its recorder is
installed before the guard, so it sees refused attempts too) and writes them to a JSON file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import egress
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.server import ServerConfig, server_env
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama

pytest_plugins = ["tests.server_fixtures"]
REPO = Path(__file__).resolve().parents[1]
STRAY_IP = "192.0.2.1"  # TEST-NET-1: never routed
REFUSED = "Safeguard Desktop only talks to the model host {url}; refused a connection to {dest}"

# Every child starts with this: record socket events (connects and lookups) as they happen.
RECORDER = """
import json, socket, sys
EVENTS = []
def _record(event, args):
    if event == "socket.connect":
        family = "unix" if args[0].family == getattr(socket, "AF_UNIX", None) else "inet"
        EVENTS.append(["connect", family, list(args[1][:2]) if family == "inet" else str(args[1])])
    elif event in ("socket.getaddrinfo", "socket.gethostbyname"):
        EVENTS.append(["lookup", str(args[0]), args[1] if len(args) > 1 else None])
sys.addaudithook(_record)

def stray_attempts():
    '''A connection and a name lookup no review needs, made from inside the process.'''
    outcome = {}
    with socket.socket() as sock:
        try:
            sock.connect(("192.0.2.1", 80))
            outcome["connect"] = "not refused"
        except OSError as exc:
            outcome["connect"] = f"{type(exc).__name__}: {exc}"
    try:
        socket.getaddrinfo("example.com", 443)
        outcome["lookup"] = "not refused"
    except OSError as exc:
        outcome["lookup"] = f"{type(exc).__name__}: {exc}"
    return outcome

def write_report(path, **more):
    with open(path, "w", encoding="utf-8") as out:
        json.dump({"events": EVENTS, **more}, out)
"""

CLI_REVIEW = (
    RECORDER
    + """
from safeguard_desktop.cli import classify_cmd, main
review = classify_cmd.run
STRAY = {}
def review_then_stray(args):
    code = review(args)
    STRAY.update(stray_attempts())  # still inside the CLI run, with its guard
    return code
classify_cmd.run = review_then_stray
code = main(sys.argv[2:])
write_report(sys.argv[1], code=code, stray=STRAY)
"""
)

PLAIN_CLI = """
from safeguard_desktop.cli import main
code = main(sys.argv[2:])
write_report(sys.argv[1], code=code)
"""

GUI_REVIEW = (
    RECORDER
    + """
import asyncio
from safeguard_desktop.launch import main  # the command users run
from safeguard_desktop.ui.main_window import MainWindow
from safeguard_desktop.ui.server_integration import ServerIntegration

report, first_url, second_url = sys.argv[1], sys.argv[2], sys.argv[3]
STEPS = {}

async def until(condition, what):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)

async def review(win, text):
    badge = win.review.verdict.badge
    await until(lambda: not win.review.running, "idle")
    win.review.editor.editor.setPlainText(text)
    win.review.classify()
    await until(lambda: badge.text() in ("VIOLATION", "SAFE", "FAILED"), "a verdict")
    return badge.text()

async def drive(win):
    try:
        await until(lambda: win.review.policy_panel.select("harassment"), "the policy")
        STEPS["first"] = await review(win, "you are worthless")
        STEPS["stray"] = stray_attempts()
        # File > Settings: another host, Save (the dialog the moderator uses).
        integration = win.findChild(ServerIntegration)
        dialog = integration.open_settings()
        dialog.fields["host"].editor.setText(second_url)
        dialog.save_button.click()
        await until(lambda: win.ctx.endpoint.url == second_url, "the new host")
        STEPS["second"] = await review(win, "see you tomorrow")
        try:
            with socket.create_connection(("127.0.0.1", int(first_url.rsplit(":", 1)[1]))):
                STEPS["old_host"] = "not refused"
        except OSError as exc:
            STEPS["old_host"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        STEPS["error"] = repr(exc)
    finally:
        win.request_quit()

started = MainWindow.start
def start_and_drive(self):
    started(self)
    self._egress_driver = asyncio.ensure_future(drive(self))
MainWindow.start = start_and_drive

code = main(sys.argv[4:])
write_report(report, code=code, steps=STEPS)
"""
)


def run_child(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    report = Path(args[0])
    child_env = dict(os.environ if env is None else env)
    child_env.pop("OLLAMA_HOST", None)
    child_env["QT_QPA_PLATFORM"] = "offscreen"
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.exists(), f"the child did not finish:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    result["stdout"], result["stderr"] = done.stdout, done.stderr
    return result


def inet_connects(events: list[Any]) -> list[tuple[str, int]]:
    return [(e[2][0], e[2][1]) for e in events if e[0] == "connect" and e[1] == "inet"]


def reviews_sent(fake: FakeOllama) -> int:
    """Chat requests with content (a warm-up sends none)."""
    return sum(1 for r in fake.requests_to("/api/chat") if r.json.get("messages"))


def lookups(events: list[Any]) -> set[str]:
    return {e[1] for e in events if e[0] == "lookup"}


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=20000) as server:
        yield server


# -- the CLI -------------------------------------------------------------------------------------
def test_a_cli_review_contacts_only_the_model_host(fake: FakeOllama, tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_child(
        CLI_REVIEW,
        str(tmp_path / "report.json"),
        *("--data-dir", str(data), "classify", "--policy", "harassment"),
        *("--text", "you are worthless", "--host", fake.url, "--json"),
    )

    assert result["code"] == 0, result["stderr"]
    assert json.loads(result["stdout"])["verdict"]["label"] == "violation"
    assert reviews_sent(fake) == 1
    model_host = ("127.0.0.1", fake.port)
    connects = inet_connects(result["events"])
    assert model_host in connects
    assert set(connects) == {model_host, (STRAY_IP, 80)}  # the stray one was refused
    assert lookups(result["events"]) <= {"127.0.0.1", STRAY_IP, "example.com"}

    refused = REFUSED.format(url=fake.url, dest=f"{STRAY_IP}:80")
    assert result["stray"]["connect"] == f"EgressRefused: {refused}"
    refused_lookup = REFUSED.format(url=fake.url, dest="example.com:443")
    assert result["stray"]["lookup"] == f"EgressRefused: {refused_lookup}"
    log = (data / "logs" / "safeguard.log").read_text(encoding="utf-8")
    assert f"refused a connection to {STRAY_IP}:80" in log
    assert "refused a connection to example.com:443" in log


def test_a_command_without_a_model_host_contacts_nothing(tmp_path: Path) -> None:
    script = (
        RECORDER
        + """
from safeguard_desktop.cli import history_cmd, main
listing = history_cmd.run_list
STRAY = {}
def list_then_stray(args):
    code = listing(args)
    STRAY.update(stray_attempts())
    return code
history_cmd.run_list = list_then_stray
code = main(sys.argv[2:])
write_report(sys.argv[1], code=code, stray=STRAY)
"""
    )
    result = run_child(
        script, str(tmp_path / "report.json"), "--data-dir", str(tmp_path / "d"), "history", "list"
    )

    assert result["code"] == 0, result["stderr"]
    assert result["stray"]["connect"] == (
        "EgressRefused: Safeguard Desktop only talks to the model host, and none is set for "
        f"this run; refused a connection to {STRAY_IP}:80"
    )


def test_the_managed_server_starts_under_the_guard_without_cloud_models(
    settings: Settings, data_dir: Path, tmp_path: Path
) -> None:
    dump = tmp_path / "env.json"
    env = dict(os.environ, FAKE_OLLAMA_ENV_DUMP=str(dump))
    host = str(settings["host"])
    script = RECORDER + PLAIN_CLI
    start = run_child(
        script, str(tmp_path / "start.json"), "--data-dir", str(data_dir), "server", "start",
        env=env,
    )  # fmt: skip
    stop = run_child(
        script, str(tmp_path / "stop.json"), "--data-dir", str(data_dir), "server", "stop"
    )

    assert start["code"] == 0, start["stderr"]
    assert start["stdout"].startswith(f"Started Ollama 0.12.10 at {host}")
    assert stop["code"] == 0 and stop["stdout"].startswith("Stopped Ollama"), stop["stderr"]
    port = int(host.rsplit(":", 1)[1])
    for run in (start, stop):
        assert set(inet_connects(run["events"])) <= {("127.0.0.1", port)}
        assert "refused" not in run["stderr"]
    assert json.loads(dump.read_text(encoding="utf-8"))["OLLAMA_NO_CLOUD"] == "1"


def test_no_setting_lets_cloud_models_back_in(tmp_path: Path) -> None:
    config = ServerConfig(
        Endpoint(),
        tmp_path / "state.json",
        tmp_path / "server.log",
        extra_env=(("OLLAMA_NO_CLOUD", "0"),),
    )
    assert server_env(config, base={"OLLAMA_NO_CLOUD": "0"})["OLLAMA_NO_CLOUD"] == "1"


# -- the app -------------------------------------------------------------------------------------
def test_a_gui_review_contacts_only_the_model_host_and_follows_settings(
    fake: FakeOllama, tmp_path: Path
) -> None:
    with FakeOllama(token_rate=20000) as second:
        result = run_child(
            GUI_REVIEW,
            str(tmp_path / "report.json"),
            fake.url,
            second.url,
            *("--data-dir", str(tmp_path / "data"), "--host", fake.url),
        )
        second_reviews = reviews_sent(second)

    steps = result["steps"]
    assert result["code"] == 0 and "error" not in steps, (steps, result["stderr"])
    assert (steps["first"], steps["second"]) == ("VIOLATION", "SAFE")
    assert (reviews_sent(fake), second_reviews) == (1, 1)
    connects = set(inet_connects(result["events"]))
    first_host, second_host = ("127.0.0.1", fake.port), ("127.0.0.1", second.port)
    assert {first_host, second_host} <= connects
    assert connects <= {first_host, second_host, (STRAY_IP, 80)}
    assert steps["stray"]["connect"] == "EgressRefused: " + REFUSED.format(
        url=fake.url, dest=f"{STRAY_IP}:80"
    )
    assert steps["stray"]["lookup"].endswith("refused a connection to example.com:443")
    # The host chosen in Settings replaced the old one: that one is refused now.
    assert steps["old_host"] == "EgressRefused: " + REFUSED.format(
        url=second.url, dest=f"127.0.0.1:{fake.port}"
    )


# -- what stays allowed -----------------------------------------------------------------------
ALLOWED_INSIDE = (
    RECORDER
    + """
import asyncio
from safeguard_desktop import egress, secrets
outcome = {}
with egress.guarded():
    async def self_pipe():  # the event loop's wake-up pipe is a socketpair
        await asyncio.sleep(0)
        return "loop ran"
    outcome["loop"] = asyncio.run(self_pipe())
    a, b = socket.socketpair()
    a.sendall(b"ping")
    outcome["socketpair"] = b.recv(4).decode()
    a.close(); b.close()
    # On Windows, socket.socketpair is this loopback emulation (socket.py's own code).
    source = '''
def socketpair():
    import socket
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0)); lsock.listen()
    csock = socket.socket()
    csock.connect(lsock.getsockname())
    ssock, _ = lsock.accept()
    lsock.close()
    return ssock, csock
'''
    namespace = {}
    exec(compile(source, socket.__file__, "exec"), namespace)
    a, b = namespace["socketpair"]()
    a.sendall(b"pong")
    outcome["emulated_socketpair"] = b.recv(4).decode()
    a.close(); b.close()
    try:
        namespace2 = {}
        exec(compile(source, "elsewhere.py", "exec"), namespace2)
        namespace2["socketpair"]()
        outcome["loopback_elsewhere"] = "not refused"
    except OSError as exc:
        outcome["loopback_elsewhere"] = type(exc).__name__
    outcome["token"] = secrets.get_token("http://127.0.0.1:11434")
    outcome["keyring"] = secrets.backend_name()
write_report(sys.argv[1], outcome=outcome)
"""
)


def test_socketpairs_and_the_keyring_still_work_under_the_guard(tmp_path: Path) -> None:
    env = dict(os.environ)
    command = [sys.executable, "-c", ALLOWED_INSIDE, str(tmp_path / "report.json")]
    bus = shutil.which("dbus-run-session")
    if bus:  # the keyring's Secret Service is reached over D-Bus, a Unix socket
        env.pop("PYTHON_KEYRING_BACKEND", None)
        command = [bus, "--", *command]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    outcome = report["outcome"]

    assert outcome["loop"] == "loop ran" and outcome["socketpair"] == "ping"
    assert outcome["emulated_socketpair"] == "pong"
    assert outcome["loopback_elsewhere"] == "EgressRefused"
    assert outcome["token"] is None and "EgressRefused" not in done.stderr
    if bus:
        assert any(e[0] == "connect" and e[1] == "unix" for e in report["events"])


def test_the_guard_is_off_outside_a_run_and_the_allow_list_is_restored() -> None:
    before = egress.allowed()
    with egress.guarded():
        egress.allow("http://model.internal:11434")
        assert egress.is_armed()
        assert "http://model.internal:11434" in egress.allowed()
        with pytest.raises(egress.EgressRefused, match=r"refused a connection to 192\.0\.2\.1:80"):
            socket.create_connection((STRAY_IP, 80), timeout=1)
    assert not egress.is_armed() and egress.allowed() == before
