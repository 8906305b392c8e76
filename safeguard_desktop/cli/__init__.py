"""Command-line front: no subcommand opens the GUI; subcommands run headless.

Exit codes: 0 success, 1 server or model error, 2 usage or input error,
3 the model's answer could not be read as a verdict, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from safeguard_desktop import __version__, paths
from safeguard_desktop.cli import (
    classify_cmd,
    history_cmd,
    models_cmd,
    policies_cmd,
    server_cmd,
)
from safeguard_desktop.cli.common import CliError, add_host_argument, setup_logging
from safeguard_desktop.cli.terminal import SafeStream

EXIT_OK, EXIT_ENGINE, EXIT_USAGE, EXIT_UNPARSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
COMMANDS = [classify_cmd, policies_cmd, history_cmd, server_cmd, models_cmd]

log = logging.getLogger("safeguard.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safeguard-desktop",
        description="Review content against a policy with gpt-oss-safeguard on Ollama. "
        "Without a command, the desktop app opens.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--data-dir", help="keep settings, history and logs in this folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    add_host_argument(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.data_dir:
        paths.set_data_dir(args.data_dir)
    try:
        data = paths.data_dir()
    except OSError as exc:
        print(
            f"safeguard-desktop: the data folder cannot be used ({exc.strerror}: "
            f"{exc.filename}). Pass a writable folder with --data-dir.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    setup_logging(verbose=args.verbose)
    if not args.command:
        from safeguard_desktop.app import run_gui

        return run_gui(args)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeStream(out), SafeStream(err)
    try:
        return _run(args, data)
    finally:
        sys.stdout, sys.stderr = out, err


def _run(args: argparse.Namespace, data: Path) -> int:
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"safeguard-desktop: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # last resort: never a traceback on the terminal
        log.exception("unexpected error")
        print(
            f"safeguard-desktop: unexpected error: {str(exc).rstrip('.')}. Details are in "
            f"{data / 'logs' / 'safeguard.log'}; please report it.",
            file=sys.stderr,
        )
        return EXIT_ENGINE
