"""Fixtures for the server/models tests: the fake `ollama` binary, a private data folder,
free ports, and a reaper that kills every server a test started (no stray fakes survive)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import paths
from safeguard_desktop.engine import server_state
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama

FAKE_BIN_DIR = Path(__file__).parent / "bin"
FAKE_BIN = FAKE_BIN_DIR / "ollama"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def reaper() -> Iterator[None]:
    """Kill (and reap) every server child started during the test."""
    before = set(server_state._children)
    yield
    for pid, proc in list(server_state._children.items()):
        if pid in before:
            continue
        if proc.poll() is None:
            _kill(pid)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        del server_state._children[pid]


@pytest.fixture
def data_dir(tmp_path: Path, reaper: None) -> Iterator[Path]:
    """All app files (settings, logs, server state) under tmp_path/data."""
    folder = tmp_path / "data"
    paths.set_data_dir(folder)
    try:
        yield paths.data_dir()
    finally:
        state = server_state.read_state(folder / "managed-server.json")
        if state is not None and server_state.is_ours(state):
            _kill(state.pid)
        paths.set_data_dir(None)


@pytest.fixture
def settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings in the temp data folder, with the fake binary as `ollama_path`."""
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.delenv("SAFEGUARD_OLLAMA_TOKEN", raising=False)
    s = Settings(data_dir / "settings.json")
    s.set("ollama_path", str(FAKE_BIN))
    s.set("host", f"http://127.0.0.1:{free_port()}")
    s.save()
    return s


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=50_000) as server:
        yield server


class _NotOllama(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<h1>Not found</h1>"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def other_http_server() -> Iterator[int]:
    """A plain web server (404 everywhere) holding a port; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotOllama)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A raw TCP listener that accepts connections and never answers; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
