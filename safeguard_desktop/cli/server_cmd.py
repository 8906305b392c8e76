"""`safeguard-desktop server start|stop|status|logs|token`: the local Ollama, headless."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys

from safeguard_desktop import secrets
from safeguard_desktop.cli.common import (
    EXIT_ENGINE,
    EXIT_USAGE,
    CliError,
    add_host_argument,
    load_settings,
    open_session,
    print_json,
)
from safeguard_desktop.cli.terminal import safe_terminal
from safeguard_desktop.services.server_service import (
    EngineError,
    NotLocalHost,
    ServerService,
    clear_token,
    save_token,
)
from safeguard_desktop.services.session import HostError, configured_url

EXIT_OK = 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "server",
        help="start, stop and inspect the local Ollama server",
        description="Manage the Ollama server Safeguard Desktop uses.",
    )
    actions = p.add_subparsers(dest="server_action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start Ollama (or attach to a running one)")
    start.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (30)")
    add_host_argument(start)
    stop = actions.add_parser("stop", help="stop the Ollama this app started")
    stop.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds before a graceful stop becomes a kill (10)",
    )
    add_host_argument(stop)
    status = actions.add_parser("status", help="is Ollama running, which version, what is loaded")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    add_host_argument(status)
    logs = actions.add_parser("logs", help="show the managed server's log")
    logs.add_argument("-n", type=int, default=50, metavar="N", help="last N lines (50)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    token = actions.add_parser("token", help="keep a remote server's token in the OS keyring")
    token.add_argument(
        "token_action",
        choices=("set", "clear"),
        help="set reads the token from standard input or a prompt",
    )
    add_host_argument(token)
    p.set_defaults(func=run)


def engine_error(exc: EngineError) -> CliError:
    return CliError(str(exc), EXIT_USAGE if isinstance(exc, NotLocalHost) else EXIT_ENGINE)


def run(args: argparse.Namespace) -> int:
    action = args.server_action
    if action == "token":
        return _token(args)
    session = open_session(args)
    if action == "logs":
        return _logs(session.server(), args)
    timeout = getattr(args, "timeout", 30.0)
    service = session.server(start_timeout=timeout, stop_timeout=timeout)
    try:
        if action == "start":
            return _start(service)
        if action == "stop":
            return _stop(service)
        return _status(service, as_json=args.json)
    except EngineError as exc:
        raise engine_error(exc) from None


def _start(service: ServerService) -> int:
    result = asyncio.run(service.start())
    version = f"Ollama {result.version}" if result.version else "Ollama"
    if result.started:
        print(
            f"Started {version} at {result.url} (pid {result.pid}); it keeps running after this "
            f"command. Log: {result.log_file}. Stop it with `safeguard-desktop server stop`."
        )
    elif result.managed:
        print(
            f"{version} is already running at {result.url} (started by Safeguard Desktop, "
            f"pid {result.pid}); attached to it."
        )
    else:
        print(
            f"{version} is already running at {result.url} (not started by Safeguard "
            "Desktop); attached to it."
        )
    return EXIT_OK


def _stop(service: ServerService) -> int:
    result = asyncio.run(service.stop())
    if not result.was_running:
        print(f"No Ollama is running at {result.url}; nothing to stop.")
    elif result.forced:
        print(f"Ollama (pid {result.pid}) did not stop in time and was killed.")
    else:
        print(f"Stopped Ollama (pid {result.pid}) at {result.url}.")
    return EXIT_OK


def _status(service: ServerService, *, as_json: bool) -> int:
    report = asyncio.run(service.status())
    if as_json:
        print_json(report.to_json())
        return EXIT_OK
    s = report.status
    if s.running:
        who = f"started by Safeguard Desktop, pid {s.pid}" if s.managed else "not managed here"
        print(f"Ollama {s.version or '(version unknown)'} is running at {s.host} ({who}).")
    else:
        print(f"Ollama is not running at {s.host}.")
    if s.problem:
        print(f"Problem: {s.problem}")
    if s.local:
        if s.binary:
            print(f"Binary: {s.binary} (version {s.binary_version or 'unknown'})")
        else:
            print(f"Binary: not found. {s.binary_problem}")
    for model in report.loaded:
        print(
            f"Loaded: {model.name} ({model.size_vram / 1e9:.1f} GB in GPU memory, "
            f"context {model.context_length or '?'}, until {model.expires_at})"
        )
    return EXIT_OK  # a token warning was printed when the session opened


def _logs(service: ServerService, args: argparse.Namespace) -> int:
    if not service.log_file.exists():
        raise CliError(
            f"No server log yet at {service.log_file}: it is written when Safeguard Desktop "
            "starts Ollama (`safeguard-desktop server start`).",
            EXIT_ENGINE,
        )
    for line in service.log_tail(max(0, args.n)):
        print(safe_terminal(line))
    sys.stdout.flush()
    if args.follow:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_follow(service))
    return EXIT_OK


async def _follow(service: ServerService) -> None:
    async for line in service.follow_log():
        print(safe_terminal(line), flush=True)


def _token(args: argparse.Namespace) -> int:
    settings = load_settings()
    try:
        url = configured_url(settings, getattr(args, "host", None))
    except HostError as exc:
        raise CliError(str(exc)) from None
    try:
        if args.token_action == "clear":
            clear_token(url)
            print(f"Token for {url} removed from the OS keyring.")
            return EXIT_OK
        if not secrets.available():  # said before the token is typed, not after
            raise secrets.SecretStoreUnavailable(secrets.NO_BACKEND)
    except secrets.SecretStoreUnavailable as exc:
        raise CliError(str(exc), EXIT_ENGINE) from None
    token = _read_token(url)
    try:
        warning = save_token(url, token)
    except secrets.SecretStoreUnavailable as exc:
        raise CliError(str(exc), EXIT_ENGINE) from None
    if warning:
        print(f"safeguard-desktop: warning: {warning}", file=sys.stderr)
    print(f"Token for {url} saved in the OS keyring ({secrets.backend_name()}).")
    return EXIT_OK


def _read_token(url: str) -> str:
    """From a prompt without echo, or from standard input: never from the command line."""
    tty = sys.stdin.isatty()
    token = (getpass.getpass(f"Token for {url}: ") if tty else sys.stdin.readline()).strip()
    if not token:
        raise CliError("No token given; type it at the prompt or pipe it on standard input.")
    return token
