"""Before Qt starts: a missing display or missing X libraries get a message, not an abort."""

from __future__ import annotations

import ctypes
import os
import socket
import sys

import pytest

from safeguard_desktop import preflight

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


def test_missing_xcb_libraries_are_named_with_their_packages(monkeypatch) -> None:
    real = ctypes.CDLL

    def fake_cdll(name: str, *args: object, **kwargs: object) -> object:
        if name in ("libxcb-cursor.so.0", "libxcb-icccm.so.4"):
            raise OSError(f"{name}: cannot open shared object file")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    monkeypatch.setattr(preflight, "local_display_answers", lambda display: True)
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    message = preflight.check_display()
    assert message is not None
    assert "sudo apt-get install" in message
    assert "libxcb-cursor0" in message and "libxcb-icccm4" in message


def test_no_display_says_how_to_go_on(monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    message = preflight.check_display()
    assert message is not None and "DISPLAY" in message and "--help" in message


def test_offscreen_needs_no_check(monkeypatch) -> None:
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    monkeypatch.delenv("DISPLAY", raising=False)
    assert preflight.check_display() is None


def test_gui_exits_with_the_message_instead_of_aborting(monkeypatch, capsys, tmp_path) -> None:
    from safeguard_desktop import paths
    from safeguard_desktop.cli import main

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    try:
        code = main(["--data-dir", str(tmp_path)])
    finally:
        paths.set_data_dir(None)
    assert code == 1 and "No display found" in capsys.readouterr().err


def free_display_number() -> int:
    taken = {n for n in range(100, 200) if os.path.exists(f"/tmp/.X11-unix/X{n}")}
    return next(n for n in range(100 + os.getpid() % 50, 200) if n not in taken)


def test_a_display_without_an_x_server_is_said_not_aborted(monkeypatch) -> None:
    """Qt's xcb plugin aborts the process (SIGABRT) when DISPLAY names no server."""
    display = f":{free_display_number()}"
    monkeypatch.setenv("DISPLAY", display)
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    message = preflight.check_display()
    assert message is not None and f"The display {display} does not answer" in message
    assert "--help" in message


def test_a_local_display_that_answers_passes_and_a_remote_one_is_left_to_qt() -> None:
    number = free_display_number()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(f"\0/tmp/.X11-unix/X{number}")  # abstract: no file left behind
        server.listen(1)
        assert preflight.local_display_answers(f":{number}") is True
        assert preflight.local_display_answers(f":{number}.0") is True
    assert preflight.local_display_answers(f":{number}") is False
    assert preflight.local_display_answers("gpu-box.example:0") is None
