"""Global options (`--host`, `--data-dir`, `-v`) before or after any subcommand, at any depth."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import build_parser, main

URL = "http://127.0.0.1:1"  # loopback, nothing listens: no test may reach a real host
OTHER = "http://127.0.0.1:2"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A stray run lands in `fallback` (never the real user folders); logging is restored."""
    monkeypatch.setenv("SAFEGUARD_DATA_DIR", str(tmp_path / "fallback"))
    logger = logging.getLogger("safeguard")
    before = list(logger.handlers)
    yield
    paths.set_data_dir(None)
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
            handler.close()


def _children(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    children = list(_children(parser))
    if not children and path:
        yield path, parser
    for name, child in children:
        yield from leaves(child, (*path, name))


def inner(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser below the top one, leaves and the ones in between."""
    for name, child in _children(parser):
        yield (*path, name), child
        yield from inner(child, (*path, name))


def _value(action: argparse.Action) -> list[str]:
    if action.nargs == 0:  # store_true and friends
        return []
    if action.choices:
        return [str(next(iter(action.choices)))]
    if action.type is None or action.type is str:
        return ["x"]
    return ["1"]  # int and the checked id/limit types take a whole number


def required_args(parser: argparse.ArgumentParser) -> list[str]:
    """The least a user must type after the subcommand for it to parse."""
    args: list[str] = []
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        if action.nargs not in ("?", "*"):
            args += _value(action)
    for action in parser._actions:
        if action.option_strings and action.required:
            args += [action.option_strings[0], *_value(action)]
    for group in parser._mutually_exclusive_groups:
        if group.required:
            first = group._group_actions[0]
            args += [first.option_strings[0], *_value(first)]
    return args


PARSER = build_parser()
LEAVES = list(leaves(PARSER))
LEAF_IDS = [" ".join(path) for path, _ in LEAVES]


def test_the_walk_finds_every_kind_of_subcommand() -> None:
    found = {path for path, _ in LEAVES}
    expected = {
        ("classify",),
        ("export",),
        ("policies", "list"),
        ("policies", "lint"),
        ("history", "list"),
        ("history", "decide"),
        ("server", "logs"),
        ("server", "start"),
        ("models", "export"),
        ("models", "import-bundle"),
    }
    assert expected <= found
    assert len(found) >= 25


@pytest.mark.parametrize(("path", "parser"), LEAVES, ids=LEAF_IDS)
def test_host_after_any_subcommand(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    required = required_args(parser)
    args = PARSER.parse_args([*path, "--host", URL, *required])
    assert args.host == URL
    assert args.data_dir is None and args.verbose is False
    assert callable(args.func)

    args = PARSER.parse_args([*path, *required, "--data-dir", "/somewhere", "-v"])
    assert (args.data_dir, args.verbose, args.host) == ("/somewhere", True, None)


@pytest.mark.parametrize(("path", "parser"), LEAVES, ids=LEAF_IDS)
def test_options_before_the_subcommand_are_kept(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    required = required_args(parser)
    args = PARSER.parse_args(
        ["--host", URL, "--data-dir", "/before", "--verbose", *path, *required]
    )
    assert (args.host, args.data_dir, args.verbose) == (URL, "/before", True)
    # Given again after the subcommand, the later value wins.
    args = PARSER.parse_args(
        ["--host", URL, "--data-dir", "/before", *path, *required, "--host", OTHER]
    )
    assert (args.host, args.data_dir) == (OTHER, "/before")
    args = PARSER.parse_args(["--data-dir", "/before", *path, *required, "--data-dir", "/after"])
    assert args.data_dir == "/after"


def test_options_between_nested_commands() -> None:
    args = PARSER.parse_args(["server", "--host", URL, "-v", "logs"])
    assert (args.host, args.verbose, args.server_action) == (URL, True, "logs")
    args = PARSER.parse_args(["policies", "--data-dir", "/mid", "show", "harassment"])
    assert (args.data_dir, args.policy) == ("/mid", "harassment")


@pytest.mark.parametrize(("path", "parser"), list(inner(PARSER)), ids=lambda v: str(v))
def test_help_of_every_subcommand_lists_the_global_options(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    text = parser.format_help()
    for option in ("--host", "--data-dir", "--verbose"):
        assert option in text, f"{' '.join(path)} --help lacks {option}"
    assert "--version" not in parser._option_string_actions


def test_version_stays_top_level(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and "safeguard-desktop" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["policies", "list", "--version"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --version" in capsys.readouterr().err


# -- end to end ----------------------------------------------------------------------


def test_data_dir_after_history_list_holds_the_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    code = main(["history", "list", "--data-dir", str(data), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.strip() == "[]"
    assert (data / "history.sqlite3").is_file()
    assert not (tmp_path / "fallback").exists()


def test_data_dir_after_policies_list_reads_its_policy_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    (data / "policies").mkdir(parents=True)
    (data / "policies" / "team-rules.md").write_text(
        "# Team rules\n\nViolates (1): insults.\n", encoding="utf-8"
    )
    code = main(["policies", "list", "--data-dir", str(data)])
    out, err = capsys.readouterr()
    assert code == 0, err
    mine = [line for line in out.splitlines() if line.startswith("team-rules ")]
    assert len(mine) == 1 and str(data / "policies" / "team-rules.md") in mine[0]
    assert not (tmp_path / "fallback").exists()


def test_unusable_data_dir_after_the_subcommand_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    code = main(["policies", "list", "--data-dir", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--data-dir" in err and "Traceback" not in err


def test_server_logs_accepts_host_and_says_there_is_no_log_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    code = main(["--data-dir", str(data), "server", "logs", "--host", URL])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "usage:" not in err
    assert err.startswith("safeguard-desktop: No server log yet at ")
    assert str(data / "logs" / "ollama.log") in err
    assert "safeguard-desktop server start" in err


def test_server_logs_with_host_after_prints_the_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "ollama.log").write_text(
        "first line\nsecond line\nthird line\n", encoding="utf-8"
    )
    code = main(["server", "logs", "--host", URL, "-n", "2", "--data-dir", str(data)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.splitlines() == ["second line", "third line"]
