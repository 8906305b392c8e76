"""HTTP/1.1 plumbing and routes of the fake: bodies, JSON, error objects, SSE streams.

vLLM runs on uvicorn/FastAPI, llama-server on cpp-httplib; what clients see is reproduced:
keep-alive, `text/event-stream` bodies sent chunked, each event `data: …` and a blank line,
an abrupt close that leaves the chunked body unfinished, and the error object of each flavor.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import FakeOpenAI

MAX_BODY = 64 * 1024 * 1024
ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}
LLAMA_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "unavailable_error",
}


class ClientGone(Exception):
    """The client closed the connection, or the fake dropped it on purpose."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""

    @property
    def fake(self) -> FakeOpenAI:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fake.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.fake.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        from .routes import route

        self.status_sent = 0
        self.body_consumed = False
        self.path_only = self.path.split("?", 1)[0]
        try:
            route(self)
            if not self.body_consumed:
                self.read_body()
        except (ClientGone, ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            traceback.print_exc()  # a bug of the fake must not look like a network failure
            self.close_connection = True
            if not self.status_sent:
                with contextlib.suppress(ClientGone):
                    self.send_error_object(500, f"fake openai internal error: {exc!r}")

    # -- request body -------------------------------------------------------------------------
    def _pieces(self) -> Iterator[bytes]:
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
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(remaining, 1 << 20))
            if not data:
                raise ClientGone
            remaining -= len(data)
            yield data

    def read_body(self) -> bytes:
        if self.body_consumed:
            return b""
        self.body_consumed = True
        parts, total = [], 0
        for piece in self._pieces():
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

    def send_bytes(
        self, status: int, body: bytes, content_type: str | None, headers: dict[str, str] | None
    ) -> None:
        all_headers = {"Content-Length": str(len(body)), **(headers or {})}
        if content_type:
            all_headers["Content-Type"] = content_type
        self._start(status, all_headers)
        if self.command != "HEAD" and body:
            self.write(body)

    def send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self.send_bytes(status, body, "application/json", headers)

    def send_error_object(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: int | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_json(status, self.error_object(status, message, type, param, code), headers)

    def error_object(
        self,
        status: int,
        message: str,
        type: str | None = None,
        param: str | None = None,
        code: int | str | None = None,
    ) -> dict[str, Any]:
        """The flavor's error body: OpenAI's/vLLM's `{"error": {message, type, param, code}}`,
        llama-server's `{"error": {code, message, type}}`."""
        if self.fake.flavor == "llama.cpp":
            return {
                "error": {
                    "code": code if code is not None else status,
                    "message": message,
                    "type": type or LLAMA_TYPES.get(status, "server_error"),
                }
            }
        return {
            "error": {
                "message": message,
                "type": type or ERROR_TYPES.get(status, "InternalServerError"),
                "param": param,
                "code": code if code is not None else status,
            }
        }

    def send_text(self, status: int, text: str) -> None:
        self.send_bytes(status, text.encode(), "text/plain; charset=utf-8", None)

    # -- streams ------------------------------------------------------------------------------
    def start_stream(self) -> None:
        self._start(
            200,
            {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "Transfer-Encoding": "chunked",
            },
        )

    def write_events(self, events: list[str]) -> None:
        """Several SSE events (`data: …` text each, without its blank line) as one HTTP chunk."""
        data = "".join(e + "\n\n" for e in events).encode()
        self.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end_stream(self) -> None:
        self.write(b"0\r\n\r\n")

    def drop(self) -> None:
        """Close the socket abruptly: the chunked body is left unfinished."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        raise ClientGone

    def client_gone(self) -> bool:
        """The client closed its end (a cancelled request): vLLM aborts the generation then."""
        try:
            ready, _, _ = select.select([self.connection], [], [], 0)
            return bool(ready) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise ClientGone from exc


def now() -> int:
    return int(time.time())
