"""One progress display for every long model operation: bar, percent, bytes, rate, ETA, Cancel.

The Server panel and the first-run assistant each show one, bound to the same `ModelOps`,
so a pull started in either place is visible (and cancellable) in both.
"""

from __future__ import annotations

from datetime import datetime

from safeguard_desktop.qt import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    Qt,
    QVBoxLayout,
    QWidget,
)
from safeguard_desktop.services.models_service import Progress
from safeguard_desktop.ui.model_ops import LONG_KINDS, ModelOps, Outcome

SCALE = 1000  # the bar counts tenths of a percent


def human_size(n: float) -> str:
    """Decimal units, as Ollama and disk vendors print sizes (13.8 GB)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def human_time(stamp: str) -> str:
    """An RFC 3339 time from Ollama as local "YYYY-MM-DD HH:MM" (the raw text if unreadable)."""
    text = stamp.strip()
    if not text:
        return ""
    head, dot, rest = text.partition(".")
    if dot:  # Go writes nanoseconds; fromisoformat on 3.11 wants at most 6 digits
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return stamp[:16].replace("T", " ")
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M")


def human_clock(stamp: str) -> str:
    """Like `human_time`, but only "HH:MM" for a time later today."""
    text = human_time(stamp)
    today = datetime.now().strftime("%Y-%m-%d ")
    return text.removeprefix(today) if text.startswith(today) else text


def describe(event: Progress) -> str:
    """ "6.3 GB of 14.0 GB · 120.0 MB/s · about 1 min 10 s left · resumed at 40%"."""
    parts = [event.status or event.phase]
    if event.total > 0:
        parts.append(f"{human_size(event.completed)} of {human_size(event.total)}")
    if event.rate:
        parts.append(f"{human_size(event.rate)}/s")
    if event.eta is not None and event.phase != "done":
        parts.append(f"about {human_duration(event.eta)} left")
    if event.resumed_from is not None and 0 < event.resumed_from < 100:
        parts.append(f"resuming at {event.resumed_from:.0f}%")
    return " · ".join(parts)


class ProgressRow(QWidget):
    """Title, bar (percent), details and a Cancel button; hidden until an operation starts."""

    def __init__(self, ops: ModelOps, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ops = ops
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(2)
        layout = QHBoxLayout()
        self.title = QLabel(self)
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        self.bar = QProgressBar(self)
        self.bar.setObjectName("operationProgress")
        self.bar.setRange(0, SCALE)
        self.bar.setMinimumWidth(160)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop this operation (a cancelled pull resumes next time)")
        self.cancel_button.clicked.connect(ops.cancel)
        layout.addWidget(self.title)
        layout.addWidget(self.bar, 1)
        layout.addWidget(self.cancel_button)
        outer.addLayout(layout)
        self.detail = QLabel(self)
        self.detail.setObjectName("hint")
        self.detail.setTextFormat(Qt.TextFormat.PlainText)
        self.detail.setWordWrap(True)
        outer.addWidget(self.detail)
        self._active = False
        ops.started.connect(self._started)
        ops.progress.connect(self._progress)
        ops.finished.connect(self._finished)
        self.hide()

    def _started(self, kind: str, label: str) -> None:
        """Short operations (warm-up, delete) only report their outcome, elsewhere."""
        self._active = kind in LONG_KINDS
        if not self._active:
            return
        self.title.setText(label)
        self.bar.setRange(0, 0)  # busy until the first byte counts arrive
        self.bar.setFormat("")
        self.detail.setText("Starting…")
        self.cancel_button.setEnabled(True)
        self.show()

    def _progress(self, event: Progress) -> None:
        if not self._active:
            return
        percent = event.percent
        if percent is None:
            if event.phase == "done":
                self._set_percent(100.0)
            else:
                self.bar.setRange(0, 0)
        else:
            self._set_percent(100.0 if event.phase == "done" else percent)
        self.detail.setText(describe(event))

    def _set_percent(self, percent: float) -> None:
        self.bar.setRange(0, SCALE)
        self.bar.setValue(round(percent * SCALE / 100))
        self.bar.setFormat(f"{percent:.0f}%")

    def _finished(self, outcome: Outcome) -> None:
        if not self._active:
            return
        self.cancel_button.setEnabled(False)
        if outcome.ok:
            self._set_percent(100.0)
        elif self.bar.maximum() == 0:
            self._set_percent(0.0)
        self.detail.setText(outcome.message)
