"""The `safeguard-desktop` command (and `python -m safeguard_desktop`, and the packaged app).

A command line that opens the desktop app (no command, only top-level options typed in
full: `--data-dir`, `--host`, `-v`) shows the window's frame first (`app.open_frame`),
before the command-line layer is even imported (argparse, logging, the egress guard: about
20 ms); `cli.main` then parses it, sets up the data folder, the log and the guard, and
builds the workspace into that frame. Everything else goes to `cli.main` at once. The frame
makes no network connection: the egress guard is in place before anything that could.

The command table lives here, not in `cli`, so that telling the two apart costs nothing;
`cli` builds its parser from it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safeguard_desktop.app import Frame

# The command modules of `cli`, in the order `--help` lists their commands, with the
# top-level commands each one adds. A run imports only the module of its command (the
# desktop app none): each imports what its command needs (tests/test_cli_lazy.py checks it).
COMMANDS: dict[str, tuple[str, ...]] = {
    "classify_cmd": ("classify",),
    "policies_cmd": ("policies",),
    "history_cmd": ("history", "export"),
    "server_cmd": ("server",),
    "models_cmd": ("models",),
    "queue_cmd": ("queue",),
    "eval_cmd": ("eval",),
    "hosts_cmd": ("hosts",),
    "sign_cmd": ("keys", "sign", "verify"),
}
MODULE_OF = {name: module for module, names in COMMANDS.items() for name in names}
# The top-level options as typed in full, and whether each takes a value.
TOP_OPTIONS = {"--version": False, "--data-dir": True, "-v": False, "--verbose": False,
               "--host": True}  # fmt: skip


def named_command(argv: Sequence[str]) -> tuple[bool, str | None]:
    """(sure, command): the command `argv` runs (None: the desktop app), when that can be
    told from top-level options typed in full; not sure for help, abbreviations or typos."""
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-") or arg == "-":
            return (True, arg) if arg in MODULE_OF else (False, None)
        name, has_value, _ = arg.partition("=")
        if name not in TOP_OPTIONS or (has_value and not TOP_OPTIONS[name]):
            return False, None
        if TOP_OPTIONS[name] and not has_value and next(args, None) is None:
            return False, None
    return True, None


def opens_window(argv: Sequence[str]) -> bool:
    """Whether `argv` surely opens the desktop app (`--version` prints and exits), with a
    `--data-dir` that can be used (else `cli.main` says why, and no window flashes first)."""
    if named_command(argv) != (True, None) or "--version" in argv:
        return False
    folder = _option_value(argv, "--data-dir")
    return folder is None or folder_usable(Path(folder).expanduser())


def _option_value(argv: Sequence[str], option: str) -> str | None:
    """The last value of `option` (`--opt V` or `--opt=V`) in a command line that
    `named_command` accepted."""
    value = None
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(option + "="):
            value = arg.partition("=")[2]
    return value


def folder_usable(folder: Path) -> bool:
    """Whether `folder` is, or can be made, a folder this user can write in (nothing is
    created here)."""
    path = folder.absolute()
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not opens_window(args):
        from safeguard_desktop.cli import main as cli_main

        return cli_main(args)
    from safeguard_desktop import app, paths

    with paths.private_files():  # what the toolkit writes meanwhile is the user's only
        frame: Frame | None = app.open_frame()  # None without a display: cli says why
    with app.plain_imports():  # PySide6 replaced `import`: see app.plain_imports
        from safeguard_desktop.cli import main as cli_main

        try:
            return cli_main(args, frame=frame)
        finally:
            if frame is not None:
                frame.discard()  # unused (a data folder that cannot be used): closed
