"""A run imports only its own command: the command line stays what it was, help included."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import cli
from safeguard_desktop.cli import COMMANDS, build_parser, command_module, named_command, parse_args
from tests.test_cli_global_options import leaves, required_args

REPO = Path(__file__).resolve().parents[1]
FULL = build_parser()


def _top_level(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("module", list(COMMANDS))
def test_the_table_names_the_commands_each_module_adds(module: str) -> None:
    parser = argparse.ArgumentParser()
    command_module(module).add_parser(parser.add_subparsers())
    assert tuple(_top_level(parser)) == COMMANDS[module]


def test_every_command_module_is_in_the_table() -> None:
    found = sorted(p.stem for p in (REPO / "safeguard_desktop" / "cli").glob("*_cmd.py"))
    assert found == sorted(COMMANDS)


def test_the_whole_parser_lists_the_commands_in_the_same_order() -> None:
    assert list(_top_level(FULL)) == [name for names in COMMANDS.values() for name in names]


def argv_cases() -> Iterator[list[str]]:
    for path, parser in leaves(FULL):
        required = required_args(parser)
        yield [*path, *required]
        yield ["--data-dir", "/d", "-v", *path, *required, "--host", "http://127.0.0.1:1"]
        yield ["--host=http://127.0.0.1:2", *path, "--data-dir=/e", *required]


CASES = list(argv_cases())


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(a) for a in CASES])
def test_a_command_parses_as_the_whole_parser_parses_it(argv: list[str]) -> None:
    sure, command = named_command(argv)
    assert sure and command in cli.MODULE_OF
    assert parse_args(argv) == FULL.parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [[], ["--data-dir", "/d"], ["-v", "--host", "http://127.0.0.1:3"], ["--verbose"]],
)
def test_the_desktop_app_command_line_parses_as_before(argv: list[str]) -> None:
    assert named_command(argv) == (True, None)
    assert parse_args(argv) == FULL.parse_args(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--data", "/d", "classify", "--policy", "p", "--text", "t"],  # abbreviated option
        ["-h"],
        ["--data-dir"],
        ["classif"],
        ["--", "classify"],
    ],
)
def test_anything_unclear_goes_to_the_whole_parser(argv: list[str]) -> None:
    assert named_command(argv) == (False, None)


@pytest.mark.parametrize("name", [n for names in COMMANDS.values() for n in names])
def test_help_of_each_command_is_unchanged(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse_args([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out == _top_level(FULL)[name].format_help()


def test_usage_errors_read_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["classify"], ["classify", "--policy", "p", "--bogus"], ["history", "nope"]):
        with pytest.raises(SystemExit) as lazy:
            parse_args(argv)
        lazy_err = capsys.readouterr().err
        with pytest.raises(SystemExit) as full:
            FULL.parse_args(argv)
        assert (lazy.value.code, lazy_err) == (full.value.code, capsys.readouterr().err)


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    assert capsys.readouterr().out == FULL.format_help()


def _modules_after(args: list[str], tmp_path: Path) -> list[str]:
    probe = (
        "import sys\n"
        "from safeguard_desktop.cli import parse_args\n"
        f"parse_args({args!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('safeguard_desktop.cli.')"
        " and m.endswith('_cmd')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return list(eval(done.stdout))  # a printed list of module names


def test_a_run_imports_only_its_command_module(tmp_path: Path) -> None:
    assert _modules_after(["policies", "list"], tmp_path) == ["safeguard_desktop.cli.policies_cmd"]
    assert _modules_after(["export", "1", "--out", "x.md"], tmp_path) == [
        "safeguard_desktop.cli.history_cmd"
    ]
    assert _modules_after([], tmp_path) == []  # the desktop app


def test_unused_optional_modules_are_absent_during_a_run_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trio (httpcore's) and httpx's command-line tool: never used, not loaded."""
    monkeypatch.setenv("SAFEGUARD_DATA_DIR", str(tmp_path / "data"))
    before = {name: sys.modules.get(name, "missing") for name in cli.UNUSED_OPTIONAL_MODULES}
    during: dict[str, object] = {}

    def command(args: argparse.Namespace) -> int:
        during.update({n: sys.modules.get(n, "missing") for n in cli.UNUSED_OPTIONAL_MODULES})
        return 0

    namespace = argparse.Namespace(command="x", func=command, data_dir=None, verbose=False)
    monkeypatch.setattr(cli, "parse_args", lambda argv: namespace)
    assert cli.main(["x"]) == 0
    for name, was in before.items():
        if was == "missing":
            assert during[name] is None  # importing it raises ImportError
        assert sys.modules.get(name, "missing") == was
