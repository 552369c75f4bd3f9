"""The Image pane's Enhance button: asks the Prompt pane's LLM to rewrite a prompt."""

from __future__ import annotations

from PySide6.QtWidgets import QPlainTextEdit, QPushButton, QWidget


class EnhanceButton(QPushButton):
    def __init__(
        self, bridge: object, settings: object, prompt_edit: QPlainTextEdit, parent: QWidget | None = None
    ) -> None:
        super().__init__("Enhance", parent)
        self.setEnabled(False)
        self.setToolTip("Prompt enhancement needs the Prompt pane, which is not built yet.")
