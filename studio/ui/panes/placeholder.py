"""A pane whose feature has not been built yet says so plainly."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


class NotBuiltPane(QWidget):
    feature = ""

    def __init__(self, bridge: object, settings: object, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        label = QLabel(f"{self.feature} is not built yet.")
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setObjectName("notBuilt")
        layout = QVBoxLayout(self)
        layout.addWidget(label)
