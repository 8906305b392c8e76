"""Where the model server is and how to talk to it: address, token, timeouts."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class Endpoint:
    url: str = DEFAULT_HOST
    token: str | None = field(default=None, repr=False)
    timeout: float = 300.0  # seconds without data before we give up
    connect_timeout: float = 5.0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, connect=self.connect_timeout)

    def httpx_options(self) -> dict[str, object]:
        """Only this host is ever contacted: no redirects elsewhere, no proxy from the env."""
        return {
            "headers": self.headers(),
            "timeout": self.httpx_timeout(),
            "follow_redirects": False,
            "trust_env": False,
        }
