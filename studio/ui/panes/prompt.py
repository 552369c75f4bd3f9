"""The Prompt pane: chat with a local causal LM or an OpenAI-compatible endpoint.

Local models run as `ChatRequest` jobs on the inference thread and stream back
as the bridge's `token` signals; an endpoint streams on the qasync loop. Either
way the reply grows in place, Stop keeps what was written, and every exchange
is saved to the conversation store as it completes.
"""

from __future__ import annotations

import asyncio
import copy
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.conversations import (
    Conversation,
    ConversationStore,
    Message,
    PresetStore,
    title_from,
)
from studio.core.engine import CallJob, JobContext
from studio.core.errors import UserError
from studio.core.jobs import ChatRequest, Decoding
from studio.core.settings import Settings
from studio.ui.bridge import Bridge
from studio.ui.widgets.slider_spin import SliderSpin

ENDPOINT = "endpoint:"  # the model picker's value for the OpenAI-compatible server
BROWSE = "browse:"
BUNDLED_DEFAULT = "prompt-writer"
METHODS = (("Greedy", "greedy"), ("Sampling", "sample"), ("Beam search", "beam"))
MAX_SEED = 2**31 - 1

_BUBBLE_STYLE = """
QFrame#userMessage { background: rgba(74, 132, 214, 40); border-radius: 6px; }
QFrame#assistantMessage { background: rgba(255, 255, 255, 14); border-radius: 6px; }
QFrame#noticeMessage { background: rgba(229, 160, 79, 40); border-radius: 6px; }
QLabel#messageRole { font-weight: bold; }
QLabel#messageFigures { color: palette(mid); }
"""


# ---- model list (on the inference thread's interactive lane) -------------------------


@dataclass(frozen=True, kw_only=True)
class ListChatModels(CallJob):
    lane: ClassVar[str] = "prompt-pane:models"

    @property
    def title(self) -> str:
        return "Listing language models"


def _discover(settings: Settings) -> Any:
    def fn(ctx: JobContext) -> list:
        from studio.core.registry import discover

        return discover(settings, kinds=["causal-lm"])

    return fn


def parse_stop(text: str) -> tuple[str, ...]:
    r"""Comma-separated stop strings; `\n` and `\,` may be typed as escapes."""
    parts, current, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            current += {"n": "\n", "t": "\t", ",": ",", "\\": "\\"}.get(nxt, "\\" + nxt)
            i += 2
            continue
        if ch == ",":
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    parts.append(current)
    return tuple(p.strip(" ") for p in parts if p.strip(" "))


def format_stop(stop: tuple[str, ...]) -> str:
    return ", ".join(s.replace("\\", "\\\\").replace(",", "\\,").replace("\n", "\\n").replace("\t", "\\t") for s in stop)


def figures_text(meta: dict[str, Any]) -> str:
    if not meta:
        return ""
    parts = []
    if meta.get("new_tokens"):
        parts.append(f"{meta['new_tokens']} tokens")
    if meta.get("tokens_per_s"):
        parts.append(f"{meta['tokens_per_s']:.1f} tok/s")
    if meta.get("ttft_s") is not None and "ttft_s" in meta:
        parts.append(f"first token {meta['ttft_s'] * 1000:.0f} ms")
    if meta.get("model"):
        parts.append(str(meta["model"]))
    if meta.get("stopped"):
        parts.append("stopped")
    if meta.get("error"):
        parts.append("incomplete")
    return " · ".join(parts)


# ---- one message ----------------------------------------------------------------------


class MessageView(QFrame):
    sendToImage = Signal(str)

    def __init__(self, message: Message, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = message
        role = message.role
        self.setObjectName({"user": "userMessage", "assistant": "assistantMessage"}.get(role, "noticeMessage"))
        self.role_label = QLabel({"user": "You", "assistant": "Assistant"}.get(role, "Notice"))
        self.role_label.setObjectName("messageRole")
        self.body = QLabel(message.content)
        self.body.setObjectName("messageBody")
        self.body.setWordWrap(True)
        self.body.setTextFormat(Qt.TextFormat.PlainText)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.figures = QLabel(figures_text(message.meta))
        self.figures.setObjectName("messageFigures")
        self.figures.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        head = QHBoxLayout()
        head.addWidget(self.role_label)
        head.addStretch(1)
        self.send_button: QToolButton | None = None
        if role in ("user", "assistant"):
            self.copy_button = QToolButton()
            self.copy_button.setText("Copy")
            self.copy_button.setAutoRaise(True)
            self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text()))
            self.send_button = QToolButton()
            self.send_button.setObjectName("sendToImage")
            self.send_button.setText("Send to Image pane")
            self.send_button.setToolTip("Use this text as the Image pane's prompt")
            self.send_button.setAutoRaise(True)
            self.send_button.clicked.connect(lambda: self.sendToImage.emit(self.text().strip()))
            head.addWidget(self.copy_button)
            head.addWidget(self.send_button)
        layout.addLayout(head)
        layout.addWidget(self.body)
        layout.addWidget(self.figures)
        self.figures.setVisible(bool(self.figures.text()))

    def text(self) -> str:
        return self.body.text()

    def set_text(self, text: str) -> None:
        self.body.setText(text)

    def set_meta(self, meta: dict[str, Any]) -> None:
        self.message.meta = meta
        self.figures.setText(figures_text(meta))
        self.figures.setVisible(bool(self.figures.text()))


class ChatView(QScrollArea):
    """Messages top to bottom; follows the newest text unless the user scrolled up."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setObjectName("chatView")
        # Messages wrap to the view's width; a sideways scroll bar would hide their buttons.
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._inner = QWidget()
        self._layout = QVBoxLayout(self._inner)
        self._layout.setSpacing(8)
        self._layout.addStretch(1)
        self.setWidget(self._inner)
        self.views: list[MessageView] = []
        self._follow = True
        self.verticalScrollBar().rangeChanged.connect(self._range_changed)
        self.verticalScrollBar().valueChanged.connect(self._value_changed)

    def add(self, message: Message) -> MessageView:
        view = MessageView(message)
        self._layout.insertWidget(self._layout.count() - 1, view)
        self.views.append(view)
        self._follow = True
        return view

    def remove(self, view: MessageView) -> None:
        if view in self.views:
            self.views.remove(view)
        view.setParent(None)
        view.deleteLater()

    def clear(self) -> None:
        for view in list(self.views):
            self.remove(view)

    def _value_changed(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 4

    def _range_changed(self, _min: int, maximum: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(maximum)


# ---- the pane ---------------------------------------------------------------------------


class PromptPane(QWidget):
    sendPrompt = Signal(str)  # the main window hands it to the Image pane
    replyStarted = Signal()
    replyToken = Signal(str)  # each piece of the reply as it arrives (local or endpoint)
    replyFinished = Signal(object)  # ChatResult
    replyFailed = Signal(str)
    modelsLoaded = Signal(list)
    _saveFailed = Signal(str)

    def __init__(self, bridge: Bridge, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.store = ConversationStore()
        self.presets = PresetStore()
        self.conversation: Conversation | None = None
        self.models: list = []
        self._models_job = ""
        self._job_id = ""
        self._endpoint_task: asyncio.Future | None = None
        self._stop_event: asyncio.Event | None = None
        self._reply_view: MessageView | None = None
        self._reply_text = ""
        self._pending = ""
        self._sent_at = 0.0
        self._first_token_at: float | None = None
        self._loading_preset = False
        self._unsaved = False
        # Conversation files are written by one worker, in order, off the UI
        # thread: an fsync must not stall the window while tokens stream.
        self._writer: ThreadPoolExecutor | None = None
        self._saves: list[Future] = []
        self._saveFailed.connect(lambda message: self._show_error(f"Could not save the conversation: {message}"))
        self._build()
        self._restore(settings)

        bridge.token.connect(self._on_token)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(self._on_failed)
        bridge.cancelled.connect(self._on_cancelled)
        self.refresh_models()
        self.refresh_conversations()

    # ---- layout -----------------------------------------------------------------------

    def _build(self) -> None:
        self.setStyleSheet(_BUBBLE_STYLE)

        # Left: saved conversations.
        self.conversation_list = QListWidget()
        self.conversation_list.setObjectName("conversationList")
        self.conversation_list.itemActivated.connect(self._open_item)
        self.conversation_list.itemClicked.connect(self._open_item)
        self.new_button = QPushButton("New")
        self.new_button.setToolTip("Start a new conversation")
        self.new_button.clicked.connect(self.new_conversation)
        self.rename_button = QPushButton("Rename")
        self.rename_button.clicked.connect(self._rename_current)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self._delete_current)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the conversation as Markdown")
        self.export_button.clicked.connect(self._export_current)
        list_buttons = QHBoxLayout()
        for b in (self.new_button, self.rename_button, self.delete_button, self.export_button):
            list_buttons.addWidget(b)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(QLabel("Conversations"))
        left_layout.addWidget(self.conversation_list, 1)
        left_layout.addLayout(list_buttons)

        # Middle: the chat.
        self.chat = ChatView()
        self.chat.setMinimumWidth(360)
        self.input_edit = QPlainTextEdit()
        self.input_edit.setObjectName("chatInput")
        self.input_edit.setPlaceholderText("Message (Ctrl+Enter to send)")
        self.input_edit.setTabChangesFocus(True)
        self.input_edit.setMaximumHeight(110)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("generateButton")
        self.send_button.setToolTip("Send the message (Ctrl+Enter)")
        self.send_button.clicked.connect(lambda: self.send())
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stopButton")
        self.stop_button.setToolTip("Stop the reply; the text so far is kept")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.status_label = QLabel("")
        self.status_label.setObjectName("chatStatus")
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        input_row = QHBoxLayout()
        input_row.addWidget(self.input_edit, 1)
        input_row.addLayout(buttons)
        self.error_label = QLabel("")
        self.error_label.setObjectName("errorBanner")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        middle = QWidget()
        middle_layout = QVBoxLayout(middle)
        middle_layout.setContentsMargins(0, 0, 0, 0)
        middle_layout.addWidget(self.chat, 1)
        middle_layout.addWidget(self.error_label)
        middle_layout.addWidget(self.status_label)
        middle_layout.addLayout(input_row)

        # Right: model, system prompt, decoding.
        self.model_box = QComboBox()
        self.model_box.setObjectName("llmModelBox")
        self.model_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_box.setMinimumContentsLength(16)
        self.model_box.addItem("Looking for models…", "")
        self.model_box.activated.connect(self._model_activated)
        self.model_box.currentIndexChanged.connect(self._model_changed)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Look for models again (models/, your folders, the HF cache)")
        self.refresh_button.clicked.connect(self.refresh_models)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_box, 1)
        model_row.addWidget(self.refresh_button)
        self.trust_box = QCheckBox("Trust remote code")
        self.trust_box.setToolTip(
            "Run Python code shipped in this model's folder. Only for models whose author you trust."
        )
        self.trust_box.clicked.connect(self._trust_clicked)

        self.endpoint_group = QGroupBox("OpenAI-compatible endpoint")
        self.url_edit = QLineEdit()
        self.url_edit.setObjectName("endpointUrl")
        self.url_edit.setPlaceholderText("http://127.0.0.1:11434/v1")
        self.endpoint_model_edit = QComboBox()
        self.endpoint_model_edit.setEditable(True)
        self.endpoint_model_edit.setObjectName("endpointModel")
        self.endpoint_model_edit.lineEdit().setPlaceholderText("model name on the server")
        self.fetch_button = QToolButton()
        self.fetch_button.setText("⟳")
        self.fetch_button.setToolTip("Ask the server for its models")
        self.fetch_button.clicked.connect(self.fetch_endpoint_models)
        endpoint_model_row = QHBoxLayout()
        endpoint_model_row.addWidget(self.endpoint_model_edit, 1)
        endpoint_model_row.addWidget(self.fetch_button)
        self.key_edit = QLineEdit()
        self.key_edit.setObjectName("endpointKey")
        self.key_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.key_edit.setPlaceholderText("API key (optional)")
        self.key_edit.setToolTip("Kept in a file only you can read, never in the settings file")
        self.key_edit.editingFinished.connect(self._save_key)
        self.extras_box = QCheckBox("Also send top-k and repetition penalty")
        self.extras_box.setToolTip("Ollama, llama.cpp and vLLM read them; OpenAI and strict servers refuse them")
        endpoint_form = QFormLayout(self.endpoint_group)
        endpoint_form.addRow("URL", self.url_edit)
        endpoint_form.addRow("Model", endpoint_model_row)
        endpoint_form.addRow("Key", self.key_edit)
        endpoint_form.addRow(self.extras_box)
        self.url_edit.editingFinished.connect(self._load_key)
        self.extras_box.toggled.connect(self._method_changed)

        self.system_edit = QPlainTextEdit()
        self.system_edit.setObjectName("systemPrompt")
        self.system_edit.setPlaceholderText("System prompt: who the assistant is, how it answers")
        self.system_edit.setMaximumHeight(90)
        self.system_edit.setTabChangesFocus(True)

        self.preset_box = QComboBox()
        self.preset_box.setObjectName("presetBox")
        self.preset_box.currentIndexChanged.connect(self._preset_chosen)
        self.save_preset_button = QToolButton()
        self.save_preset_button.setText("Save…")
        self.save_preset_button.setToolTip("Save these settings as a preset")
        self.save_preset_button.clicked.connect(self._save_preset)
        preset_row = QHBoxLayout()
        preset_row.addWidget(self.preset_box, 1)
        preset_row.addWidget(self.save_preset_button)
        self.method_box = QComboBox()
        self.method_box.setObjectName("methodBox")
        for label, key in METHODS:
            self.method_box.addItem(label, key)
        self.temperature = SliderSpin(0.0, 2.0, 0.7, step=0.05, decimals=2)
        self.temperature.setToolTip("Higher: more surprising words; 0 is greedy")
        self.top_k = QSpinBox()
        self.top_k.setRange(0, 1000)
        self.top_k.setSpecialValueText("off")
        self.top_k.setToolTip("Sample only from the k likeliest tokens")
        self.top_p = SliderSpin(0.05, 1.0, 0.95, step=0.01, decimals=2)
        self.top_p.setToolTip("Nucleus: sample from the smallest set of tokens holding this probability")
        self.beams = QSpinBox()
        self.beams.setRange(2, 16)
        self.beams.setToolTip("Beams kept; the best-scoring one is shown when it ends (no streaming)")
        self.repetition = QDoubleSpinBox()
        self.repetition.setRange(0.5, 2.0)
        self.repetition.setSingleStep(0.05)
        self.repetition.setToolTip("Above 1 discourages repeating tokens; 1 is off")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 32768)
        self.max_tokens.setToolTip("The longest reply, in tokens")
        self.seed = QSpinBox()
        self.seed.setRange(-1, MAX_SEED)
        self.seed.setSpecialValueText("random")
        self.seed.setToolTip("The same seed and settings give the same sampled reply")
        self.stop_edit = QLineEdit()
        self.stop_edit.setObjectName("stopStrings")
        self.stop_edit.setPlaceholderText(r"e.g. \n, ###")
        self.stop_edit.setToolTip(r"Comma-separated; the reply ends before any of them. \n is a newline.")
        decoding_form = QFormLayout()
        decoding_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        decoding_form.addRow("Preset", preset_row)
        decoding_form.addRow("Method", self.method_box)
        decoding_form.addRow("Temperature", self.temperature)
        decoding_form.addRow("Top-k", self.top_k)
        decoding_form.addRow("Top-p", self.top_p)
        decoding_form.addRow("Beams", self.beams)
        decoding_form.addRow("Repetition penalty", self.repetition)
        decoding_form.addRow("Max new tokens", self.max_tokens)
        decoding_form.addRow("Seed", self.seed)
        decoding_form.addRow("Stop strings", self.stop_edit)
        for widget in (self.method_box,):
            widget.currentIndexChanged.connect(self._method_changed)
        for spin in (self.top_k, self.beams, self.max_tokens, self.seed):
            spin.valueChanged.connect(self._decoding_edited)
        self.repetition.valueChanged.connect(self._decoding_edited)
        self.temperature.valueChanged.connect(self._decoding_edited)
        self.top_p.valueChanged.connect(self._decoding_edited)
        self.stop_edit.textEdited.connect(self._decoding_edited)

        controls = QWidget()
        right = QVBoxLayout(controls)
        right.addWidget(QLabel("Model"))
        right.addLayout(model_row)
        right.addWidget(self.trust_box)
        right.addWidget(self.endpoint_group)
        right.addWidget(QLabel("System prompt"))
        right.addWidget(self.system_edit)
        decoding_group = QGroupBox("Decoding")
        decoding_group.setLayout(decoding_form)
        right.addWidget(decoding_group)
        right.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setMinimumWidth(300)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(middle)
        splitter.addWidget(scroll)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 620, 340])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(self.send)

        # The reply is redrawn at most every 40 ms (25 times a second), however
        # many tokens arrived: each redraw re-lays out the message, and on a busy
        # CPU that work is taken from the model. The first token shows at once.
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(40)
        self._flush_timer.timeout.connect(self._flush)

    # ---- settings ------------------------------------------------------------------------

    def _restore(self, s: Settings) -> None:
        self.system_edit.setPlainText(s.llm_system_prompt)
        self.url_edit.setText(s.llm_endpoint_url)
        self.endpoint_model_edit.setEditText(s.llm_endpoint_model)
        self.extras_box.setChecked(s.llm_endpoint_extras)
        self._load_key()
        self._fill_presets(s.llm_preset)
        self._pending_model = s.llm_model or BUNDLED_DEFAULT

    def store_settings(self, s: Settings) -> None:
        s.llm_system_prompt = self.system_edit.toPlainText()
        s.llm_endpoint_url = self.url_edit.text().strip()
        s.llm_endpoint_model = self.endpoint_model_edit.currentText().strip()
        s.llm_endpoint_extras = self.extras_box.isChecked()
        if self.preset_box.currentData():
            s.llm_preset = str(self.preset_box.currentData())
        model = self.current_model()
        if model and model != BROWSE:
            s.llm_model = model

    def settings_changed(self) -> None:
        self.refresh_models()

    def shutdown(self) -> None:
        self.wait_for_saves()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._endpoint_task is not None and not self._endpoint_task.done():
            self._endpoint_task.cancel()

    # ---- models ----------------------------------------------------------------------------

    def refresh_models(self) -> None:
        snapshot = Settings.from_dict(self.settings.to_dict())
        job = ListChatModels(fn=_discover(snapshot))
        self._models_job = job.job_id
        self.bridge.interactive(job)

    def current_model(self) -> str:
        return str(self.model_box.currentData() or "")

    def is_endpoint(self) -> bool:
        return self.current_model() == ENDPOINT

    def _set_models(self, entries: list) -> None:
        wanted = self.current_model() or self._pending_model
        self.models = list(entries)
        self.model_box.blockSignals(True)
        self.model_box.clear()
        for entry in entries:
            value = entry.name if entry.source == "bundled" else str(entry.path)
            self.model_box.addItem(entry.label, value)
            self.model_box.setItemData(self.model_box.count() - 1, str(entry.path), Qt.ItemDataRole.ToolTipRole)
        if wanted and wanted not in (ENDPOINT, BROWSE) and self.model_box.findData(wanted) < 0:
            # A folder picked earlier that discovery does not cover: keep offering it.
            self.model_box.addItem(wanted, wanted)
        self.model_box.addItem("OpenAI-compatible endpoint", ENDPOINT)
        self.model_box.addItem("Open a model folder…", BROWSE)
        self.model_box.blockSignals(False)
        index = self.model_box.findData(wanted)
        self.model_box.setCurrentIndex(index if index >= 0 else 0)
        self._model_changed()
        self.modelsLoaded.emit(self.models)

    def select_model(self, value: str) -> None:
        """Pick a model by name, folder or ENDPOINT (adding a folder that is not listed)."""
        index = self.model_box.findData(value)
        if index < 0:
            index = max(0, self.model_box.count() - 2)
            self.model_box.insertItem(index, value, value)
        self.model_box.setCurrentIndex(index)
        self._pending_model = value

    def _model_activated(self, index: int) -> None:
        if self.model_box.itemData(index) != BROWSE:
            return
        folder = QFileDialog.getExistingDirectory(self, "Open a causal LM folder")
        if folder:
            self.select_model(folder)
        else:
            self.select_model(self._pending_model if self._pending_model != BROWSE else BUNDLED_DEFAULT)

    def _model_changed(self, *_: object) -> None:
        model = self.current_model()
        if model and model != BROWSE:
            self._pending_model = model
            # Kept current, so the Image pane's Enhance can follow this pane's model.
            self.settings.llm_model = model
        endpoint = model == ENDPOINT
        self.endpoint_group.setVisible(endpoint)
        self.trust_box.setVisible(not endpoint)
        self.trust_box.setChecked(model in self.settings.llm_trusted_models)
        self._method_changed()

    def _trust_clicked(self, checked: bool) -> None:
        model = self.current_model()
        trusted = list(self.settings.llm_trusted_models)
        if checked:
            answer = QMessageBox.warning(
                self,
                "Trust remote code?",
                f"{model} will run Python code from its folder with your user's rights. "
                "Only do this for models whose author you trust.",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel,
            )
            if answer != QMessageBox.StandardButton.Yes:
                self.trust_box.setChecked(False)
                return
            if model not in trusted:
                trusted.append(model)
        else:
            trusted = [m for m in trusted if m != model]
        self.settings.llm_trusted_models = trusted

    # ---- endpoint settings -------------------------------------------------------------------

    def endpoint(self) -> Any:
        from studio.core.endpoints import Endpoint

        return Endpoint(
            self.url_edit.text().strip(),
            self.endpoint_model_edit.currentText().strip(),
            self.key_edit.text().strip(),
            send_extras=self.extras_box.isChecked(),
        )

    def _load_key(self) -> None:
        from studio.core.endpoints import load_api_key

        url = self.url_edit.text().strip()
        self.key_edit.setText(load_api_key(url) if url else "")

    def _save_key(self) -> None:
        from studio.core.endpoints import load_api_key, save_api_key

        url = self.url_edit.text().strip()
        key = self.key_edit.text().strip()
        if url and key != load_api_key(url):
            try:
                save_api_key(url, key)
            except OSError as exc:
                self._show_error(f"Could not store the API key: {exc}")

    def fetch_endpoint_models(self) -> None:
        from studio.core.endpoints import alist_models

        async def fetch() -> None:
            try:
                names = await alist_models(self.endpoint())
            except UserError as exc:
                self._show_error(exc.message)
                return
            current = self.endpoint_model_edit.currentText()
            self.endpoint_model_edit.clear()
            self.endpoint_model_edit.addItems(names)
            self.endpoint_model_edit.setEditText(current or (names[0] if names else ""))
            self.status_label.setText(f"{len(names)} models on the server")

        _schedule(fetch())

    # ---- presets and decoding ---------------------------------------------------------------

    def _fill_presets(self, wanted: str) -> None:
        self.preset_box.blockSignals(True)
        self.preset_box.clear()
        for name in self.presets.names():
            self.preset_box.addItem(name, name)
        self.preset_box.addItem("Custom", "")
        self.preset_box.blockSignals(False)
        index = self.preset_box.findData(wanted)
        self.preset_box.setCurrentIndex(index if index >= 0 else self.preset_box.findData("Balanced"))
        self._preset_chosen()

    def _preset_chosen(self, *_: object) -> None:
        name = self.preset_box.currentData()
        if not name:
            return
        try:
            self.set_decoding(self.presets.get(str(name)))
        except UserError as exc:
            self._show_error(exc.message)

    def set_decoding(self, d: Decoding) -> None:
        self._loading_preset = True
        try:
            self.method_box.setCurrentIndex(max(0, self.method_box.findData(d.method)))
            self.temperature.setValue(d.temperature)
            self.top_k.setValue(d.top_k)
            self.top_p.setValue(d.top_p)
            self.beams.setValue(max(2, d.num_beams))
            self.repetition.setValue(d.repetition_penalty)
            self.max_tokens.setValue(d.max_new_tokens)
            self.seed.setValue(d.seed)
            self.stop_edit.setText(format_stop(d.stop))
        finally:
            self._loading_preset = False
        self._method_changed()

    def decoding(self) -> Decoding:
        return Decoding(
            method=str(self.method_box.currentData()),
            temperature=self.temperature.value(),
            top_k=self.top_k.value(),
            top_p=self.top_p.value(),
            num_beams=self.beams.value(),
            repetition_penalty=round(self.repetition.value(), 3),
            max_new_tokens=self.max_tokens.value(),
            seed=self.seed.value(),
            stop=parse_stop(self.stop_edit.text()),
        )

    def _method_changed(self, *_: object) -> None:
        method = self.method_box.currentData()
        sampling = method == "sample"
        endpoint = self.is_endpoint()
        self.temperature.setEnabled(sampling)
        self.top_k.setEnabled(sampling and (not endpoint or self.extras_box.isChecked()))
        self.top_p.setEnabled(sampling)
        self.seed.setEnabled(sampling)
        self.beams.setEnabled(method == "beam" and not endpoint)
        self._decoding_edited()

    def _decoding_edited(self, *_: object) -> None:
        if self._loading_preset:
            return
        name = self.preset_box.currentData()
        if name:
            try:
                matches = self.presets.get(str(name)) == self.decoding()
            except UserError:
                matches = False
            if not matches:
                self.preset_box.blockSignals(True)
                self.preset_box.setCurrentIndex(self.preset_box.findData(""))
                self.preset_box.blockSignals(False)

    def _save_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Preset name:")
        if not ok or not name.strip():
            return
        try:
            self.presets.save(name, self.decoding())
        except (UserError, OSError) as exc:
            self._show_error(getattr(exc, "message", str(exc)))
            return
        self._fill_presets(name.strip())

    # ---- conversations ---------------------------------------------------------------------

    def refresh_conversations(self) -> None:
        self.wait_for_saves()
        current = self.conversation.id if self.conversation else None
        self.conversation_list.blockSignals(True)
        self.conversation_list.clear()
        for conv in self.store.list():
            when = time.strftime("%b %d %H:%M", time.localtime(conv.updated))
            item = QListWidgetItem(f"{conv.title}\n{when}")
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
            item.setToolTip(conv.title)
            self.conversation_list.addItem(item)
            if conv.id == current:
                self.conversation_list.setCurrentItem(item)
        self.conversation_list.blockSignals(False)

    def new_conversation(self) -> None:
        if self.busy:
            return
        self.conversation = None
        self.chat.clear()
        self.conversation_list.clearSelection()
        self._hide_error()
        self.status_label.setText("")
        self.input_edit.setFocus()

    def open_conversation(self, conversation_id: str) -> None:
        if self.busy:
            self.status_label.setText("Stop the reply before switching conversations.")
            return
        self.wait_for_saves()
        try:
            conv = self.store.load(conversation_id)
        except UserError as exc:
            self._show_error(exc.message)
            self.refresh_conversations()
            return
        self.conversation = conv
        self.chat.clear()
        for message in conv.messages:
            self._add_view(message)
        for row in range(self.conversation_list.count()):
            item = self.conversation_list.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == conv.id:
                self.conversation_list.blockSignals(True)
                self.conversation_list.setCurrentItem(item)
                self.conversation_list.blockSignals(False)
                break
        if conv.system:
            self.system_edit.setPlainText(conv.system)
        if conv.model:
            self.select_model(conv.model)
        self._hide_error()
        self.status_label.setText("")

    def _open_item(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(Qt.ItemDataRole.UserRole)
        if not self.conversation or self.conversation.id != conversation_id:
            self.open_conversation(str(conversation_id))

    def _selected_id(self) -> str | None:
        item = self.conversation_list.currentItem()
        if item is not None:
            return str(item.data(Qt.ItemDataRole.UserRole))
        return self.conversation.id if self.conversation else None

    def rename_conversation(self, conversation_id: str, title: str) -> None:
        self.wait_for_saves()
        try:
            renamed = self.store.rename(conversation_id, title)
        except (UserError, OSError) as exc:
            self._show_error(getattr(exc, "message", str(exc)))
            return
        if self.conversation and self.conversation.id == conversation_id:
            self.conversation.title = renamed.title
        self.refresh_conversations()

    def delete_conversation(self, conversation_id: str) -> None:
        if self.busy and self.conversation and self.conversation.id == conversation_id:
            return
        self.wait_for_saves()
        self.store.delete(conversation_id)
        if self.conversation and self.conversation.id == conversation_id:
            self.new_conversation()
        self.refresh_conversations()

    def _rename_current(self) -> None:
        conversation_id = self._selected_id()
        if not conversation_id:
            return
        self.wait_for_saves()
        current = self.store.load(conversation_id).title
        title, ok = QInputDialog.getText(self, "Rename conversation", "Title:", text=current)
        if ok and title.strip():
            self.rename_conversation(conversation_id, title)

    def _delete_current(self) -> None:
        conversation_id = self._selected_id()
        if not conversation_id:
            return
        answer = QMessageBox.question(self, "Delete conversation", "Delete this conversation for good?")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_conversation(conversation_id)

    def _export_current(self) -> None:
        conversation_id = self._selected_id()
        if not conversation_id:
            return
        self.wait_for_saves()
        title = self.store.load(conversation_id).title
        safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip() or "conversation"
        path, _ = QFileDialog.getSaveFileName(self, "Export as Markdown", f"{safe}.md", "Markdown (*.md)")
        if path:
            try:
                self.store.export_markdown(conversation_id, path)
            except (UserError, OSError) as exc:
                self._show_error(f"Could not export: {getattr(exc, 'message', exc)}")
                return
            self.status_label.setText(f"Exported to {path}")

    def _save_conversation(self) -> None:
        conv = self.conversation
        if conv is None:
            return
        conv.updated = time.time()
        snapshot = copy.deepcopy(conv)
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="conversation-writer")
        self._saves = [f for f in self._saves if not f.done()]
        future = self._writer.submit(self.store.save, snapshot, False)
        future.add_done_callback(self._save_done)
        self._saves.append(future)
        self._show_in_list(conv)

    def _save_done(self, future: Future) -> None:
        # On the writer thread: only a signal crosses back to the widgets.
        exc = future.exception()
        if exc is not None:
            self._saveFailed.emit(str(exc))

    def wait_for_saves(self) -> None:
        """Block until every queued conversation write is on disk (or failed)."""
        saves, self._saves = self._saves, []
        for future in saves:
            try:
                future.result()
            except Exception:
                pass  # reported through _saveFailed

    def _show_in_list(self, conv: Conversation) -> None:
        when = time.strftime("%b %d %H:%M", time.localtime(conv.updated))
        self.conversation_list.blockSignals(True)
        item = None
        for row in range(self.conversation_list.count()):
            if self.conversation_list.item(row).data(Qt.ItemDataRole.UserRole) == conv.id:
                item = self.conversation_list.takeItem(row)
                break
        if item is None:
            item = QListWidgetItem()
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
        item.setText(f"{conv.title}\n{when}")
        item.setToolTip(conv.title)
        self.conversation_list.insertItem(0, item)
        self.conversation_list.setCurrentItem(item)
        self.conversation_list.blockSignals(False)

    # ---- sending and streaming ---------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._job_id) or (self._endpoint_task is not None and not self._endpoint_task.done())

    def send(self, text: str | None = None) -> bool:
        """Send `text` (default: the input box) to the chosen model; False if nothing was sent."""
        message = self.input_edit.toPlainText() if text is None else text
        model = self.current_model()
        if self.busy or not message.strip() or not model or model == BROWSE:
            return False
        if model == ENDPOINT and not self.url_edit.text().strip():
            self._show_error("Enter the endpoint's URL first, e.g. http://127.0.0.1:11434/v1.")
            return False
        self._hide_error()
        system = self.system_edit.toPlainText()
        label = self.endpoint_model_edit.currentText().strip() if model == ENDPOINT else model
        if self.conversation is None:
            self.conversation = Conversation(title=title_from(message))
        conv = self.conversation
        conv.system = system
        conv.model = model
        user = Message("user", message)
        conv.messages.append(user)
        decoding = self.decoding()
        busy_before = self.bridge.running is not None
        # The request goes out before any widget is built: the model starts on the
        # prompt while the window draws the new message (tokens arrive as queued
        # signals, so none can land before this method returns).
        if model == ENDPOINT:
            self._stop_event = asyncio.Event()
            self._endpoint_task = _schedule(
                self._run_endpoint(self.endpoint(), system, conv.turns(), decoding, self._stop_event)
            )
        else:
            job = ChatRequest(
                model=model,
                system=system,
                messages=conv.turns(),
                decoding=decoding,
                trust_remote_code=model in self.settings.llm_trusted_models,
            )
            self._job_id = self.bridge.submit(job)
        self._sent_at = time.perf_counter()
        self._first_token_at = None
        self._reply_text = ""
        self._pending = ""
        self._add_view(user)
        if text is None:
            self.input_edit.clear()
        self._reply_view = self.chat.add(Message("assistant", "", {"model": label}))
        self._reply_view.set_text("…")
        self._reply_view.sendToImage.connect(self.sendPrompt)
        if model == ENDPOINT:
            self.status_label.setText(f"Asking {self.url_edit.text().strip()}…")
        else:
            self.status_label.setText("Queued…" if busy_before else "Thinking…")
        # The user's message is written once the first token is in (or the reply
        # ends), so the write never competes with the model for the first token.
        self._unsaved = True
        self._set_busy(True)
        self.replyStarted.emit()
        return True

    def stop(self) -> None:
        if self._job_id:
            running = self.bridge.running
            if running is not None and running.job_id == self._job_id:
                self.bridge.cancel_running()
            else:
                self.bridge.remove_queued(self._job_id)
        elif self.busy and self._stop_event is not None:
            self._stop_event.set()
        self.status_label.setText("Stopping…")

    def _set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)
        self.new_button.setEnabled(not busy)

    def _on_token(self, job_id: str, text: str) -> None:
        if job_id == self._job_id:
            self._append(text)

    def _append(self, text: str) -> None:
        first = self._first_token_at is None
        if first:
            self._first_token_at = time.perf_counter()
            self.status_label.setText("Writing…")
            if self._unsaved:
                self._unsaved = False
                self._save_conversation()
        self._pending += text
        self.replyToken.emit(text)
        if first:
            self._flush()
        elif not self._flush_timer.isActive():
            self._flush_timer.start()

    def _flush(self) -> None:
        if self._pending and self._reply_view is not None:
            self._reply_text += self._pending
            self._pending = ""
            self._reply_view.set_text(self._reply_text)

    def _on_finished(self, job_id: str, result: object) -> None:
        if job_id == self._models_job:
            self._set_models(list(result or []))
            return
        if job_id != self._job_id:
            return
        self._job_id = ""
        self._complete(result)

    def _complete(self, result: Any) -> None:
        self._flush_timer.stop()
        self._pending = ""
        self._unsaved = False
        conv = self.conversation
        view = self._reply_view
        self._reply_view = None
        if conv is not None:
            # Notices (dropped turns, a shortened reply) go before the reply they concern.
            for notice in result.notices:
                message = Message("notice", notice)
                conv.messages.append(message)
                if view is not None:
                    index = self.chat._layout.indexOf(view)
                    notice_view = MessageView(message)
                    self.chat._layout.insertWidget(index, notice_view)
                    self.chat.views.insert(self.chat.views.index(view), notice_view)
            meta = {
                "tokens_per_s": round(result.tokens_per_s, 2),
                "ttft_s": round(result.ttft_s, 4),
                "new_tokens": result.new_tokens,
                "model": result.model,
                "stopped": result.stopped,
                "finish_reason": result.finish_reason,
            }
            if result.seed >= 0:
                meta["seed"] = result.seed
            reply = Message("assistant", result.text, meta)
            conv.messages.append(reply)
            if view is not None:
                view.message = reply
                view.set_text(result.text)
                view.set_meta(meta)
            self._save_conversation()
        self._set_busy(False)
        self.status_label.setText(
            f"Stopped after {result.new_tokens} tokens." if result.stopped else ""
        )
        self.replyFinished.emit(result)

    def _on_failed(self, job_id: str, message: str, detail: str) -> None:
        if job_id == self._models_job:
            # Discovery failed: folders and the endpoint can still be picked.
            self._set_models([])
            self._show_error(message)
            return
        if job_id != self._job_id:
            return
        self._job_id = ""
        self._fail(message)

    def _fail(self, message: str, partial: str = "") -> None:
        self._flush_timer.stop()
        self._pending = ""
        view = self._reply_view
        self._reply_view = None
        if view is not None:
            if partial and self.conversation is not None:
                reply = Message("assistant", partial, {"error": message})
                self.conversation.messages.append(reply)
                view.message = reply
                view.set_text(partial)
                view.set_meta(reply.meta)
            else:
                self.chat.remove(view)
        self._unsaved = False
        self._save_conversation()
        self._set_busy(False)
        self.status_label.setText("")
        self._show_error(message)
        self.replyFailed.emit(message)

    def _on_cancelled(self, job_id: str) -> None:
        if job_id != self._job_id:
            return
        # Removed from the queue before it started: nothing was written.
        self._job_id = ""
        self._flush_timer.stop()
        if self._reply_view is not None:
            self.chat.remove(self._reply_view)
            self._reply_view = None
        self._unsaved = False
        self._save_conversation()
        self._set_busy(False)
        self.status_label.setText("Cancelled before it started.")

    async def _run_endpoint(
        self, endpoint: Any, system: str, turns: Any, decoding: Decoding, stop: asyncio.Event
    ) -> None:
        from studio.core.endpoints import EndpointError, astream_chat

        try:
            result = await astream_chat(
                endpoint, system, turns, decoding, self._append, stop=stop
            )
        except EndpointError as exc:
            self._fail(exc.message, exc.partial)
            return
        except UserError as exc:
            self._fail(exc.message)
            return
        except asyncio.CancelledError:
            self._fail("The request was cancelled.", self._reply_text + self._pending)
            raise
        self._flush()
        self._complete(result)

    # ---- helpers ---------------------------------------------------------------------------

    def _add_view(self, message: Message) -> MessageView:
        view = self.chat.add(message)
        view.sendToImage.connect(self.sendPrompt)
        return view

    def _show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.show()

    def _hide_error(self) -> None:
        self.error_label.hide()
        self.error_label.setText("")


def _schedule(coro: Any) -> asyncio.Future:
    """Run `coro` on the qasync loop that drives the window."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.get_event_loop()
    return asyncio.ensure_future(coro, loop=loop)
