"""Small helpers for the combo boxes whose items carry a key as their data."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QComboBox


def select_data(box: QComboBox, value: Any) -> bool:
    """Select the item whose data is ``value``; False (selection kept) when there is none."""
    index = box.findData(value)
    if index >= 0:
        box.setCurrentIndex(index)
    return index >= 0
