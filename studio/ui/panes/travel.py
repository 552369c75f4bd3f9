"""The Travel pane: seed travel and prompt travel with the Image pane's model.

Seed travel slerps between the initial noises of two seeds under one prompt;
prompt travel moves between the text embeddings of two prompts (optionally
between two seeds as well). A run is one batch job with a progress bar and a
cancel; every frame records the parameters that render it again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio.core.errors import UserError
from studio.core.jobs import ExportFrames, PromptTravel, SeedTravel
from studio.ui.widgets.combo import select_data
from studio.ui.widgets.guidance_box import guidance_box
from studio.ui.widgets.latent_views import (
    ExportButton,
    FramePlayer,
    MessageLine,
    TileGrid,
    WrapLabel,
)

SEED = "seed"
PROMPT = "prompt"


def _text_box(placeholder: str, height: int = 54) -> QPlainTextEdit:
    box = QPlainTextEdit()
    box.setPlaceholderText(placeholder)
    box.setMaximumHeight(height)
    return box


class TravelPane(QWidget):
    framesShown = Signal(object)
    exported = Signal(str)
    errorShown = Signal(str)

    def __init__(self, bridge: Any, settings: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.job_id = ""
        self._export_id = ""
        self.result: Any = None
        self._build()
        bridge.started.connect(self._on_started)
        bridge.progress.connect(self._on_progress)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(self._on_failed)
        bridge.cancelled.connect(self._on_cancelled)

    # ---- layout --------------------------------------------------------------------------

    def _build(self) -> None:
        from studio.core.diffusion import SCHEDULERS

        self.mode_box = QComboBox()
        self.mode_box.addItem("Seed travel (one prompt, two seeds)", SEED)
        self.mode_box.addItem("Prompt travel (two prompts)", PROMPT)
        self.model_label = QLabel("")
        self.copy_button = QPushButton("Copy from the Image pane")
        self.copy_button.setToolTip("Model, prompt, negative prompt, steps, CFG, sampler, size and seed")
        self.prompt_a = _text_box("Prompt (A)")
        self.prompt_b = _text_box("Prompt B (prompt travel)")
        self.negative = _text_box("Negative prompt", 40)
        self.seed_a = QSpinBox()
        self.seed_a.setRange(0, 2**31 - 1)
        self.seed_b = QSpinBox()
        self.seed_b.setRange(0, 2**31 - 1)
        self.seed_b.setValue(1)
        self.travel_seeds = QCheckBox("also travel from seed A to seed B")
        self.frames_box = QSpinBox()
        self.frames_box.setRange(2, 600)
        self.frames_box.setValue(24)
        self.steps_box = QSpinBox()
        self.steps_box.setRange(1, 1000)
        self.steps_box.setValue(int(getattr(self.settings, "steps", 20) or 20))
        self.cfg_box = QDoubleSpinBox()
        self.cfg_box.setRange(0.0, 30.0)
        self.cfg_box.setSingleStep(0.5)
        self.cfg_box.setValue(float(getattr(self.settings, "guidance_scale", 7.5)))
        self.guidance_box = guidance_box(getattr(self.settings, "guidance_method", "cfg"))
        cfg_row = QHBoxLayout()
        cfg_row.addWidget(self.cfg_box, 1)
        cfg_row.addWidget(self.guidance_box)
        self.scheduler_box = QComboBox()
        for key, name in SCHEDULERS.items():
            self.scheduler_box.addItem(name, key)
        index = self.scheduler_box.findData(getattr(self.settings, "scheduler", "euler"))
        self.scheduler_box.setCurrentIndex(max(0, index))
        self.width_box = QSpinBox()
        self.height_box = QSpinBox()
        for box, value in ((self.width_box, "width"), (self.height_box, "height")):
            box.setRange(8, 4096)
            box.setSingleStep(8)
            box.setValue(int(getattr(self.settings, value, 64) or 64))
        size = QHBoxLayout()
        size.addWidget(self.width_box)
        size.addWidget(QLabel("×"))
        size.addWidget(self.height_box)
        seeds = QHBoxLayout()
        seeds.addWidget(self.seed_a)
        seeds.addWidget(QLabel("→"))
        seeds.addWidget(self.seed_b)

        self.form = form = QFormLayout()
        form.addRow("Travel", self.mode_box)
        form.addRow("Model", self.model_label)
        form.addRow("", self.copy_button)
        form.addRow("Prompt", self.prompt_a)
        form.addRow("Prompt B", self.prompt_b)
        form.addRow("Negative", self.negative)
        form.addRow("Seeds", seeds)
        form.addRow("", self.travel_seeds)
        form.addRow("Frames", self.frames_box)
        form.addRow("Steps", self.steps_box)
        form.addRow("CFG scale", cfg_row)
        form.addRow("Sampler", self.scheduler_box)
        form.addRow("Size", size)

        self.start_button = QPushButton("Travel")
        self.start_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.export_button = ExportButton()
        self.export_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.export_button)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setValue(0)
        left = QVBoxLayout()
        left.addLayout(form)
        left.addLayout(buttons)
        left.addWidget(self.progress)
        left.addStretch(1)
        left_box = QWidget()
        left_box.setLayout(left)
        left_box.setMaximumWidth(420)

        self.player = FramePlayer("Frames appear here as the travel renders")
        self.frame_info = WrapLabel("")
        self.strip = TileGrid(columns=12)
        self.strip.setMinimumHeight(60)
        self.strip.setMaximumHeight(120)
        right = QVBoxLayout()
        right.addWidget(self.player, 1)
        right.addWidget(self.frame_info)
        right.addWidget(self.strip)

        self.message = MessageLine()
        body = QHBoxLayout()
        body.addWidget(left_box)
        body.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(body, 1)
        layout.addWidget(self.message)

        self.mode_box.currentIndexChanged.connect(lambda *_: self._mode_changed())
        self.travel_seeds.toggled.connect(lambda *_: self._mode_changed())
        self.copy_button.clicked.connect(self.copy_from_image_pane)
        self.start_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.exportRequested.connect(self._export_dialog)
        self.strip.tileClicked.connect(self._show_frame)
        self.player.slider.valueChanged.connect(lambda *_: self._describe(self._player_index()))
        self._mode_changed()
        self._refresh_model()

    def _mode_changed(self) -> None:
        prompt = self.mode == PROMPT
        self.form.setRowVisible(self.prompt_b, prompt)
        self.form.setRowVisible(self.travel_seeds, prompt)
        self.seed_b.setEnabled(not prompt or self.travel_seeds.isChecked())

    @property
    def mode(self) -> str:
        return str(self.mode_box.currentData())

    # ---- the Image pane's model ---------------------------------------------------------------

    def _image_pane(self) -> Any:
        window = self.window()
        return getattr(window, "image_pane", None)

    def model(self) -> str:
        pane = self._image_pane()
        current = getattr(pane, "current_model", None)
        name = current() if callable(current) else ""
        return name or getattr(self.settings, "default_model", "") or "shapes-diffusion"

    def _refresh_model(self) -> None:
        self.model_label.setText(self.model())

    def showEvent(self, event: Any) -> None:
        self._refresh_model()
        super().showEvent(event)

    def copy_from_image_pane(self) -> bool:
        pane = self._image_pane()
        if pane is None or not hasattr(pane, "requests"):
            self._error("There is no Image pane to copy from.")
            return False
        try:
            request = pane.requests()[0]
        except (UserError, IndexError) as exc:
            self._error(getattr(exc, "message", "The Image pane has no usable settings yet."))
            return False
        self.prompt_a.setPlainText(request.prompt)
        self.negative.setPlainText(request.negative_prompt)
        self.steps_box.setValue(request.steps)
        self.cfg_box.setValue(request.guidance_scale)
        select_data(self.guidance_box, request.guidance_method)
        select_data(self.scheduler_box, request.scheduler)
        self.width_box.setValue(request.width)
        self.height_box.setValue(request.height)
        self.seed_a.setValue(min(request.seed, self.seed_a.maximum()))
        self.seed_b.setValue(min(request.seed + 1, self.seed_b.maximum()))
        self._refresh_model()
        return True

    # ---- requests ---------------------------------------------------------------------------------

    def request(self) -> SeedTravel | PromptTravel:
        common: dict[str, Any] = {
            "model": self.model(),
            "negative_prompt": self.negative.toPlainText().strip(),
            "seed_a": self.seed_a.value(),
            "frames": self.frames_box.value(),
            "steps": self.steps_box.value(),
            "guidance_scale": self.cfg_box.value(),
            "guidance_method": str(self.guidance_box.currentData()),
            "scheduler": str(self.scheduler_box.currentData()),
            "width": self.width_box.value(),
            "height": self.height_box.value(),
        }
        if self.width_box.value() % 8 or self.height_box.value() % 8:
            raise UserError("Width and height must be multiples of 8.")
        if self.mode == SEED:
            if self.seed_a.value() == self.seed_b.value():
                raise UserError("Seed travel needs two different seeds.")
            return SeedTravel(prompt=self.prompt_a.toPlainText().strip(), seed_b=self.seed_b.value(), **common)
        a, b = self.prompt_a.toPlainText().strip(), self.prompt_b.toPlainText().strip()
        if a == b:
            raise UserError("Prompt travel needs two different prompts.")
        seed_b = self.seed_b.value() if self.travel_seeds.isChecked() else None
        return PromptTravel(prompt_a=a, prompt_b=b, seed_b=seed_b, **common)

    def start(self) -> str:
        self._refresh_model()
        try:
            job = self.request()
        except UserError as exc:
            self._error(exc.message)
            return ""
        self.message.clear_message()
        self.job_id = self.bridge.submit(job)
        self.progress.setRange(0, job.frames * job.steps)
        self.progress.setValue(0)
        self.progress.setFormat("queued")
        self.start_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        return self.job_id

    def cancel(self) -> None:
        if self.job_id:
            self.bridge.cancel(self.job_id)

    def export_frames(self, path: str) -> str:
        if self.result is None:
            self._error("Nothing to export yet: run a travel first.")
            return ""
        columns = min(len(self.result), 8) if Path(path).suffix.lower() == ".png" else 0
        job = ExportFrames(frames=tuple(self.result.frames), path=path, fps=float(self.player.fps.value()), columns=columns)
        self._export_id = self.bridge.submit(job)
        return self._export_id

    def _export_dialog(self, suffix: str) -> None:
        from PySide6.QtWidgets import QFileDialog

        getter = getattr(self.settings, "resolved_outputs_dir", None)
        folder = Path(getter()) if getter else Path.home()
        path, _ = QFileDialog.getSaveFileName(self, "Export the travel", str(folder / f"{self.mode}-travel{suffix}"), f"*{suffix}")
        if path:
            if not path.lower().endswith(suffix):
                path += suffix
            self.export_frames(path)

    # ---- frames ------------------------------------------------------------------------------------

    def _player_index(self) -> int:
        n = len(self.player.frames)
        return round(self.player.slider.value() / self.player.STEPS * max(0, n - 1)) if n else -1

    def _show_frame(self, index: int) -> None:
        self.player.show_index(index)
        self._describe(index)

    def _describe(self, index: int) -> None:
        if self.result is None or not 0 <= index < len(self.result.params):
            return
        p = dict(self.result.params[index])
        text = json.dumps(p, ensure_ascii=False)
        self.frame_info.setText(f"Frame {index + 1}: {text}")

    # ---- engine events --------------------------------------------------------------------------------

    def _on_started(self, job_id: str, job: object) -> None:
        if job_id == self.job_id:
            self.progress.setFormat("loading the model…")

    def _on_progress(self, job_id: str, step: int, total: int, preview: object) -> None:
        if job_id == self.job_id:
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(step)
            steps = max(1, self.steps_box.value())
            self.progress.setFormat(f"frame {min((step - 1) // steps + 1, total // steps)} of {total // steps} · %p%")

    def _finish(self) -> None:
        self.job_id = ""
        self.start_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_finished(self, job_id: str, result: object) -> None:
        if job_id == self._export_id:
            self._export_id = ""
            self.message.notice([f"Exported {result}."])
            self.exported.emit(str(result))
            return
        if job_id != self.job_id:
            return
        self._finish()
        self.result = result
        frames = list(result.frames)
        self.player.set_frames(frames)
        self.strip.columns = min(len(frames), 12)
        self.strip.set_tiles(frames)
        self.progress.setFormat("done · %p%")
        self.progress.setValue(self.progress.maximum())
        self.export_button.setEnabled(True)
        self._describe(0)
        self.message.notice(list(result.notices))
        self.framesShown.emit(result)

    def _on_failed(self, job_id: str, message: str, detail: str) -> None:
        if job_id == self._export_id:
            self._export_id = ""
            self._error(message)
        elif job_id == self.job_id:
            self._finish()
            self.progress.setFormat("failed")
            self._error(message)

    def _on_cancelled(self, job_id: str) -> None:
        if job_id == self.job_id:
            self._finish()
            self.progress.setFormat("cancelled")
            self.message.notice(["Cancelled: no frames were kept."])

    def _error(self, message: str) -> None:
        self.message.error(message)
        self.errorShown.emit(message)
