"""Where the model server is and how to talk to it: address, token, timeouts."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, Generator, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import httpx

DEFAULT_HOST = "http://127.0.0.1:11434"


@contextlib.contextmanager
def ollama_host_hidden() -> Iterator[None]:
    """Hide OLLAMA_HOST while the `ollama` library is imported.

    At import it builds a default client from OLLAMA_HOST and raises on a malformed value
    (port 99999), which would crash every command before ours can say what is wrong. We
    never use that default client; our own `resolve_host` reports the value as a sentence.
    """
    saved = os.environ.pop("OLLAMA_HOST", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["OLLAMA_HOST"] = saved


class HostError(ValueError):
    """An address that cannot be used."""


def normalize_host(raw: str) -> str:
    """Turn `OLLAMA_HOST`-style values into a base URL, as Ollama itself reads them.

    "0.0.0.0" (a bind address) is contacted on loopback.
    """
    text = (raw or "").strip()
    if not text:
        return DEFAULT_HOST
    if not text.isprintable():  # control characters, undecodable bytes from the shell
        raise HostError(
            f"Host {text.encode('ascii', 'backslashreplace').decode()!r} holds characters an "
            "address cannot have; type it again as host:port or a URL."
        )
    scheme, sep, rest = text.partition("://")
    port = 11434
    if not sep:
        scheme, rest = "http", text
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    else:
        raise HostError(f"Host {raw!r} must start with http:// or https://.")
    try:
        split = urllib.parse.urlsplit(f"{scheme}://{rest}")
        host = split.hostname or "127.0.0.1"
        port = split.port or port
    except ValueError:
        raise HostError(f"Host {raw!r} is not a valid address (expected host:port).") from None
    if host in {"0.0.0.0", "::"}:
        host = "127.0.0.1"
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            host = f"[{host}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def host_port(url: str) -> tuple[str, int]:
    split = urllib.parse.urlsplit(url)
    return split.hostname or "127.0.0.1", split.port or 11434


def is_loopback(url: str) -> bool:
    host, _ = host_port(url)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_warning(url: str, token: str | None) -> str | None:
    """A token sent in clear text over the network deserves a warning."""
    if token and url.startswith("http://") and not is_loopback(url):
        return (
            f"The token for {url} would travel unencrypted over plain http. "
            "Use an https:// address for remote servers."
        )
    return None


def resolve_host(cli_value: str | None, env_value: str | None, setting_value: str) -> str:
    """--host, else OLLAMA_HOST, else the setting."""
    for value in (cli_value, env_value, setting_value):
        if value:
            return normalize_host(value)
    return DEFAULT_HOST


class PendingToken(Protocol):
    """A host's token still being read (from the keyring, in a thread: `secrets.TokenLookup`)."""

    def done(self) -> bool: ...

    def result(self) -> str | None: ...  # blocks until the token is known

    async def wait(self) -> str | None: ...


class AwaitedBearer(httpx.Auth):
    """Each request waits for the token before it goes out (only the first really waits),
    then carries it: a request is never sent without the token the keyring holds."""

    def __init__(self, pending: PendingToken) -> None:
        self.pending = pending

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        _bearer(request, self.pending.result())
        yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        _bearer(request, await self.pending.wait())
        yield request


def _bearer(request: httpx.Request, token: str | None) -> None:
    if token:
        request.headers["Authorization"] = f"Bearer {token}"


@functools.cache
def _verifying_context() -> ssl.SSLContext:
    """What httpx makes for `verify=True` without the environment (certifi's CAs), made
    once for the process: loading the certificates costs tens of ms per client."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


@functools.cache
def _plain_http_context() -> ssl.SSLContext:
    """For an http:// host nothing is encrypted, and redirects are off: no certificate is
    loaded. It still verifies, so a TLS connection made with it by mistake fails closed."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def ssl_context(url: str) -> ssl.SSLContext:
    """The one SSL context clients of `url` share (https), or an empty one (http)."""
    if url.lower().startswith("https://"):
        return _verifying_context()
    return _plain_http_context()


@dataclass(frozen=True)
class Endpoint:
    url: str = DEFAULT_HOST
    token: str | None = field(default=None, repr=False)
    timeout: float = 300.0  # seconds without data before we give up
    connect_timeout: float = 5.0
    # The keyring's token while it is still being read (`token` is None then): every request
    # of a client made from this endpoint waits for it. Not part of the value.
    pending_token: PendingToken | None = field(default=None, repr=False, compare=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)

    def httpx_options(self) -> dict[str, object]:
        """Only this host is ever contacted: no redirects elsewhere, no proxy from the env.

        One shared SSL context (none loaded for http://), and the awaited token when the
        keyring is still being read.
        """
        options: dict[str, object] = {
            "headers": self.headers(),
            "timeout": self.httpx_timeout(),
            "follow_redirects": False,
            "trust_env": False,
            "verify": ssl_context(self.url),
        }
        if self.token is None and self.pending_token is not None:
            options["auth"] = AwaitedBearer(self.pending_token)
        return options
