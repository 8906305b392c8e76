"""HTTP/1.1 plumbing of the fake: request bodies (plain or chunked), JSON, chunked streams.

Real Ollama is a Go net/http + gin server; what matters to clients is reproduced here:
keep-alive, `Transfer-Encoding: chunked` NDJSON streams, gin's "404 page not found", and an
abrupt close that leaves a chunked body unfinished.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import traceback
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FakeOllama

MAX_BODY = 64 * 1024 * 1024


class ClientGone(Exception):
    """The client closed the connection (cancel) or the server dropped it on purpose."""


class Handler(BaseHTTPRequestHandler):
    """One connection; requests are routed to the functions of routes_chat / routes_models."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeOllama"
    sys_version = ""

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def fake(self) -> FakeOllama:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def setup(self) -> None:
        super().setup()
        # As Go's net/http (so Ollama) does: small writes leave at once, no Nagle delay of
        # ~40 ms per reply on a kept-alive connection.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.fake._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence http.server's own log; gin-style lines are written in _dispatch."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        from .routes import route

        self.status_sent = 0
        self.body_consumed = False
        self.path_only = self.path.split("?", 1)[0]
        started = time.monotonic()
        try:
            route(self)
            if not self.body_consumed:
                for _ in self.iter_body():
                    pass
        except ClientGone:
            self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            # A bug in the fake must not look like a network failure to the test.
            traceback.print_exc()
            self.close_connection = True
            if not self.status_sent:
                with contextlib.suppress(ClientGone):
                    self.send_error_json(500, f"fake ollama internal error: {exc!r}")
        finally:
            self._log(started)

    def _log(self, started: float) -> None:
        stream = self.fake.log_stream
        if stream is None:
            return
        elapsed = (time.monotonic() - started) * 1000
        stamp = datetime.now().strftime("%Y/%m/%d - %H:%M:%S")
        line = (
            f"[GIN] {stamp} | {self.status_sent:3d} | {elapsed:>12.6f}ms | "
            f"{self.client_address[0]:>15} | {self.command:<8} {json.dumps(self.path_only)}\n"
        )
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass

    # -- request body -------------------------------------------------------------------------
    def iter_body(self) -> Iterator[bytes]:
        """Yield the request body in pieces, plain or chunked (httpx streams uploads chunked)."""
        if self.body_consumed:
            return
        self.body_consumed = True
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise ClientGone
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                data = self.rfile.read(size)
                self.rfile.readline(8)
                if len(data) < size:
                    raise ClientGone
                yield data
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(remaining, 1 << 20))
            if not data:
                raise ClientGone
            remaining -= len(data)
            yield data

    def read_body(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        for piece in self.iter_body():
            total += len(piece)
            if total > MAX_BODY:
                raise ClientGone
            parts.append(piece)
        return b"".join(parts)

    # -- plain responses ----------------------------------------------------------------------
    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.status_sent = status
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
        except OSError as exc:
            raise ClientGone from exc

    def send_bytes(self, status: int, body: bytes, content_type: str | None) -> None:
        headers = {"Content-Length": str(len(body))}
        if content_type:
            headers = {"Content-Type": content_type, **headers}
        self._start(status, headers)
        if self.command != "HEAD" and body:
            self._write(body)

    def send_json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_bytes(status, body, "application/json; charset=utf-8")

    def send_error_json(self, status: int, message: str) -> None:
        self.send_json(status, {"error": message})

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/plain; charset=utf-8")

    def send_empty(self, status: int) -> None:
        self.send_bytes(status, b"", None)

    # -- streams ------------------------------------------------------------------------------
    def start_stream(self) -> None:
        """200 with a chunked NDJSON body, as Ollama's streaming endpoints answer."""
        self._start(200, {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"})

    def write_lines(self, objs: list[dict[str, Any]]) -> None:
        """Write several NDJSON lines as one HTTP chunk."""
        data = b"".join(json.dumps(o, separators=(",", ":")).encode() + b"\n" for o in objs)
        self._write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end_stream(self) -> None:
        self._write(b"0\r\n\r\n")

    def drop(self) -> None:
        """Close the socket abruptly: no final chunk, broken chunked encoding."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise ClientGone

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise ClientGone from exc
