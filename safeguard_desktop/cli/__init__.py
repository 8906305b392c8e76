"""Command-line front: no subcommand opens the GUI; subcommands run headless.

Exit codes: 0 success, 1 server or model error, 2 usage or input error,
3 the model's answer could not be read as a verdict, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from safeguard_desktop import egress, paths
from safeguard_desktop.cli.common import CliError, add_host_argument, setup_logging
from safeguard_desktop.cli.terminal import SafeStream

# The command table and the top-level options (launch.py, which tells the desktop app's
# command line from a command's before this module is imported).
from safeguard_desktop.launch import COMMANDS, MODULE_OF, named_command

if TYPE_CHECKING:
    from safeguard_desktop.app import Frame

EXIT_OK, EXIT_ENGINE, EXIT_USAGE, EXIT_UNPARSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Top-level options also accepted after any subcommand (`--version` stays top-level only).
GLOBAL_DESTS = ("data_dir", "verbose", "host")
UNLOADED = "_unloaded_command"  # set when a run's command was not the one loaded

log = logging.getLogger("safeguard.cli")


def command_module(module: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{module}")


def build_parser(*, only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only` (command module names), just those commands in
    full, the others as stand-ins that accept anything and mark the namespace `UNLOADED`
    (none with `only` empty: the desktop app's command line names no command)."""
    parser = argparse.ArgumentParser(
        prog="safeguard-desktop",
        description="Review content against a policy with gpt-oss-safeguard on Ollama. "
        "Without a command, the desktop app opens.",
    )
    parser.add_argument(
        "--version",
        action=VersionAction,
        help="show the versions of the app, Qt, the ollama client and Python, and exit",
    )
    parser.add_argument("--data-dir", help="keep settings, history and logs in this folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    add_host_argument(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, names in COMMANDS.items():
        if only is None or module in only:
            command_module(module).add_parser(sub)
            continue
        for name in names if only else ():
            stand_in = sub.add_parser(name, add_help=False)
            stand_in.add_argument("rest", nargs=argparse.REMAINDER)
            stand_in.set_defaults(**{UNLOADED: True})
    shared = [a for a in parser._actions if a.dest in GLOBAL_DESTS]
    for subparser in _subparsers(parser):
        _add_global_options(subparser, shared)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line, building only the parser of the command it names.

    Anything the narrow parser does not take as it is (help, abbreviated options, a word it
    read differently, an error) is parsed again by the whole parser, so what a user sees is
    always the whole parser's answer.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    sure, command = named_command(args_list)
    if sure:
        only = [MODULE_OF[command]] if command else []
        narrow = build_parser(only=only)
        narrow.exit_on_error = False
        try:
            args, extra = narrow.parse_known_args(args_list)
        except argparse.ArgumentError:
            pass
        else:
            if not extra and not getattr(args, UNLOADED, False):
                return args
    return build_parser().parse_args(args_list)


def version_text() -> str:
    """`--version`: one line each for the app, Qt, the ollama client and Python.

    Qt is imported here only (it costs start-up), and a Qt that cannot load is reported,
    not raised: `--version` is what one runs to find out what is wrong with an install.
    """
    import platform
    from importlib import metadata

    from safeguard_desktop import __version__

    try:
        from safeguard_desktop.qt import QtCore

        qt = f"Qt {QtCore.qVersion()} (PySide6 {getattr(QtCore, '__version__', '?')})"
    except Exception as exc:  # ImportError, or OSError for a missing system library
        why = (str(exc).splitlines() or ["?"])[0]
        qt = f"Qt unavailable ({type(exc).__name__}: {why})"
    try:
        ollama = metadata.version("ollama")
    except metadata.PackageNotFoundError:
        ollama = "not installed"
    python = f"{platform.python_version()} ({platform.python_implementation()})"
    return (
        f"safeguard-desktop {__version__}\n{qt}\nollama (Python client) {ollama}\nPython {python}\n"
    )


class VersionAction(argparse.Action):
    """Like argparse's "version" action, but the text is made only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(version_text())
        sys.stdout.flush()
        parser.exit()


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser`, at any depth (each once, even when it has aliases)."""
    found: list[argparse.ArgumentParser] = []
    seen: set[int] = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for child in action.choices.values():
                if id(child) not in seen:
                    seen.add(id(child))
                    found.append(child)
                    stack.append(child)
    return found


def _add_global_options(parser: argparse.ArgumentParser, shared: list[argparse.Action]) -> None:
    """Accept the top-level options (`--data-dir`, `-v`, `--host`) after a subcommand too.

    The copies default to SUPPRESS: argparse copies every default of a subcommand's
    namespace over the parent's, so a real default would reset a value given before the
    subcommand. Option strings a subcommand already defines (its own --host) are kept.
    """
    known = parser._option_string_actions
    group: argparse._ArgumentGroup | None = None
    for action in shared:
        missing = [flag for flag in action.option_strings if flag not in known]
        if not missing:
            continue
        if group is None:
            group = parser.add_argument_group("global options")
        kwargs: dict[str, Any] = {"dest": action.dest, "help": action.help}
        if isinstance(action, argparse._StoreTrueAction):
            kwargs["action"] = "store_true"
        else:
            kwargs["metavar"] = action.metavar
        group.add_argument(*missing, default=argparse.SUPPRESS, **kwargs)


# Optional parts of our dependencies this program never uses, which they import at start
# whenever they happen to be installed: httpcore's trio support (trio: 15 MiB and ~100 ms,
# for an event loop we do not run) and httpx's command-line tool (its `cli` extra: click,
# pygments). Marked absent for the run; both libraries expect them to be missing.
UNUSED_OPTIONAL_MODULES = ("trio", "httpx._main")


def main(argv: Sequence[str] | None = None, *, frame: Frame | None = None) -> int:
    """The whole run is air-gapped (only the model host is contacted, see egress.py) and
    every file it creates is the user's only (logs, notes, backups, settings).

    `frame`: the desktop app's window, already shown by launch.py (`app.open_frame`)."""
    skipped = [name for name in UNUSED_OPTIONAL_MODULES if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        with egress.guarded(), paths.private_files():
            return _main(argv, frame)
    finally:
        for name in skipped:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]


def _main(argv: Sequence[str] | None, frame: Frame | None = None) -> int:
    args = parse_args(argv)
    data_dir = getattr(args, "data_dir", None)
    if data_dir:
        paths.set_data_dir(data_dir)
    try:
        data = paths.data_dir()
    except OSError as exc:
        print(
            f"safeguard-desktop: the data folder cannot be used ({exc.strerror}: "
            f"{exc.filename}). Pass a writable folder with --data-dir.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    setup_logging(verbose=bool(getattr(args, "verbose", False)))
    if not args.command:
        from safeguard_desktop.app import run_gui

        return run_gui(args, frame=frame)
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
