"""Air-gap guard: this process talks to the configured model host(s) and to nothing else.

`guarded()` (entered by `cli.main` and `app.run_gui` for the whole run) arms an audit hook
(`sys.addaudithook`) on Python's socket events: `socket.connect` (and `connect_ex`),
`socket.sendto`/`socket.sendmsg` with an address, and the name lookups `socket.getaddrinfo`,
`socket.gethostbyname(_ex)`, `socket.gethostbyaddr` and `socket.getnameinfo`. Allowed:

- the host:port of every allowed model host: `allow(url)` (the CLI's session) or
  `follow(source)` (the GUI's session, whose endpoint changes when the Settings do: the hook
  asks `source()` at each connection, so the new host is allowed the moment it is used and
  the old one no longer is);
- Unix-domain sockets (D-Bus for the keyring);
- a loopback connection made by `socket.socketpair` itself (on Windows the event loop's
  self-pipe is a loopback TCP pair);
- the lookup of a loopback name or of an allowed host's name (its answers are then allowed
  on the host's port).

Anything else raises `EgressRefused` (a `ConnectionRefusedError`, so an `OSError`) whose
message names the destination, and is logged. Audit hooks cannot be removed: outside
`guarded()` the hook does nothing, and leaving the block restores the allow-list it found, so
in-process callers (the tests) are not guarded after a run.

Not covered: connections made below Python's socket module (C extensions or Qt's own
networking, none of which the app uses) and child processes (the managed `ollama serve`
is started with OLLAMA_NO_CLOUD=1 instead).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

__all__ = ["EgressRefused", "allow", "allowed", "follow", "guarded", "is_armed"]

log = logging.getLogger("safeguard.egress")

_CONNECT_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_LOOKUP_EVENTS = frozenset(
    {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}
)
_EVENTS = _CONNECT_EVENTS | _LOOKUP_EVENTS
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_INET = frozenset({socket.AF_INET, socket.AF_INET6})
_UNIX = getattr(socket, "AF_UNIX", None)


class EgressRefused(ConnectionRefusedError):
    """A connection or name lookup the air-gap guard refused; `destination` says where to."""

    def __init__(self, message: str, destination: str) -> None:
        super().__init__(message)
        self.destination = destination

    def __str__(self) -> str:
        return str(self.args[0])


# Plain classes, not dataclasses: the GUI imports this module before its window shows, and
# `dataclasses` would be imported (and its code generated) for these two alone.
class _Host(NamedTuple):
    url: str
    name: str  # lower case, no brackets, no trailing dot
    port: int


class _State:
    def __init__(self) -> None:
        self.armed = False
        self.hosts: tuple[_Host, ...] = ()
        self.sources: tuple[Callable[[], str], ...] = ()
        self.resolved: dict[str, frozenset[str]] = {}


_state = _State()
_lock = threading.Lock()
_local = threading.local()
_installed = False


# -- the allow-list ------------------------------------------------------------------------------
def _parse(url: str) -> _Host | None:
    try:
        split = urllib.parse.urlsplit(url.strip())
        name = split.hostname
        port = split.port or {"http": 80, "https": 443}.get(split.scheme, 11434)
    except ValueError:
        return None
    if not name:
        return None
    return _Host(url.strip().rstrip("/"), _norm(name), port)


def allow(url: str) -> None:
    """Allow connections to the host:port of `url` (a model server's base URL)."""
    host = _parse(url)
    if host is None:
        log.warning("not a host address, nothing allowed: %r", url)
        return
    with _lock:
        if host not in _state.hosts:
            _state.hosts = (*_state.hosts, host)


def follow(source: Callable[[], str]) -> None:
    """Allow whatever URL `source()` returns at the time of each connection."""
    with _lock:
        _state.sources = (*_state.sources, source)


def _current() -> list[_Host]:
    hosts = list(_state.hosts)
    for source in _state.sources:
        try:
            host = _parse(source())
        except Exception:  # a source that fails allows nothing
            host = None
        if host is not None and host not in hosts:
            hosts.append(host)
    return hosts


def allowed() -> tuple[str, ...]:
    """The base URLs connections may go to right now."""
    return tuple(h.url for h in _current())


def is_armed() -> bool:
    return _state.armed


@contextmanager
def guarded() -> Iterator[None]:
    """Refuse every other connection until the block ends; then restore what was there."""
    _install()
    with _lock:
        saved = (_state.armed, _state.hosts, _state.sources)
        _state.armed = True
    try:
        yield
    finally:
        with _lock:
            _state.armed, _state.hosts, _state.sources = saved
            _state.resolved = {}


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


# -- the hook ------------------------------------------------------------------------------------
def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS or not _state.armed or getattr(_local, "busy", False):
        return
    _local.busy = True  # our own lookups below are not checked again
    try:
        refusal = _check(event, args)
    except Exception as exc:  # a malformed event: refuse rather than let it through
        refusal = _refusal(f"an unreadable {event} ({type(exc).__name__})", connection=True)
    finally:
        _local.busy = False
    if refusal is not None:
        log.warning("%s (event %s)", refusal, event)
        raise refusal


def _check(event: str, args: tuple[Any, ...]) -> EgressRefused | None:
    if event in _CONNECT_EVENTS:
        sock, address = args[0], args[1]
        if address is None:  # sendmsg on a connected socket: its connect was checked
            return None
        family = getattr(sock, "family", None)
        if _UNIX is not None and family == _UNIX:
            return None
        if family not in _INET or not isinstance(address, tuple) or len(address) < 2:
            return _refusal(f"{address!r} (socket family {family})", connection=True)
        host, port = _norm(address[0]), address[1]
        if _connect_allowed(host, port):
            return None
        if _is_loopback(host) and _from_socketpair():
            return None
        return _refusal(_destination(host, port), connection=True)
    # name lookups
    if event == "socket.getnameinfo":
        sockaddr = args[0]
        raw, port = (sockaddr[0], sockaddr[1]) if isinstance(sockaddr, tuple) else (sockaddr, None)
    else:
        raw, port = args[0], (args[1] if event == "socket.getaddrinfo" else None)
    if raw is None:  # getaddrinfo(None, port): a local address, no lookup
        return None
    host = _norm(raw)
    if _is_loopback(host) or any(host == h.name for h in _current()):
        return None
    if port not in (None, "", 0):
        return _refusal(_destination(host, port), connection=True)
    return _refusal(host, connection=False)


def _connect_allowed(ip: str, port: object) -> bool:
    """`ip`:`port` is an allowed host's: its address, or one its name resolves to."""
    hosts = [h for h in _current() if str(port) == str(h.port)]
    address = str(_ip(ip))
    if any(_same_ip(ip, h.name) or address in _addresses(h, refresh=False) for h in hosts):
        return True
    # maybe a name now resolves to another address (round-robin DNS, a changed record)
    return any(address in _addresses(h, refresh=True) for h in hosts if _ip(h.name) is None)


def _addresses(host: _Host, *, refresh: bool) -> frozenset[str]:
    """The addresses `host.name` resolves to (cached; a named host only)."""
    if _ip(host.name) is not None:
        return frozenset()
    cached = _state.resolved.get(host.name)
    if cached is not None and not refresh:
        return cached
    try:
        infos = socket.getaddrinfo(host.name, host.port, type=socket.SOCK_STREAM)
        found = frozenset(str(_ip(str(info[4][0]))) for info in infos)
    except OSError:
        found = frozenset()
    _state.resolved[host.name] = found
    return found


def _from_socketpair() -> bool:
    """Called (a few frames up) from socket.py's socketpair, as on Windows."""
    frame = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_filename == socket.__file__ and "socketpair" in code.co_name:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def _refusal(destination: str, *, connection: bool) -> EgressRefused:
    urls = allowed()
    if not urls:
        who = "the model host, and none is set for this run"
    elif len(urls) == 1:
        who = f"the model host {urls[0]}"
    else:
        who = "the model hosts " + ", ".join(urls)
    what = "a connection to" if connection else "a name lookup of"
    return EgressRefused(
        f"Safeguard Desktop only talks to {who}; refused {what} {destination}", destination
    )


# -- addresses -----------------------------------------------------------------------------------
def _norm(raw: object) -> str:
    text = raw.decode("idna", "replace") if isinstance(raw, bytes) else str(raw)
    return text.strip().strip("[]").rstrip(".").lower()


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in `text` (an IPv4-mapped IPv6 one as IPv4, no scope), else None."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _same_ip(a: str, b: str) -> bool:
    first, second = _ip(a), _ip(b)
    return a == b if first is None else first == second


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def _destination(host: str, port: object) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
