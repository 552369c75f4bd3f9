"""Seed entry: random each time, a fixed number, or the seed of the last image."""

from __future__ import annotations

import random

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QToolButton, QWidget

from studio.core.errors import UserError

# Random seeds stay in A1111's 32-bit range; typed or restored ones may use the full 64 bits.
RANDOM_MAX = 2**32 - 1
MAX_SEED = 2**63 - 1
RANDOM, FIXED, REUSE = "random", "fixed", "reuse"


class SeedField(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.mode_box = QComboBox()
        self.mode_box.addItem("Random", RANDOM)
        self.mode_box.addItem("Fixed", FIXED)
        self.mode_box.addItem("Reuse last", REUSE)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("seed")
        self.edit.setToolTip("A whole number of 0 or more")
        self.dice = QToolButton()
        self.dice.setText("New")
        self.dice.setToolTip("New random seed (switches to Fixed)")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.mode_box)
        layout.addWidget(self.edit, 1)
        layout.addWidget(self.dice)
        self._last: int | None = None
        self.mode_box.currentIndexChanged.connect(self._mode_changed)
        self.edit.textEdited.connect(self._edited)
        self.dice.clicked.connect(self._roll)
        self._mode_changed()

    @property
    def mode(self) -> str:
        return str(self.mode_box.currentData())

    def set_mode(self, mode: str) -> None:
        index = self.mode_box.findData(mode)
        if index >= 0:
            self.mode_box.setCurrentIndex(index)

    def set_seed(self, seed: int) -> None:
        """Fix the seed (as when restoring an image's settings)."""
        self.set_mode(FIXED)
        self.edit.setText(str(int(seed)))

    def set_last(self, seed: int) -> None:
        """Remember the seed of the last finished image, for "Reuse last"."""
        self._last = int(seed)
        if self.mode == REUSE:
            self.edit.setText(str(self._last))

    @property
    def last(self) -> int | None:
        return self._last

    def next_seed(self) -> int:
        """The seed for the next job; raises UserError if the typed seed is not a number."""
        if self.mode == RANDOM:
            return random.randint(0, RANDOM_MAX)
        if self.mode == REUSE and self._last is not None:
            return self._last
        text = self.edit.text().strip()
        try:
            seed = int(text)
        except ValueError:
            raise UserError(f"The seed must be a whole number of 0 or more, not {text!r}.") from None
        if not 0 <= seed <= MAX_SEED:
            raise UserError(f"The seed must be a whole number from 0 to {MAX_SEED}, not {seed}.")
        return seed

    def _mode_changed(self) -> None:
        mode = self.mode
        self.edit.setEnabled(mode == FIXED or (mode == REUSE and self._last is None))
        if mode == RANDOM:
            self.edit.setPlaceholderText("random")
        if mode == REUSE and self._last is not None:
            self.edit.setText(str(self._last))
        self.changed.emit()

    def _edited(self) -> None:
        self.changed.emit()

    def _roll(self) -> None:
        self.set_seed(random.randint(0, RANDOM_MAX))
        self.changed.emit()
