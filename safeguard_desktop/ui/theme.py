"""Looks: Fusion style with a light and a dark palette that follow the system, icon, colours.

Colours that carry meaning (verdict badges, quote groups) are defined here once so every
pane uses the same ones.
"""

from __future__ import annotations

import importlib.resources
import logging
from dataclasses import dataclass
from pathlib import Path

from safeguard_desktop.qt import (
    QApplication,
    QColor,
    QGuiApplication,
    QIcon,
    QLabel,
    QPalette,
    QSize,
    QStyleFactory,
    QVBoxLayout,
    QWidget,
)

log = logging.getLogger("safeguard.ui")


def resource_path(name: str) -> Path:
    """A file of `resources/` (the package `safeguard_desktop.resources` when installed)."""
    try:
        root = importlib.resources.files("safeguard_desktop.resources")
        candidate = Path(str(root / name))
        if candidate.exists():
            return candidate
    except ModuleNotFoundError:
        pass  # running from a source checkout: the repo folder
    return Path(__file__).resolve().parents[2] / "resources" / name


WINDOW_ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)  # resources/icon-<N>.png


def app_icon() -> QIcon:
    """The window icon, from the PNGs rendered from icon.svg (packaging/linux/make_icons.py):
    reading the SVG itself would load Qt's SVG engine (1.7 MiB, a few ms) before the frame."""
    icon = QIcon()
    for size in WINDOW_ICON_SIZES:
        path = resource_path(f"icon-{size}.png")
        if path.is_file():
            icon.addFile(str(path), QSize(size, size))
    return icon if not icon.isNull() else QIcon(str(resource_path("icon.svg")))


@dataclass(frozen=True)
class Scheme:
    """Colours for one palette; badge colours carry white text in both schemes."""

    dark: bool
    quotes: tuple[str, ...]
    mask: str
    violates: str
    complies: str
    rule: str
    marked_line: str


LIGHT = Scheme(
    dark=False,
    quotes=("#fde68a", "#bbf7d0", "#bfdbfe", "#fbcfe8", "#ddd6fe", "#fed7aa"),
    mask="#9aa1a9",
    violates="#b42318",
    complies="#1a7f37",
    rule="#1a5fd0",
    marked_line="#fff4c2",
)
DARK = Scheme(
    dark=True,
    quotes=("#6b5b14", "#1e5a34", "#1f406f", "#6b2747", "#46347a", "#6d4421"),
    mask="#5a616b",
    violates="#ff7b72",
    complies="#56d364",
    rule="#79b0ff",
    marked_line="#4a4420",
)


def system_is_dark() -> bool:
    """The system's colour scheme (the platform palette when it says none).

    The first call costs 20-30 ms: the scheme comes as a `Qt.ColorScheme`, and PySide then
    builds the whole `Qt` namespace (~100 enums). The window's first frame uses
    `palette_is_dark` instead and `settle_theme` checks this once the frame is up.
    """
    scheme = QGuiApplication.styleHints().colorScheme().name
    if scheme == "Dark":
        return True
    if scheme == "Light":
        return False
    return palette_is_dark()


def palette_is_dark() -> bool:
    """Whether the platform's palette is a dark one (ask before `apply_theme` sets ours)."""
    window = QGuiApplication.palette().color(QPalette.ColorRole.Window)
    return window.lightness() < 128


_current: Scheme = LIGHT


def scheme() -> Scheme:
    """The scheme in use (set by `apply_theme`)."""
    return _current


def _palette(colours: dict[QPalette.ColorRole, str], disabled: str) -> QPalette:
    palette = QPalette()
    for role, value in colours.items():
        palette.setColor(role, QColor(value))
    group = QPalette.ColorGroup.Disabled
    for role in (
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
        QPalette.ColorRole.WindowText,
    ):
        palette.setColor(group, role, QColor(disabled))
    return palette


R = QPalette.ColorRole


def light_palette() -> QPalette:
    return _palette(
        {
            R.Window: "#f4f5f7",
            R.WindowText: "#1f2328",
            R.Base: "#ffffff",
            R.AlternateBase: "#f0f2f5",
            R.Text: "#1f2328",
            R.Button: "#f6f7f9",
            R.ButtonText: "#1f2328",
            R.BrightText: "#ffffff",
            R.Highlight: "#2f6feb",
            R.HighlightedText: "#ffffff",
            R.Link: "#1a5fd0",
            R.ToolTipBase: "#fffdf2",
            R.ToolTipText: "#1f2328",
            R.PlaceholderText: "#6e7781",
            R.Mid: "#c9d1d9",
            R.Midlight: "#e4e8ec",
            R.Dark: "#8c959f",
            R.Light: "#ffffff",
        },
        disabled="#8c959f",
    )


def dark_palette() -> QPalette:
    return _palette(
        {
            R.Window: "#1d2026",
            R.WindowText: "#e6e8eb",
            R.Base: "#15171c",
            R.AlternateBase: "#22262d",
            R.Text: "#e6e8eb",
            R.Button: "#2a2e36",
            R.ButtonText: "#e6e8eb",
            R.BrightText: "#ffffff",
            R.Highlight: "#3d7bf5",
            R.HighlightedText: "#ffffff",
            R.Link: "#79b0ff",
            R.ToolTipBase: "#2a2e36",
            R.ToolTipText: "#e6e8eb",
            R.PlaceholderText: "#8b949e",
            R.Mid: "#3b414b",
            R.Midlight: "#30353e",
            R.Dark: "#0f1114",
            R.Light: "#3b414b",
        },
        disabled="#6e7681",
    )


def style_sheet() -> str:
    path = resource_path("style.qss")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        log.warning("style sheet %s not readable: %s", path, exc)
        return ""


def apply_theme(app: QApplication, *, dark: bool | None = None, follow: bool = True) -> Scheme:
    """Fusion + our palette for the system's colour scheme; `follow` tracks later changes."""
    global _current
    is_dark = system_is_dark() if dark is None else dark
    _current = DARK if is_dark else LIGHT
    if app.style().name().lower() != "fusion":  # often Qt's default already: not made twice
        style = QStyleFactory.create("Fusion")
        if style is not None:
            app.setStyle(style)
    app.setPalette(dark_palette() if is_dark else light_palette())
    app.setStyleSheet(style_sheet())
    if follow and not app.property("safeguardThemeFollows"):
        app.setProperty("safeguardThemeFollows", True)
        QGuiApplication.styleHints().colorSchemeChanged.connect(
            lambda _scheme: apply_theme(app, follow=False)
        )
    return _current


def settle_theme(app: QApplication) -> Scheme:
    """After the first frame (themed by `palette_is_dark`): the system's colour scheme, the
    theme re-applied only where it differs from the platform palette's."""
    dark = system_is_dark()
    if dark != _current.dark:
        apply_theme(app, dark=dark, follow=False)
    return _current


def repolish(widget: object) -> None:
    """Re-apply the style sheet after a dynamic property used by a selector changed."""
    style = widget.style()  # type: ignore[attr-defined]
    style.unpolish(widget)
    style.polish(widget)


def titled_pane(title: str, widget: QWidget, parent: QWidget) -> QWidget:
    """A pane title above `widget`, with no margins: the look every text pane shares."""
    box = QWidget(parent)
    col = QVBoxLayout(box)
    col.setContentsMargins(0, 0, 0, 0)
    label = QLabel(title, box)
    label.setObjectName("paneTitle")
    col.addWidget(label)
    col.addWidget(widget, 1)
    return box
