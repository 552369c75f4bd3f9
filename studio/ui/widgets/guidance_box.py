"""The guidance-rule picker the Image and Travel panes put beside their CFG scale."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QWidget

from studio.core.guidance import GUIDANCE_HELP, GUIDANCE_METHODS
from studio.ui.widgets.combo import select_data


def guidance_box(selected: str = "cfg", parent: QWidget | None = None) -> QComboBox:
    """A combo box of the guidance rules (data: the rule's key), each with its tooltip."""
    box = QComboBox(parent)
    box.setObjectName("guidanceBox")
    for key, name in GUIDANCE_METHODS.items():
        box.addItem(name, key)
        box.setItemData(box.count() - 1, GUIDANCE_HELP[key], Qt.ItemDataRole.ToolTipRole)
    box.setToolTip(
        "How the CFG scale pushes toward the prompt. FDG and APG keep high scales from "
        "flooding the image with one colour; CFG reproduces other tools' images."
    )
    select_data(box, selected)
    return box
