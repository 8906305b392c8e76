"""What start-up no longer pays for: certificates for a plain-http host, a client library
before the first review, a keyring read before the first request, macOS probes on Linux,
the keyring library for a host known to have no token."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest

from safeguard_desktop import secrets
from safeguard_desktop.core.content import Content
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.engine.client import OllamaClient
from safeguard_desktop.engine.endpoint import Endpoint, ssl_context
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama
from tests.keyrings import MemoryKeyring

REPO = Path(__file__).resolve().parents[1]
TOKEN = "t0ken"
# What would choose a keyring without detecting one, or reach a real one.
DETECTION_OVERRIDES = ("PYTHON_KEYRING_BACKEND", "DBUS_SESSION_BUS_ADDRESS", "XDG_CONFIG_HOME")


def ca_count(context: ssl.SSLContext) -> int:
    return int(context.cert_store_stats()["x509_ca"])


def test_plain_http_hosts_load_no_certificates_and_https_ones_share_one_context() -> None:
    plain = ssl_context("http://127.0.0.1:11434")
    assert plain is ssl_context("http://10.0.0.7:8080")
    assert ca_count(plain) == 0
    assert plain.verify_mode == ssl.CERT_REQUIRED and plain.check_hostname  # fails closed
    secure = ssl_context("https://ollama.example:443")
    assert secure is ssl_context("https://other.example")
    assert ca_count(secure) > 0 and secure.verify_mode == ssl.CERT_REQUIRED


def test_clients_of_a_plain_http_host_make_no_certificate_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    clients = [OllamaClient(Endpoint("http://127.0.0.1:9")) for _ in range(3)]
    assert loads == []
    for client in clients:
        asyncio.run(client.aclose())


def test_the_client_library_is_imported_by_the_first_review_only(tmp_path: Path) -> None:
    with FakeOllama() as fake:
        probe = (
            "import asyncio, sys\n"
            "from safeguard_desktop.services.session import Session\n"
            "from safeguard_desktop.settings import Settings\n"
            "from safeguard_desktop.core.content import Content\n"
            "from safeguard_desktop.core.policy import resolve_policy\n"
            f"s = Session.open(Settings(), host={fake.url!r}, with_history=False, env={{}})\n"
            "async def go():\n"
            "    health = await s.health(with_models=True)\n"
            "    before = 'ollama' in sys.modules\n"
            "    r = await s.reviewer(s.review_options(source='cli')).review(\n"
            "        resolve_policy('spam-scams'), Content(kind='message', text='hello'))\n"
            "    await s.aclose_client()\n"
            "    return health.reachable, before, 'ollama' in sys.modules, r.status\n"
            "print(asyncio.run(go()))\n"
        )
        done = run_probe(probe, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(True, False, True, 'done')"


def run_probe(probe: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`probe` in a fresh interpreter: its own home and data folder, no keychain or
    OLLAMA_HOST of ours (modules it imports show in its sys.modules only)."""
    env = {
        **os.environ,
        "HOME": str(home),
        "SAFEGUARD_DATA_DIR": str(home / "data"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    env.pop("OLLAMA_HOST", None)
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("host", "loaded"), [("http://127.0.0.1:9", True), ("http://127.0.0.1:9/v1", False)]
)
def test_the_window_loads_the_review_client_ahead_for_an_ollama_host_only(
    tmp_path: Path, host: str, loaded: bool
) -> None:
    # app.warm_up runs this at the moderator's first move: the first Classify then neither
    # waits for the library nor has its garbage collected while the answer streams (issue 12).
    probe = (
        "import asyncio, sys\n"
        "from safeguard_desktop.services.session import Session\n"
        "from safeguard_desktop.settings import Settings\n"
        f"s = Session.open(Settings(), host={host!r}, with_history=False, env={{}})\n"
        "before = 'ollama' in sys.modules\n"
        "said = asyncio.run(s.warm_up())\n"
        "print(before, said, 'ollama' in sys.modules)\n"
    )
    done = run_probe(probe, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", str(loaded), str(loaded)]


class GatedKeyring(MemoryKeyring):
    """Answers a read once `gate` is set (bounded: `answered` says whether it was)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.answered: list[bool] = []

    def get_password(self, service: str, username: str) -> str | None:
        self.answered.append(self.gate.wait(timeout=60))
        return super().get_password(service, username)


@pytest.fixture
def gated_keyring() -> Iterator[GatedKeyring]:
    backend = GatedKeyring()
    before = keyring.get_keyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        backend.gate.set()
        keyring.set_keyring(before)


def test_a_waiter_given_up_does_not_cancel_the_lookup(gated_keyring: GatedKeyring) -> None:
    """The health check gives up after its timeout; the review after it still gets the token."""
    gated_keyring.set_password(secrets.SERVICE, "http://127.0.0.1:9", TOKEN)
    lookup = secrets.TokenLookup("http://127.0.0.1:9")

    async def go() -> str | None:
        first = asyncio.ensure_future(lookup.wait())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        gated_keyring.gate.set()
        return await lookup.wait()

    assert asyncio.run(go()) == TOKEN
    assert lookup.done() and lookup.result() == TOKEN and gated_keyring.answered == [True]


def test_every_request_of_a_session_waits_for_the_keyring_then_carries_the_token(
    gated_keyring: GatedKeyring, tmp_path: Path
) -> None:
    with FakeOllama(require_token=TOKEN) as fake:
        gated_keyring.set_password(secrets.SERVICE, fake.url, TOKEN)
        settings = Settings(tmp_path / "settings.json")
        session = Session.open(settings, host=fake.url, with_history=False, env={})
        assert session.endpoint.token is None and session.endpoint.pending_token is not None

        async def go() -> str:
            reviewer = session.reviewer(session.review_options(source="cli"))
            review = asyncio.ensure_future(
                reviewer.review(resolve_policy("spam-scams"), Content(kind="message", text="hi"))
            )
            await asyncio.sleep(0)
            assert fake.requests == []  # nothing leaves before the keyring has answered
            gated_keyring.gate.set()
            result = await review
            await session.aclose_client()
            return result.status

        assert asyncio.run(go()) == "done"
        assert {r.headers.get("authorization") for r in fake.requests} == {f"Bearer {TOKEN}"}


def test_the_token_is_read_at_once_where_its_warning_needs_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Plain http to another machine: the warning about the token is said at start."""
    monkeypatch.setattr(secrets, "get_token", lambda url: TOKEN)
    settings = Settings(tmp_path / "settings.json")
    session = Session.open(settings, host="http://10.1.2.3:11434", with_history=False, env={})
    assert session.endpoint.token == TOKEN and session.endpoint.pending_token is None
    assert session.token_warning is not None


@pytest.mark.skipif(sys.platform == "darwin", reason="the Keychain is the backend there")
def test_the_keyring_does_not_probe_for_the_macos_keychain(tmp_path: Path) -> None:
    """Backend detection as on a user's machine, with no session bus to find a keychain on."""
    probe = (
        "import ctypes.util, sys\n"
        "calls = []\n"
        "ctypes.util.find_library = lambda name: calls.append(name)\n"
        "from safeguard_desktop import secrets\n"
        "secrets.backend_name()\n"
        "print(calls, 'keyring.backends.macOS' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in DETECTION_OVERRIDES}
    env.update(HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] True"  # the backend is known, its probe skipped


class LockedKeyring(MemoryKeyring):
    """A keyring that refuses to answer until `locked` is cleared."""

    locked = True

    def get_password(self, service: str, username: str) -> str | None:
        if self.locked:
            raise keyring.errors.KeyringLocked("locked")
        return super().get_password(service, username)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    before = keyring.get_keyring()
    backend = LockedKeyring()
    backend.locked = False
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(before)


def test_a_host_without_a_token_is_looked_up_once_then_never_loads_the_keyring(
    tmp_path: Path,
) -> None:
    """Most hosts have no token: from the second start on, no keyring library (9 MiB)."""
    probe = (
        "import sys\n"
        "from safeguard_desktop import secrets\n"
        "token = secrets.TokenLookup('http://127.0.0.1:11434').result(timeout=60)\n"
        "print(token, 'keyring' in sys.modules)\n"
    )
    first, second = run_probe(probe, tmp_path), run_probe(probe, tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert (first.stdout.split(), second.stdout.split()) == (["None", "True"], ["None", "False"])
    record = tmp_path / "data" / secrets.INDEX_NAME  # beside settings.json; no secret in it
    assert record.read_text(encoding="utf-8").count("http://127.0.0.1:11434") == 1
    assert TOKEN not in record.read_text(encoding="utf-8")


def test_a_token_saved_after_a_lookup_found_none_is_sent_from_the_next_start(
    memory_keyring: MemoryKeyring,
) -> None:
    host = "http://10.0.0.7:11434"
    assert secrets.get_token(host) is None  # looked up: none (recorded)
    secrets.set_token(host, TOKEN)
    assert secrets.TokenLookup(host).result(timeout=60) == TOKEN
    secrets.delete_token(host)
    assert secrets.get_token(host) is None and secrets.known_to_have_none(host)
    assert memory_keyring.store == {}


def test_a_token_another_program_stored_is_found_by_the_settings_dialogs_read(
    memory_keyring: MemoryKeyring,
) -> None:
    host = "http://10.0.0.7:11434"
    assert secrets.get_token(host) is None
    memory_keyring.set_password(secrets.SERVICE, host, TOKEN)  # `keyring set ...` by hand
    assert secrets.get_token(host) is None  # recorded as none: not looked up
    assert secrets.read_token(host) == TOKEN  # what the Settings dialog reads
    assert secrets.get_token(host) == TOKEN and not secrets.known_to_have_none(host)


def test_a_locked_keyring_records_nothing(memory_keyring: MemoryKeyring) -> None:
    host = "http://10.0.0.7:11434"
    memory_keyring.set_password(secrets.SERVICE, host, TOKEN)
    memory_keyring.locked = True  # type: ignore[attr-defined]
    assert secrets.get_token(host) is None
    assert not secrets.known_to_have_none(host)
    memory_keyring.locked = False  # type: ignore[attr-defined]
    assert secrets.get_token(host) == TOKEN
