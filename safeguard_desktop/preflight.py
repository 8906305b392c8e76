"""Check, before Qt starts, that a window can be shown; say what to install when not.

Without these libraries Qt's xcb plugin aborts the process with a bare
"could not load the Qt platform plugin" message and a core dump.
"""

from __future__ import annotations

import os
import sys

# soname -> Debian/Ubuntu package that provides it
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libEGL.so.1": "libegl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}


def local_display_answers(display: str) -> bool | None:
    """Whether the X server of a local display (":N", ":N.S") takes a connection on its
    socket, the file or the abstract one; None for a display that is not local (not
    checked: Qt says what is wrong there). Without a server Qt's xcb plugin aborts the
    process."""
    import re
    import socket  # here: the offscreen and Wayland paths need none (start-up)

    number = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    if number is None or not hasattr(socket, "AF_UNIX"):
        return None
    path = f"/tmp/.X11-unix/X{number.group(1)}"
    for address in (path, "\0" + path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            try:
                probe.connect(address)
            except OSError:
                continue
            return True
    return False


def missing_xcb_packages() -> list[str]:
    import ctypes  # here: the offscreen and Wayland paths need none (start-up)

    missing = []
    for soname, package in XCB_LIBRARIES.items():
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(package)
    return missing


def check_display() -> str | None:
    """None when Qt can start, else one message saying what to do."""
    if not sys.platform.startswith("linux"):
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None  # offscreen, wayland, vnc...: Qt reports its own problems clearly
    if not platform and os.environ.get("WAYLAND_DISPLAY"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return (
            "No display found (DISPLAY is not set). Run the app from a desktop session, "
            "or use the command line: `safeguard-desktop --help`."
        )
    if local_display_answers(display) is False:
        return (
            f"The display {display} does not answer (no X server runs there). Check DISPLAY, "
            "run the app from a desktop session, or use the command line: "
            "`safeguard-desktop --help`."
        )
    missing = missing_xcb_packages()
    if missing:
        return (
            "Qt cannot open a window: system libraries are missing. Install them with\n"
            f"  sudo apt-get install {' '.join(missing)}\n"
            "(on Fedora: sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms "
            "xcb-util-image xcb-util-renderutil libxkbcommon-x11)"
        )
    return None
