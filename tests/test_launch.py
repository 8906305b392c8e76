"""The `safeguard-desktop` command: a command line that opens the desktop app shows the
window's frame before the command-line layer loads; everything else goes to `cli.main`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from safeguard_desktop import cli, launch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("argv", "window"),
    [
        ([], True),
        (["--data-dir", "d"], True),
        (["--data-dir=d", "-v", "--host", "http://10.0.0.7:11434"], True),
        (["--verbose", "--host=http://127.0.0.1:11434"], True),
        (["--version"], False),
        (["--help"], False),
        (["-h"], False),
        (["classify", "--text", "hi"], False),
        (["--data-dir", "d", "history", "list"], False),
        (["--data-dir"], False),  # no value: the parser says so
        (["--data", "d"], False),  # an abbreviation: the parser decides
        (["nonsense"], False),
        (["--data-dir", "/dev/null/x"], False),  # cli.main says why, no window flashes first
        (["--data-dir=/dev/null/x"], False),
    ],
)
def test_which_command_lines_open_the_window_first(argv: list[str], window: bool) -> None:
    assert launch.opens_window(argv) is window
    if window:  # the parser agrees: no command, the desktop app
        assert cli.parse_args(argv).command is None


def test_a_command_goes_straight_to_the_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    from safeguard_desktop import paths

    try:
        code = launch.main(["--data-dir", str(tmp_path), "policies", "list"])
    finally:
        paths.set_data_dir(None)
    assert code == 0 and "harassment" in capsys.readouterr().out


def run_app(probe: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(home)}
    env.pop("SAFEGUARD_DATA_DIR", None)
    return subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=120,
    )  # fmt: skip


def test_the_frame_is_on_screen_before_the_command_line_layer_loads(tmp_path: Path) -> None:
    probe = (
        "import os, sys\n"
        "from safeguard_desktop import app\n"
        "real = app.first_frame\n"
        "def watched(window, timeout_ms=500):\n"
        "    shown = real(window, timeout_ms)\n"
        "    late = ('safeguard_desktop.cli', 'safeguard_desktop.egress', 'logging.handlers')\n"
        "    print(shown, sorted(m for m in late if m in sys.modules), flush=True)\n"
        "    os._exit(0)\n"
        "app.first_frame = watched\n"
        "from safeguard_desktop.launch import main\n"
        "main(['--data-dir', sys.argv[1]])\n"
    )
    done = run_app(probe, str(tmp_path / "data"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True []"


def test_a_data_folder_that_cannot_be_used_says_so_without_a_window(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    probe = (
        "import sys\n"
        "from safeguard_desktop.launch import main\n"
        "from safeguard_desktop.qt import QApplication\n"
        "code = main(['--data-dir', sys.argv[1]])\n"
        "print(code, [w.isVisible() for w in QApplication.topLevelWidgets() if w.isWindow()])\n"
    )
    done = run_app(probe, str(blocker / "data"), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "2" and "True" not in done.stdout
    assert "the data folder cannot be used" in done.stderr
    assert "--data-dir" in done.stderr
