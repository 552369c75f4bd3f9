"""The Image pane's Enhance button: a local LLM rewrites the prompt, the user accepts or undoes.

Fooocus expands prompts with a GPT-2; here the rewrite comes from the bundled
prompt-writer (or the Prompt pane's model) with an instruction the user can
edit. The suggestion is offered, never applied silently, and an accepted one
goes into the editor as an ordinary edit, so Ctrl+Z in the prompt undoes it too.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QTextCursor
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.jobs import ChatRequest, Decoding
from studio.core.settings import Settings

BUNDLED_WRITER = "prompt-writer"
ENHANCE_DECODING = Decoding(method="sample", temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.15, max_new_tokens=96)


def clean_suggestion(text: str) -> str:
    """One prompt line: no wrapping quotes or a leading "Prompt:" label."""
    line = " ".join(text.split())
    for _ in range(2):
        if len(line) > 1 and line[0] == line[-1] and line[0] in "\"'":
            line = line[1:-1].strip()
        for label in ("Enhanced prompt:", "Prompt:", "prompt:"):
            if line.startswith(label):
                line = line[len(label) :].strip()
    return line


class SuggestionPopup(QFrame):
    """The rewritten prompt, editable, with Accept / Discard."""

    accepted = Signal(str)
    discarded = Signal()

    def __init__(self, original: str, suggestion: str, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setObjectName("enhancePopup")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.edit = QPlainTextEdit(suggestion)
        self.edit.setObjectName("enhanceSuggestion")
        self.edit.setMinimumSize(420, 90)
        was = QLabel(f"Was: {original}")
        was.setWordWrap(True)
        was.setObjectName("messageFigures")
        self.accept_button = QPushButton("Accept")
        self.accept_button.setDefault(True)
        self.discard_button = QPushButton("Discard")
        self.accept_button.clicked.connect(lambda: self._finish(True))
        self.discard_button.clicked.connect(lambda: self._finish(False))
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.discard_button)
        buttons.addWidget(self.accept_button)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Enhanced prompt"))
        layout.addWidget(self.edit)
        layout.addWidget(was)
        layout.addLayout(buttons)
        self._done = False

    def _finish(self, accept: bool) -> None:
        if self._done:
            return
        self._done = True
        if accept:
            self.accepted.emit(self.edit.toPlainText().strip())
        else:
            self.discarded.emit()
        self.close()

    def hideEvent(self, event: Any) -> None:
        # Clicking elsewhere closes a popup: that is a discard.
        if not self._done:
            self._done = True
            self.discarded.emit()
        super().hideEvent(event)


class EnhanceButton(QToolButton):
    suggested = Signal(str)  # a suggestion is on offer
    enhanced = Signal(str)  # the user accepted it; the prompt now holds it
    undone = Signal(str)  # the prompt is back to this text
    failed = Signal(str)

    def __init__(
        self, bridge: Any, settings: Settings, prompt_edit: QPlainTextEdit, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.prompt_edit = prompt_edit
        self.setObjectName("enhanceButton")
        self.setPopupMode(QToolButton.ToolButtonPopupMode.MenuButtonPopup)
        self.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self._job_id = ""
        self._original = ""
        self._applied = ""
        self._popup: SuggestionPopup | None = None
        self.clicked.connect(self._clicked)
        self._build_menu()
        self._idle()
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(self._on_failed)
        bridge.cancelled.connect(self._on_cancelled)
        prompt_edit.textChanged.connect(self._prompt_changed)

    # ---- menu ---------------------------------------------------------------------------

    def _build_menu(self) -> None:
        menu = QMenu(self)
        self.undo_action = QAction("Undo enhance", self)
        self.undo_action.setEnabled(False)
        self.undo_action.triggered.connect(self.undo)
        menu.addAction(self.undo_action)
        menu.addSeparator()
        edit = QAction("Edit instruction…", self)
        edit.triggered.connect(self._edit_instruction)
        menu.addAction(edit)
        self.model_group = QActionGroup(self)
        self.bundled_action = QAction("Use the bundled prompt-writer", self, checkable=True)
        self.pane_action = QAction("Use the Prompt pane's model", self, checkable=True)
        for action in (self.bundled_action, self.pane_action):
            self.model_group.addAction(action)
            menu.addAction(action)
        self.bundled_action.triggered.connect(lambda: self._set_model(""))
        self.pane_action.triggered.connect(lambda: self._set_model("pane"))
        menu.aboutToShow.connect(self._sync_menu)
        self.setMenu(menu)

    def _sync_menu(self) -> None:
        use_pane = self.settings.llm_enhance_model == "pane"
        self.pane_action.setChecked(use_pane)
        self.bundled_action.setChecked(not use_pane)
        model = self.settings.llm_model
        self.pane_action.setText(f"Use the Prompt pane's model ({model})" if model else "Use the Prompt pane's model")

    def _set_model(self, which: str) -> None:
        self.settings.llm_enhance_model = which

    def _edit_instruction(self) -> None:
        text, ok = QInputDialog.getMultiLineText(
            self, "Enhance instruction", "What the LLM is told to do with the prompt:",
            self.settings.llm_enhance_instruction,
        )
        if ok and text.strip():
            self.settings.llm_enhance_instruction = text.strip()

    # ---- state --------------------------------------------------------------------------

    def model(self) -> str:
        choice = self.settings.llm_enhance_model
        if choice == "pane":
            model = self.settings.llm_model
            # An endpoint is driven from the Prompt pane; enhancing stays local.
            return model if model and not model.startswith("endpoint:") else BUNDLED_WRITER
        return choice or BUNDLED_WRITER

    @property
    def busy(self) -> bool:
        return bool(self._job_id)

    def _idle(self) -> None:
        self.setText("Enhance")
        self.setToolTip("Let a language model rewrite this prompt; you accept or discard the result")

    def _prompt_changed(self) -> None:
        if self._applied and self.prompt_edit.toPlainText() != self._applied:
            # The user kept editing: undoing now would throw their edits away.
            self._applied = ""
            self.undo_action.setEnabled(False)
            if not self.busy:
                self._idle()

    def _clicked(self) -> None:
        if self.busy:
            self.cancel()
        elif self._applied:
            self.undo()
        else:
            self.enhance()

    # ---- actions ------------------------------------------------------------------------

    def enhance(self) -> str:
        """Ask for a rewrite of the current prompt; returns the job id ("" if nothing to do)."""
        text = self.prompt_edit.toPlainText().strip()
        if not text or self.busy:
            if not text:
                self.failed.emit("Write a prompt first; Enhance rewrites it.")
            return ""
        self._original = self.prompt_edit.toPlainText()
        job = ChatRequest(
            model=self.model(),
            system=self.settings.llm_enhance_instruction,
            messages=(("user", text),),
            decoding=ENHANCE_DECODING,
            trust_remote_code=self.model() in self.settings.llm_trusted_models,
        )
        self._job_id = self.bridge.submit(job)
        self.setText("Enhancing… (stop)")
        self.setToolTip("Click to stop")
        return self._job_id

    def cancel(self) -> None:
        if not self._job_id:
            return
        running = self.bridge.running
        if running is not None and running.job_id == self._job_id:
            self.bridge.cancel_running()
        else:
            self.bridge.remove_queued(self._job_id)

    def accept(self, text: str) -> None:
        """Put `text` in the prompt as one undoable edit."""
        self._original = self._original or self.prompt_edit.toPlainText()
        self._replace_text(text)
        self._applied = self.prompt_edit.toPlainText()
        self.undo_action.setEnabled(True)
        self.setText("Undo enhance")
        self.setToolTip("Put the prompt back as it was before enhancing")
        self.enhanced.emit(text)

    def undo(self) -> None:
        if not self._applied:
            return
        original = self._original
        self._applied = ""
        self._replace_text(original)
        self.undo_action.setEnabled(False)
        self._idle()
        self.undone.emit(original)

    def _replace_text(self, text: str) -> None:
        cursor = self.prompt_edit.textCursor()
        cursor.beginEditBlock()
        cursor.select(QTextCursor.SelectionType.Document)
        cursor.insertText(text)
        cursor.endEditBlock()

    # ---- results --------------------------------------------------------------------------

    def _on_finished(self, job_id: str, result: object) -> None:
        if job_id != self._job_id:
            return
        self._job_id = ""
        self._idle()
        if getattr(result, "stopped", False):
            return  # the user stopped it: nothing to offer
        suggestion = clean_suggestion(getattr(result, "text", ""))
        if not suggestion:
            self.failed.emit("The model returned no text; try again or edit the instruction.")
            return
        self.suggested.emit(suggestion)
        self._offer(suggestion)

    def _offer(self, suggestion: str) -> None:
        popup = SuggestionPopup(self._original.strip(), suggestion, self)
        popup.accepted.connect(self.accept)
        popup.discarded.connect(self._discarded)
        self._popup = popup
        anchor = self.prompt_edit.mapToGlobal(QPoint(0, self.prompt_edit.height()))
        popup.move(anchor)
        popup.resize(max(420, self.prompt_edit.width()), popup.sizeHint().height())
        popup.show()

    def _discarded(self) -> None:
        self._popup = None

    def _on_failed(self, job_id: str, message: str, detail: str) -> None:
        if job_id != self._job_id:
            return
        self._job_id = ""
        self._idle()
        self.setToolTip(f"Enhance failed: {message}")
        self.failed.emit(message)

    def _on_cancelled(self, job_id: str) -> None:
        if job_id == self._job_id:
            self._job_id = ""
            self._idle()
