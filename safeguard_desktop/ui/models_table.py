"""Installed models as a table model, and loaded models with how much of each sits in VRAM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safeguard_desktop.qt import (
    QAbstractTableModel,
    QBrush,
    QColor,
    QLabel,
    QModelIndex,
    QPersistentModelIndex,
    QProgressBar,
    Qt,
    QVBoxLayout,
    QWidget,
)
from safeguard_desktop.services.models_service import LoadedModel, ModelInfo
from safeguard_desktop.services.review import is_safeguard_model
from safeguard_desktop.ui.progress_row import human_clock, human_size, human_time
from safeguard_desktop.ui.span_view import rich_tooltip

AnyIndex = QModelIndex | QPersistentModelIndex
NOT_SAFETY_COLOUR = "#b26a00"
NOT_SAFETY_TIP = (
    "Not gpt-oss-safeguard: this model was not trained to apply a policy, so its verdicts "
    "are hints only (each review made with it says so)."
)
COLUMNS = ("Name", "Size", "Modified", "Family", "Parameters", "Quantization")


class ModelsTableModel(QAbstractTableModel):
    """Rows of `/api/tags`, sorted by name; sizes human-readable, the exact bytes in tooltips."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.models: list[ModelInfo] = []

    def set_models(self, models: Sequence[ModelInfo]) -> None:
        self.beginResetModel()
        self.models = sorted(models, key=lambda m: m.name)
        self.endResetModel()

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def row_of(self, name: str) -> int:
        for row, model in enumerate(self.models):
            if model.name == name:
                return row
        return -1

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.models)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if (
            role == Qt.ItemDataRole.DisplayRole
            and orientation == Qt.Orientation.Horizontal
            and 0 <= section < len(COLUMNS)
        ):
            return COLUMNS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.models):
            return None
        model = self.models[index.row()]
        column = index.column()
        safety = is_safeguard_model(model.name)
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                model.name if safety else f"{model.name}  ⚠ not a safety model",
                human_size(model.size),
                human_time(model.modified_at),
                model.family,
                model.parameter_size,
                model.quantization,
            )[column]
        if role == Qt.ItemDataRole.ForegroundRole and column == 0 and not safety:
            return QBrush(QColor(NOT_SAFETY_COLOUR))
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == 0 and not safety:
                return NOT_SAFETY_TIP
            if column == 1:
                return f"{model.size:,} bytes"
            if column == 0:  # server text: never let Qt read it as rich text
                return rich_tooltip(f"{model.name}\n{model.digest}")
        if role == Qt.ItemDataRole.TextAlignmentRole and column == 1:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


def vram_text(model: LoadedModel) -> str:
    if model.size <= 0:
        return "size unknown"
    if model.size_vram <= 0:
        return f"{human_size(model.size)}, all on the CPU (slow)"
    share = 100 * model.size_vram / model.size
    return f"{human_size(model.size_vram)} of {human_size(model.size)} in GPU memory ({share:.0f}%)"


class LoadedModelsView(QWidget):
    """One bar per loaded model: its share in VRAM (size_vram / size), plus the GPU total."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self.empty = QLabel("No model is loaded. Warm one up to keep it ready for reviews.", self)
        self.empty.setObjectName("hint")
        self.empty.setWordWrap(True)
        self.gpu = QLabel(self)
        self.gpu.setTextFormat(Qt.TextFormat.PlainText)  # may quote nvidia-smi's output
        self.gpu.setObjectName("hint")
        self.gpu.setWordWrap(True)
        self.gpu.hide()
        self._layout.addWidget(self.empty)
        self._layout.addWidget(self.gpu)
        self.bars: dict[str, QProgressBar] = {}
        self._rows: list[QWidget] = []
        self.loaded: tuple[LoadedModel, ...] = ()

    def set_loaded(self, models: Sequence[LoadedModel]) -> None:
        self.loaded = tuple(models)
        for row in self._rows:
            row.deleteLater()
        self._rows.clear()
        self.bars.clear()
        for model in self.loaded:
            row = QWidget(self)
            box = QVBoxLayout(row)
            box.setContentsMargins(0, 2, 0, 2)
            until = human_clock(model.expires_at)
            context = f" · context {model.context_length:,}" if model.context_length else ""
            name = QLabel(
                f"{model.name}{context}" + (f" · unloads at {until}" if until else ""), row
            )
            name.setTextFormat(Qt.TextFormat.PlainText)
            bar = QProgressBar(row)
            bar.setRange(0, 1000)
            share = model.size_vram / model.size if model.size > 0 else 0.0
            bar.setValue(round(1000 * min(1.0, share)))
            bar.setFormat(vram_text(model))
            bar.setToolTip("Part of the model held in GPU memory; the rest runs on the CPU.")
            box.addWidget(name)
            box.addWidget(bar)
            self._layout.insertWidget(self._layout.count() - 1, row)
            self._rows.append(row)
            self.bars[model.name] = bar
        self.empty.setVisible(not self.loaded)

    def set_gpu(self, text: str) -> None:
        """ "GPU memory: 24.0 GB total, 9.5 GB free" when known (from the fit check)."""
        self.gpu.setText(text)
        self.gpu.setVisible(bool(text))
