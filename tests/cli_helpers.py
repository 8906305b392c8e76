"""Running the CLI in-process from a test: `cli` (exit code, stdout, stderr), `cli_json`
(the parsed --json output of a command that must succeed), and the data folder reset after
each test (`--data-dir` sets it for the process). Import them by name:

    from tests.cli_helpers import cli, cli_json, reset_data_dir  # noqa: F401 (fixture)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main


@pytest.fixture(autouse=True)
def reset_data_dir() -> Iterator[None]:
    yield
    paths.set_data_dir(None)


def cli(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", str(data), *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> Any:
    code, out, err = cli(capsys, data, *args, "--json")
    assert code == 0, err
    return json.loads(out)
