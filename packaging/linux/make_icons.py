#!/usr/bin/env python3
"""Render the app icon (resources/icon.svg) to the files the packages need; commit the output.

    QT_QPA_PLATFORM=offscreen python3 packaging/linux/make_icons.py

Writes
  packaging/linux/icons/hicolor/<N>x<N>/apps/<id>.png   N = 16 22 24 32 48 64 128 256 512
  packaging/linux/icons/hicolor/scalable/apps/<id>.svg  (the SVG itself)
  packaging/windows/safeguard-desktop.ico               16..256, PNG entries (Vista and later)
  packaging/macos/safeguard-desktop.icns                16..1024, PNG entries
  resources/icon-<N>.png                                the window icon, N = 16 .. 256 (the app
                                                        loads these: Qt's SVG engine costs
                                                        1.7 MiB and a few ms at start)
Rendering uses Qt's SVG renderer offscreen (PySide6, already a dependency of the app).
"""

from __future__ import annotations

import os
import shutil
import struct
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

PACKAGING = Path(__file__).resolve().parents[1]
SOURCE = PACKAGING.parent / "resources" / "icon.svg"
APP_ID = "io.github.safeguard_desktop.SafeguardDesktop"
SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
WINDOW_SIZES = (16, 24, 32, 48, 64, 128, 256)  # resources/icon-<N>.png (ui/theme.app_icon)
# ICNS entry types holding PNG data, by pixel size (several sizes have two: 1x and 2x).
ICNS_TYPES = (
    (b"icp4", 16), (b"icp5", 32), (b"icp6", 64), (b"ic07", 128), (b"ic08", 256),
    (b"ic09", 512), (b"ic10", 1024), (b"ic11", 32), (b"ic12", 64), (b"ic13", 256),
    (b"ic14", 512),
)  # fmt: skip


def render(renderer: QSvgRenderer, size: int) -> bytes:
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise SystemExit(f"could not encode the {size} px PNG")
    buffer.close()
    return bytes(data.data())


def ico(pngs: dict[int, bytes]) -> bytes:
    """An .ico whose entries are PNG images (0 in the size byte means 256)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = 6 + 16 * len(pngs)
    entries, blobs = b"", b""
    for size, png in sorted(pngs.items()):
        dim = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(png), offset)
        offset += len(png)
        blobs += png
    return header + entries + blobs


def icns(pngs: dict[int, bytes]) -> bytes:
    body = b"".join(
        kind + struct.pack(">I", 8 + len(pngs[size])) + pngs[size] for kind, size in ICNS_TYPES
    )
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(SOURCE))
    if not renderer.isValid():
        raise SystemExit(f"Qt cannot read {SOURCE}")
    pngs = {size: render(renderer, size) for size in {*SIZES, *ICO_SIZES, 1024}}
    hicolor = PACKAGING / "linux" / "icons" / "hicolor"
    for size in SIZES:
        out = hicolor / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(pngs[size])
    for size in WINDOW_SIZES:
        (SOURCE.parent / f"icon-{size}.png").write_bytes(pngs[size])
    scalable = hicolor / "scalable" / "apps" / f"{APP_ID}.svg"
    scalable.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SOURCE, scalable)
    windows = PACKAGING / "windows" / "safeguard-desktop.ico"
    windows.parent.mkdir(parents=True, exist_ok=True)
    windows.write_bytes(ico({s: pngs[s] for s in ICO_SIZES}))
    macos = PACKAGING / "macos" / "safeguard-desktop.icns"
    macos.parent.mkdir(parents=True, exist_ok=True)
    macos.write_bytes(icns(pngs))
    del app
    print(f"wrote {len(SIZES)} PNGs and the SVG under {hicolor}, {windows.name}, {macos.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
