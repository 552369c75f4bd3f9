"""A slider and a spin box bound to one value (integer or decimal)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QSlider, QSpinBox, QWidget


class SliderSpin(QWidget):
    valueChanged = Signal(float)

    def __init__(
        self,
        minimum: float,
        maximum: float,
        value: float,
        step: float = 1.0,
        decimals: int = 0,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._scale = 10**decimals
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(round(minimum * self._scale), round(maximum * self._scale))
        self.slider.setSingleStep(max(1, round(step * self._scale)))
        if decimals:
            self.spin: QSpinBox | QDoubleSpinBox = QDoubleSpinBox()
            self.spin.setDecimals(decimals)
        else:
            self.spin = QSpinBox()
        self.spin.setRange(minimum, maximum)  # type: ignore[arg-type]
        self.spin.setSingleStep(step)  # type: ignore[arg-type]
        self.spin.setKeyboardTracking(False)
        self.spin.setMinimumWidth(70)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.spin)
        self.slider.valueChanged.connect(self._from_slider)
        self.spin.valueChanged.connect(self._from_spin)
        self.setValue(value)

    def value(self) -> float:
        return float(self.spin.value())

    def int_value(self) -> int:
        return int(round(self.spin.value()))

    def setValue(self, value: float) -> None:
        self.spin.setValue(value if self._scale > 1 else int(round(value)))  # type: ignore[arg-type]

    def _from_slider(self, raw: int) -> None:
        value = raw / self._scale
        if abs(value - self.spin.value()) > 0.5 / self._scale:
            self.spin.setValue(value if self._scale > 1 else raw)  # type: ignore[arg-type]

    def _from_spin(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(round(value * self._scale))
        self.slider.blockSignals(False)
        self.valueChanged.emit(float(value))
