"""The one place Qt is imported from; the rest of the app imports these names.

PySide6 must be imported before qasync (qasync picks the first Qt binding it
finds), so this module does both in that order.

The names are looked up when first imported from here (`__getattr__`), not all at once:
PySide6 builds each class on first access, and building them all costs a third of Qt's
start-up, before the window could show. qasync (and asyncio) likewise come with the first
`from safeguard_desktop.qt import qasync`, once the window is up.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("QT_API", "pyside6")

import PySide6  # noqa: F401  (before qasync, which picks the binding already imported)
import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets

if TYPE_CHECKING:  # at run time: `__getattr__` below
    import qasync
    from PySide6.QtCore import (
        QAbstractTableModel,
        QDate,
        QElapsedTimer,
        QEvent,
        QFileSystemWatcher,
        QMimeData,
        QModelIndex,
        QObject,
        QPersistentModelIndex,
        QPoint,
        QPointF,
        QRect,
        QSettings,
        QSize,
        Qt,
        QUrl,
        Signal,
        Slot,
    )
    from PySide6.QtGui import (
        QAction,
        QBrush,
        QCloseEvent,
        QColor,
        QCursor,
        QDragEnterEvent,
        QDropEvent,
        QFont,
        QFontDatabase,
        QGuiApplication,
        QIcon,
        QKeyEvent,
        QKeySequence,
        QMouseEvent,
        QPainter,
        QPalette,
        QPen,
        QPixmap,
        QResizeEvent,
        QShortcut,
        QShowEvent,
        QTextCharFormat,
        QTextCursor,
        QTextDocument,
        QTextFormat,
    )
    from PySide6.QtWidgets import (
        QAbstractItemView,
        QApplication,
        QCheckBox,
        QComboBox,
        QDateEdit,
        QDialog,
        QDialogButtonBox,
        QDoubleSpinBox,
        QFileDialog,
        QFormLayout,
        QFrame,
        QGraphicsBlurEffect,
        QGridLayout,
        QGroupBox,
        QHBoxLayout,
        QHeaderView,
        QLabel,
        QLineEdit,
        QListWidget,
        QListWidgetItem,
        QMainWindow,
        QMenu,
        QMessageBox,
        QPlainTextEdit,
        QProgressBar,
        QPushButton,
        QSizePolicy,
        QSpinBox,
        QSplitter,
        QStackedWidget,
        QStatusBar,
        QStyleFactory,
        QTableView,
        QTableWidget,
        QTableWidgetItem,
        QTabWidget,
        QTextBrowser,
        QTextEdit,
        QToolButton,
        QToolTip,
        QVBoxLayout,
        QWidget,
    )


class QTimer(QtCore.QTimer):
    """QTimer whose single shots always have a context object.

    `QTimer.singleShot(ms, callback)` without a context fires even after the widget the
    callback touches is gone ("Internal C++ object already deleted"), possibly in another
    test or view. Here the context is required: the timer is its child and dies with it.
    Pending single shots can be listed (`pending_single_shots`), which the test suite uses to
    fail a test that leaves one behind.
    """

    @staticmethod
    def singleShot(msec: int, context: object, functor: object = None) -> None:  # type: ignore[override]
        if functor is None or not isinstance(context, QtCore.QObject):
            raise TypeError(
                "QTimer.singleShot(ms, context, callback): pass the QObject the callback "
                "belongs to, so the timer dies with it"
            )
        timer = QtCore.QTimer(context)
        timer.setSingleShot(True)
        timer.timeout.connect(functor)
        timer.timeout.connect(timer.deleteLater)
        timer.start(int(msec))
        _prune_single_shots()
        _SINGLE_SHOTS.append(timer)


_SINGLE_SHOTS: list[QtCore.QTimer] = []


def _prune_single_shots() -> None:
    _SINGLE_SHOTS[:] = [t for t in _SINGLE_SHOTS if shiboken6.isValid(t) and t.isActive()]


def pending_single_shots() -> list[str]:
    """Single shots still waiting to fire, named by their context object's class."""
    _prune_single_shots()
    return [f"{type(t.parent()).__name__} in {t.remainingTime()} ms" for t in _SINGLE_SHOTS]


__all__ = [
    "QAbstractItemView",
    "QAbstractTableModel",
    "QAction",
    "QApplication",
    "QBrush",
    "QCheckBox",
    "QCloseEvent",
    "QColor",
    "QComboBox",
    "QCursor",
    "QDate",
    "QDateEdit",
    "QDialog",
    "QDialogButtonBox",
    "QDoubleSpinBox",
    "QDragEnterEvent",
    "QDropEvent",
    "QElapsedTimer",
    "QEvent",
    "QFileDialog",
    "QFileSystemWatcher",
    "QFont",
    "QFontDatabase",
    "QFormLayout",
    "QFrame",
    "QGraphicsBlurEffect",
    "QGridLayout",
    "QGroupBox",
    "QGuiApplication",
    "QHBoxLayout",
    "QHeaderView",
    "QIcon",
    "QKeyEvent",
    "QKeySequence",
    "QLabel",
    "QLineEdit",
    "QListWidget",
    "QListWidgetItem",
    "QMainWindow",
    "QMenu",
    "QMessageBox",
    "QMimeData",
    "QModelIndex",
    "QMouseEvent",
    "QObject",
    "QPainter",
    "QPalette",
    "QPen",
    "QPersistentModelIndex",
    "QPixmap",
    "QPlainTextEdit",
    "QPoint",
    "QPointF",
    "QProgressBar",
    "QPushButton",
    "QRect",
    "QResizeEvent",
    "QSettings",
    "QShortcut",
    "QShowEvent",
    "QSize",
    "QSizePolicy",
    "QSpinBox",
    "QSplitter",
    "QStackedWidget",
    "QStatusBar",
    "QStyleFactory",
    "QTabWidget",
    "QTableView",
    "QTableWidget",
    "QTableWidgetItem",
    "QTextBrowser",
    "QTextCharFormat",
    "QTextCursor",
    "QTextDocument",
    "QTextEdit",
    "QTextFormat",
    "QTimer",
    "QToolButton",
    "QToolTip",
    "QUrl",
    "QVBoxLayout",
    "QWidget",
    "Qt",
    "QtCore",
    "QtGui",
    "QtWidgets",
    "Signal",
    "Slot",
    "pending_single_shots",
    "qasync",
]


def __getattr__(name: str) -> Any:
    """A name of `__all__` not looked up yet: from Qt's modules (or qasync), then kept."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "qasync":
        import qasync

        value: Any = qasync
    else:
        module = next((m for m in (QtCore, QtGui, QtWidgets) if hasattr(m, name)), None)
        if module is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(module, name)
    globals()[name] = value
    return value
