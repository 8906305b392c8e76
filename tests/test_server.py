"""Finding, starting, attaching to, supervising and stopping `ollama serve` (the fake binary)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from safeguard_desktop.engine import server_log, server_state
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import (
    NotLocalHost,
    NotManaged,
    OllamaNotFound,
    PortInUse,
    ServerStartFailed,
)
from safeguard_desktop.engine.server import (
    ServerController,
    binary_version,
    find_ollama,
    parse_version,
)
from safeguard_desktop.engine.server_state import ServerState
from safeguard_desktop.engine.supervisor import SupervisorEvent
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama

pytest_plugins = ["tests.server_fixtures"]
FAKE_BIN = Path(__file__).parent / "bin" / "ollama"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def controller_for(settings: Settings, **changes: object) -> ServerController:
    service = Session.open(settings, with_history=False).server(
        start_timeout=15.0, stop_timeout=5.0
    )
    return ServerController(dataclasses.replace(service.config, **changes))  # type: ignore[arg-type]


# -- the binary -------------------------------------------------------------------------------
def test_missing_binary_says_where_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(OllamaNotFound) as info:
        find_ollama("", candidates=[Path("/nonexistent/ollama")])
    message = str(info.value)
    assert "https://ollama.com/download" in message
    assert "air-gapped" in message and "Ollama path" in message and "ollama_path" in message


def test_configured_path_wins_and_a_wrong_one_is_reported(tmp_path: Path) -> None:
    assert find_ollama(str(FAKE_BIN)) == FAKE_BIN.resolve()
    assert find_ollama(str(FAKE_BIN.parent)) == FAKE_BIN.resolve()  # the folder is fine too
    with pytest.raises(OllamaNotFound, match="does not exist or is not executable"):
        find_ollama(str(tmp_path / "nope"))


def test_binary_found_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(FAKE_BIN.parent))
    assert find_ollama("") == FAKE_BIN.resolve()


def test_version_output_is_parsed_after_warnings() -> None:
    assert parse_version("ollama version is 0.12.10\n") == "0.12.10"
    warned = "Warning: could not connect to a running Ollama instance\n"
    assert parse_version(warned + "Warning: client version is 0.12.3\n") == "0.12.3"
    assert parse_version("ollama version is 0.12.10\nWarning: client version is 0.11.0") == (
        "0.11.0"
    )
    assert parse_version("garbage") is None


def test_binary_version_runs_the_binary() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert asyncio.run(binary_version(FAKE_BIN, url=url)) == "0.12.10"


def test_subprocesses_work_under_qasync(qapp: object) -> None:
    """asyncio subprocesses (ollama -v, nvidia-smi) need a child watcher that works on Qt's loop."""
    import qasync

    loop = qasync.QEventLoop(qapp)

    async def go() -> tuple[int | None, bytes, str | None]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('hello')", stdout=subprocess.PIPE
        )
        out, _ = await proc.communicate()
        version = await binary_version(FAKE_BIN, url=f"http://127.0.0.1:{free_port()}")
        return proc.returncode, out, version

    try:
        code, out, version = loop.run_until_complete(go())
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    assert (code, out.strip(), version) == (0, b"hello", "0.12.10")


# -- start / stop ------------------------------------------------------------------------------
def test_start_maps_settings_and_stop_removes_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = tmp_path / "env.json"
    monkeypatch.setenv("FAKE_OLLAMA_ENV_DUMP", str(dump))
    for name, value in [
        ("models_dir", str(tmp_path / "models")),
        ("keep_alive", "10m"),
        ("num_parallel", 2),
        ("max_queue", 7),
        ("context_length", 8192),
        ("flash_attention", False),
    ]:
        settings.set(name, value)
    control = controller_for(settings)

    result = asyncio.run(control.start())

    assert result.started and result.managed and result.pid
    assert httpx.get(control.url).text == "Ollama is running"
    state = json.loads(control.config.state_file.read_text())
    assert state["pid"] == result.pid and state["host"] == control.url
    assert state["port"] == int(control.url.rsplit(":", 1)[1])
    assert state["binary"] == str(FAKE_BIN.resolve()) and state["started_at"]
    env = json.loads(dump.read_text())
    assert env["OLLAMA_HOST"] == control.url.removeprefix("http://")
    assert env["OLLAMA_MODELS"] == str(tmp_path / "models")
    assert (env["OLLAMA_KEEP_ALIVE"], env["OLLAMA_NUM_PARALLEL"], env["OLLAMA_MAX_QUEUE"]) == (
        "10m",
        "2",
        "7",
    )
    assert (env["OLLAMA_CONTEXT_LENGTH"], env["OLLAMA_FLASH_ATTENTION"]) == ("8192", "0")
    assert "Listening on" in control.config.log_file.read_text()

    status = asyncio.run(control.status())
    assert (status.running, status.managed, status.pid, status.version) == (
        True,
        True,
        result.pid,
        "0.12.10",
    )

    stopped = asyncio.run(control.stop())

    assert stopped.was_running and stopped.pid == result.pid and not stopped.forced
    assert not server_state.pid_alive(result.pid)
    assert not control.config.state_file.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(control.url)


def test_context_length_zero_keeps_ollamas_default(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dump = tmp_path / "env.json"
    monkeypatch.setenv("FAKE_OLLAMA_ENV_DUMP", str(dump))
    monkeypatch.delenv("OLLAMA_CONTEXT_LENGTH", raising=False)
    control = controller_for(settings)
    asyncio.run(control.start())
    asyncio.run(control.stop())
    env = json.loads(dump.read_text())
    assert "OLLAMA_CONTEXT_LENGTH" not in env and env["OLLAMA_FLASH_ATTENTION"] == "1"


def test_attaches_to_a_running_ollama_and_refuses_to_stop_it(
    settings: Settings, fake: FakeOllama
) -> None:
    control = controller_for(settings, endpoint=Endpoint(fake.url))
    children = set(server_state._children)

    result = asyncio.run(control.start())

    assert (result.started, result.managed, result.pid) == (False, False, None)
    assert result.version == fake.version
    assert set(server_state._children) == children  # no second server
    with pytest.raises(NotManaged, match="not started by Safeguard Desktop"):
        asyncio.run(control.stop())
    assert httpx.get(fake.url).text == "Ollama is running"


def test_a_web_server_on_the_port_is_port_in_use(
    settings: Settings, other_http_server: int
) -> None:
    control = controller_for(settings, endpoint=Endpoint(f"http://127.0.0.1:{other_http_server}"))
    with pytest.raises(PortInUse) as info:
        asyncio.run(control.start())
    assert f"Port {other_http_server} is taken" in str(info.value)
    assert "HTTP 404" in str(info.value)


def test_a_silent_listener_on_the_port_is_port_in_use(
    settings: Settings, silent_listener: int
) -> None:
    control = controller_for(
        settings, endpoint=Endpoint(f"http://127.0.0.1:{silent_listener}"), probe_timeout=0.3
    )
    with pytest.raises(PortInUse, match=f"Port {silent_listener} is taken"):
        asyncio.run(control.start())


def test_remote_host_is_never_managed(settings: Settings) -> None:
    control = controller_for(settings, endpoint=Endpoint("http://10.9.8.7:11434"))
    with pytest.raises(NotLocalHost, match="remote server"):
        asyncio.run(control.start())
    with pytest.raises(NotLocalHost):
        asyncio.run(control.stop())


def test_a_binary_that_exits_at_once_is_reported_with_its_log(
    settings: Settings, tmp_path: Path
) -> None:
    broken = tmp_path / "ollama"
    broken.write_text("#!/bin/sh\necho 'Error: could not create models directory' >&2\nexit 1\n")
    broken.chmod(0o755)
    control = controller_for(settings, ollama_path=str(broken))
    with pytest.raises(ServerStartFailed) as info:
        asyncio.run(control.start())
    assert "exit code 1" in str(info.value)
    assert "could not create models directory" in str(info.value)
    assert not control.config.state_file.exists()


def test_stale_state_file_is_cleaned_up(settings: Settings) -> None:
    control = controller_for(settings)
    dead = subprocess.Popen(["true"])
    dead.wait()
    state = ServerState(dead.pid, control.url, 1, "then", str(FAKE_BIN))
    server_state.write_state(control.config.state_file, state)

    status = asyncio.run(control.status(with_binary=False))

    assert (status.running, status.managed, status.pid) == (False, False, None)
    assert status.problem and f"pid {dead.pid}" in status.problem  # said, not hidden
    assert control.managed_state() is None  # start/stop look it up and clean it away
    assert not control.config.state_file.exists()


def test_a_reused_pid_is_never_stopped(settings: Settings) -> None:
    """The state names a live pid that is not our server any more (start time differs)."""
    control = controller_for(settings)
    state = ServerState(os.getpid(), control.url, 1, "then", str(FAKE_BIN), proc_start="1")
    server_state.write_state(control.config.state_file, state)

    result = asyncio.run(control.stop())

    assert not result.was_running  # and this test process is still alive to say so
    assert not control.config.state_file.exists()


def test_our_hung_server_is_not_mistaken_for_another_program(settings: Settings) -> None:
    control = controller_for(settings, probe_timeout=0.3)
    started = asyncio.run(control.start())
    assert started.pid is not None
    os.kill(started.pid, signal.SIGSTOP)  # listening, but answers nothing
    try:
        with pytest.raises(ServerStartFailed, match=f"pid {started.pid}.* does not answer"):
            asyncio.run(control.start())
    finally:
        os.kill(started.pid, signal.SIGCONT)
    assert asyncio.run(control.stop()).was_running


# -- supervisor --------------------------------------------------------------------------------
def test_supervisor_restarts_a_crashed_server_then_gives_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OLLAMA_CRASH_AFTER", "1")
    control = controller_for(settings)
    events: list[SupervisorEvent] = []

    async def go() -> None:
        from safeguard_desktop.engine.supervisor import ServerSupervisor

        sup = ServerSupervisor(
            control, on_event=events.append, max_restarts=2, poll=0.05, retry_delay=0.1
        )
        await sup.start()
        for _ in range(400):
            if sup.gave_up:
                break
            await asyncio.sleep(0.05)
        await sup.detach()

    asyncio.run(go())

    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "gave_up"
    assert kinds.count("exited") == 3 and kinds.count("restarted") == 2
    exited = next(e for e in events if e.kind == "exited")
    assert exited.returncode == 2 and "exit code 2" in exited.message
    assert any("Listening on" in line for line in exited.log_tail)
    assert "3 times within 60 s" in events[-1].message
    assert not control.config.state_file.exists()


def test_supervisor_stop_is_not_a_crash(settings: Settings) -> None:
    control = controller_for(settings)
    events: list[SupervisorEvent] = []

    async def go() -> int | None:
        sup = (
            Session.open(settings, with_history=False).server().supervisor(events.append, poll=0.05)
        )
        sup.controller = control
        started = await sup.start()
        assert sup.watching
        await sup.stop()
        await asyncio.sleep(0.2)
        return started.pid

    pid = asyncio.run(go())

    assert [e.kind for e in events] == ["started"]
    assert pid is not None and not server_state.pid_alive(pid)


# -- the log -----------------------------------------------------------------------------------
def test_log_rotation_keeps_three_and_tail_reads_the_end(tmp_path: Path) -> None:
    log = tmp_path / "ollama.log"
    for round_ in range(5):
        log.write_text("".join(f"round {round_} line {i}\n" for i in range(100)))
        assert server_log.rotate(log, max_bytes=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ollama.log.1",
        "ollama.log.2",
        "ollama.log.3",
    ]
    assert (tmp_path / "ollama.log.1").read_text().startswith("round 4")
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert server_log.tail(log, 3) == ["line 9997", "line 9998", "line 9999"]


def test_follow_yields_new_lines_and_survives_truncation(tmp_path: Path) -> None:
    log = tmp_path / "ollama.log"
    log.write_text("old\n")

    async def go() -> list[str]:
        seen: list[str] = []

        async def reader() -> None:
            async for line in server_log.follow(log, poll=0.02):
                seen.append(line)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.1)
        with log.open("a") as f:
            f.write("new 1\nnew")
        await asyncio.sleep(0.1)
        with log.open("a") as f:
            f.write(" 2\n")
        await asyncio.sleep(0.1)
        server_log.rotate_in_place(log, max_bytes=1)
        with log.open("a") as f:
            f.write("after\n")
        await asyncio.sleep(0.1)
        task.cancel()
        return seen

    assert asyncio.run(go()) == ["new 1", "new 2", "after"]
