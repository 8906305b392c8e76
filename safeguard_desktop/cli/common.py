"""Helpers shared by the CLI commands: errors, host and settings resolution, logging."""

from __future__ import annotations

import argparse
import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from safeguard_desktop import egress, paths

if TYPE_CHECKING:  # imported when used: `safeguard-desktop` without a command opens the
    # window first, and reaches these helpers (logging, --host) before it
    from safeguard_desktop.services.session import Session
    from safeguard_desktop.settings import Settings

EXIT_ENGINE, EXIT_USAGE = 1, 2


class CliError(Exception):
    """One line for stderr and the exit code to go with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The app's log holds content under review: each file it opens is the user's only."""

    def _open(self) -> io.TextIOWrapper:
        stream = open(  # noqa: SIM115 (the handler owns and closes it)
            self.baseFilename,
            self.mode,
            encoding=self.encoding,
            errors=self.errors,
            opener=lambda path, flags: os.open(path, flags, paths.PRIVATE_FILE),
        )
        paths.make_private(Path(self.baseFilename))  # made by an earlier version, maybe 0644
        return cast(io.TextIOWrapper, stream)


def setup_logging(*, verbose: bool) -> None:
    root = logging.getLogger("safeguard")
    root.setLevel(logging.DEBUG)
    root.propagate = False
    root.addHandler(logging.NullHandler())
    try:
        logs = paths.logs_dir()
        for old in logs.glob("safeguard.log.*"):  # rotated by an earlier version, maybe 0644
            paths.make_private(old)
        handler: logging.Handler = PrivateRotatingFileHandler(
            logs / "safeguard.log", maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
        root.addHandler(handler)
    except OSError:
        pass
    if verbose:
        err = logging.StreamHandler(sys.stderr)
        err.setLevel(logging.DEBUG)
        root.addHandler(err)


def add_host_argument(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """`--host` before or after the subcommand; a subcommand's copy never resets the other."""
    parser.add_argument(
        "--host",
        default=None if top else argparse.SUPPRESS,
        help="Ollama address (default: OLLAMA_HOST, else the host setting, "
        "else http://127.0.0.1:11434)",
    )


def load_settings() -> Settings:
    from safeguard_desktop.settings import Settings

    settings = Settings()
    if settings.load_problem:
        warn(settings.load_problem)
    return settings


def open_session(args: argparse.Namespace, *, with_history: bool = False) -> Session:
    """The session for one command: --host, else OLLAMA_HOST, else the host setting.

    Every warning (settings file, history, a token over plain http) goes to stderr once.
    """
    from safeguard_desktop.services.session import HostError, Session
    from safeguard_desktop.settings import Settings

    settings = Settings()
    try:
        session = Session.open(
            settings, host=getattr(args, "host", None), with_history=with_history, strict=True
        )
    except HostError as exc:
        raise CliError(str(exc)) from None
    egress.allow(session.endpoint.url)  # the one host this command may contact
    for message in session.warnings:
        warn(message)
    if session.token_warning:
        warn(session.token_warning)
    return session


def warn(message: str) -> None:
    print(f"safeguard-desktop: warning: {message}", file=sys.stderr)


def print_json(data: Any) -> None:
    import json  # here: the desktop app reaches this module before its window shows

    # ASCII escapes keep every control character (C0 and C1) out of the raw output.
    json.dump(data, sys.stdout, ensure_ascii=True, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()
