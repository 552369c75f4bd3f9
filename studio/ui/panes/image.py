"""The Image pane: text-to-image with a live preview at every step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
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

from studio.core.engine import CallJob, JobContext
from studio.core.errors import UserError
from studio.core.jobs import CountTokens, TextToImage
from studio.core.settings import Settings
from studio.ui.bridge import Bridge
from studio.ui.widgets.combo import select_data
from studio.ui.widgets.guidance_box import guidance_box
from studio.ui.widgets.image_view import ImageView, to_qimage, untinted_icon
from studio.ui.widgets.seed_field import FIXED, MAX_SEED, RANDOM, REUSE, SeedField
from studio.ui.widgets.slider_spin import SliderSpin

PIPELINE_KIND = "diffusers-pipeline"
SEED_MODE_KEY = "image_seed_mode"
SEED_KEY = "image_seed"
NO_MODEL = ""


def scheduler_choices(model_path: str | None = None) -> list[tuple[str, str]]:
    """(key, display name) of the schedulers the core offers (LCM only where the model can)."""
    from studio.core.diffusion import SCHEDULERS, available_schedulers

    return [(key, SCHEDULERS[key]) for key in available_schedulers(model_path)]


# ---- work done on the inference thread (interactive lanes, never the UI thread) ----


@dataclass(frozen=True, kw_only=True)
class ListModels(CallJob):
    lane: ClassVar[str] = "image-pane:models"

    @property
    def title(self) -> str:
        return "Listing models"


def _discover(settings_snapshot: Settings) -> Any:
    def fn(ctx: JobContext) -> list:
        from studio.core.registry import discover

        return discover(settings_snapshot, kinds=[PIPELINE_KIND])

    return fn


def _copy_settings(settings: Settings) -> Settings:
    return Settings.from_dict(settings.to_dict())


# ---- the pane -----------------------------------------------------------------------


class ImagePane(QWidget):
    modelsLoaded = Signal(list)  # the ModelEntry list the picker shows
    previewShown = Signal(int, int)  # step, total
    imagesShown = Signal(object)  # the finished job's ImageResult
    errorShown = Signal(str)
    tokensCounted = Signal(int, int)  # used, limit

    def __init__(self, bridge: Bridge, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.models_loaded = False
        self.models: list = []
        self.jobs: list[str] = []  # ours, submitted and not yet ended
        self.last_result: Any = None
        self._results: list[tuple[Any, str, int | None]] = []  # (image, path, seed)
        self._models_job = ""
        self._tokens_job = ""
        self._pending_model = settings.default_model
        self._build()
        self._restore(settings)

        bridge.started.connect(self._on_started)
        bridge.progress.connect(self._on_progress)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(self._on_failed)
        bridge.cancelled.connect(self._on_cancelled)
        # Queued before the engine starts, it runs right after the device is chosen.
        self.refresh_models()

    # ---- layout ------------------------------------------------------------------

    def _build(self) -> None:
        self.model_box = QComboBox()
        self.model_box.setObjectName("modelBox")
        self.model_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_box.setMinimumContentsLength(18)
        self.model_box.addItem("Looking for models…", NO_MODEL)
        self.refresh_button = QToolButton()
        self.refresh_button.setText("⟳")
        self.refresh_button.setToolTip("Look for models again (models/, your folders, the HF cache)")
        self.refresh_button.clicked.connect(self.refresh_models)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_box, 1)
        model_row.addWidget(self.refresh_button)

        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setObjectName("promptEdit")
        self.prompt_edit.setPlaceholderText("Describe the image (Ctrl+Enter to generate)")
        self.prompt_edit.setTabChangesFocus(True)
        self.prompt_edit.setMinimumHeight(70)
        self.token_label = QLabel("")
        self.token_label.setObjectName("tokenCount")
        from studio.ui.widgets.enhance import EnhanceButton

        self.enhance_button = EnhanceButton(self.bridge, self.settings, self.prompt_edit)
        prompt_head = QHBoxLayout()
        prompt_head.addWidget(QLabel("Prompt"))
        prompt_head.addStretch(1)
        prompt_head.addWidget(self.token_label)
        prompt_head.addWidget(self.enhance_button)

        self.negative_edit = QPlainTextEdit()
        self.negative_edit.setObjectName("negativeEdit")
        self.negative_edit.setPlaceholderText("What the image should not show")
        self.negative_edit.setTabChangesFocus(True)
        self.negative_edit.setMaximumHeight(60)

        self.scheduler_box = QComboBox()
        self.scheduler_box.setObjectName("schedulerBox")
        self._fill_schedulers(None)
        self.steps = SliderSpin(1, 150, 30)
        self.steps.setObjectName("stepsField")
        self.cfg = SliderSpin(0.0, 30.0, 7.5, step=0.5, decimals=1)
        self.cfg.setObjectName("cfgField")
        self.guidance_box = guidance_box()  # _restore selects the saved rule
        cfg_row = QHBoxLayout()
        cfg_row.addWidget(self.cfg, 1)
        cfg_row.addWidget(self.guidance_box)
        self.width_box = self._size_box()
        self.height_box = self._size_box()
        self.swap_button = QToolButton()
        self.swap_button.setText("⇄")
        self.swap_button.setToolTip("Swap width and height")
        self.swap_button.clicked.connect(self._swap_size)
        size_row = QHBoxLayout()
        size_row.addWidget(self.width_box)
        size_row.addWidget(QLabel("×"))
        size_row.addWidget(self.height_box)
        size_row.addWidget(self.swap_button)
        size_row.addStretch(1)
        self.seed = SeedField()
        self.seed.setObjectName("seedField")
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 16)
        self.batch_size.setToolTip("Images made together in one job")
        self.batch_count = QSpinBox()
        self.batch_count.setRange(1, 100)
        self.batch_count.setToolTip("Jobs queued one after another")
        batch_row = QHBoxLayout()
        batch_row.addWidget(QLabel("size"))
        batch_row.addWidget(self.batch_size)
        batch_row.addSpacing(12)
        batch_row.addWidget(QLabel("count"))
        batch_row.addWidget(self.batch_count)
        batch_row.addStretch(1)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Scheduler", self.scheduler_box)
        form.addRow("Steps", self.steps)
        form.addRow("CFG scale", cfg_row)
        form.addRow("Size", size_row)
        form.addRow("Seed", self.seed)
        form.addRow("Batch", batch_row)

        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("generateButton")
        self.generate_button.setToolTip("Queue the image (Ctrl+Enter)")
        self.generate_button.clicked.connect(self.generate)
        self.stop_button = QPushButton("Cancel")
        self.stop_button.setToolTip("Stop this pane's running job and drop its queued ones")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.cancel)
        action_row = QHBoxLayout()
        action_row.addWidget(self.generate_button, 1)
        action_row.addWidget(self.stop_button)

        self.error_label = QLabel("")
        self.error_label.setObjectName("errorBanner")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        self.details_button = QPushButton("Details…")
        self.details_button.hide()
        self.details_button.clicked.connect(self._show_details)
        self._error_detail = ""
        self.notice_label = QLabel("")
        self.notice_label.setObjectName("noticeBanner")
        self.notice_label.setWordWrap(True)
        self.notice_label.hide()

        controls = QWidget()
        left = QVBoxLayout(controls)
        left.addWidget(QLabel("Model"))
        left.addLayout(model_row)
        left.addLayout(prompt_head)
        left.addWidget(self.prompt_edit, 2)
        left.addWidget(QLabel("Negative prompt"))
        left.addWidget(self.negative_edit, 1)
        left.addLayout(form)
        left.addLayout(action_row)
        left.addWidget(self.error_label)
        left.addWidget(self.details_button, 0, Qt.AlignmentFlag.AlignRight)
        left.addWidget(self.notice_label)
        left.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(controls)
        scroll.setMinimumWidth(360)

        self.view = ImageView("Your image appears here, step by step, as it is denoised.")
        self.view.setObjectName("imageView")
        self.results = QListWidget()
        self.results.setObjectName("resultStrip")
        self.results.setViewMode(QListWidget.ViewMode.IconMode)
        self.results.setFlow(QListWidget.Flow.LeftToRight)
        self.results.setWrapping(False)
        self.results.setIconSize(QSize(72, 72))
        self.results.setFixedHeight(112)
        self.results.setMovement(QListWidget.Movement.Static)
        self.results.currentRowChanged.connect(self._show_result)
        self.caption = QLabel("")
        self.caption.setObjectName("imageCaption")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        output = QWidget()
        right = QVBoxLayout(output)
        right.setContentsMargins(0, 0, 0, 0)
        right.addWidget(self.view, 1)
        right.addWidget(self.results)
        right.addWidget(self.caption)

        splitter = QSplitter()
        splitter.addWidget(scroll)
        splitter.addWidget(output)
        splitter.setStretchFactor(0, 0)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([400, 700])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(splitter)

        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(self.generate)

        self._token_timer = QTimer(self)
        self._token_timer.setSingleShot(True)
        self._token_timer.setInterval(250)
        self._token_timer.timeout.connect(self._request_token_count)
        self.prompt_edit.textChanged.connect(self._token_timer.start)
        self.model_box.currentIndexChanged.connect(self._model_changed)

    @staticmethod
    def _size_box() -> QSpinBox:
        box = QSpinBox()
        box.setRange(8, 4096)
        box.setSingleStep(8)
        box.setSuffix(" px")
        box.setToolTip("A multiple of 8")
        return box

    def _swap_size(self) -> None:
        w, h = self.width_box.value(), self.height_box.value()
        self.width_box.setValue(h)
        self.height_box.setValue(w)

    # ---- settings ------------------------------------------------------------------

    def _restore(self, s: Settings) -> None:
        self.prompt_edit.setPlainText(s.last_prompt)
        self.negative_edit.setPlainText(s.last_negative_prompt)
        self.cfg.setValue(s.guidance_scale)
        select_data(self.guidance_box, s.guidance_method)
        self.steps.setValue(s.steps)
        self._select_scheduler(s.scheduler)
        self.width_box.setValue(s.width)
        self.height_box.setValue(s.height)
        self.batch_size.setValue(s.batch_size)
        self.batch_count.setValue(s.batch_count)
        mode = s.extra.get(SEED_MODE_KEY, RANDOM)
        seed = s.extra.get(SEED_KEY)
        if isinstance(seed, int):
            self.seed.edit.setText(str(seed))
        self.seed.set_mode(mode if mode in (RANDOM, FIXED, REUSE) else RANDOM)

    def store_settings(self, s: Settings) -> None:
        s.last_prompt = self.prompt_edit.toPlainText()
        s.last_negative_prompt = self.negative_edit.toPlainText()
        s.guidance_scale = self.cfg.value()
        s.guidance_method = str(self.guidance_box.currentData())
        s.steps = self.steps.int_value()
        s.scheduler = str(self.scheduler_box.currentData() or s.scheduler)
        s.width = self.width_box.value()
        s.height = self.height_box.value()
        s.batch_size = self.batch_size.value()
        s.batch_count = self.batch_count.value()
        if self.current_model():
            s.default_model = self.current_model()
        s.extra[SEED_MODE_KEY] = self.seed.mode
        text = self.seed.edit.text().strip()
        if text.isdigit():
            s.extra[SEED_KEY] = int(text)

    def settings_changed(self) -> None:
        self.refresh_models()

    def _select_scheduler(self, key: str) -> bool:
        return select_data(self.scheduler_box, key)

    # ---- models ------------------------------------------------------------------------

    def refresh_models(self) -> None:
        job = ListModels(fn=_discover(_copy_settings(self.settings)))
        self._models_job = job.job_id
        self.bridge.interactive(job)

    def current_model(self) -> str:
        return str(self.model_box.currentData() or "")

    def _set_models(self, entries: list) -> None:
        wanted = self.current_model() or self._pending_model
        self.models = list(entries)
        self.model_box.blockSignals(True)
        self.model_box.clear()
        for entry in entries:
            # Bundled models go by name; others by path, so the request is reproducible.
            value = entry.name if entry.source == "bundled" else str(entry.path)
            self.model_box.addItem(entry.label, value)
            self.model_box.setItemData(self.model_box.count() - 1, str(entry.path), Qt.ItemDataRole.ToolTipRole)
        if not entries:
            self.model_box.addItem("No text-to-image model found: add a folder in Settings", NO_MODEL)
        self.model_box.blockSignals(False)
        if not self._select_model(wanted) and entries:
            self.model_box.setCurrentIndex(0)
        self.models_loaded = True
        self._model_changed()
        self.modelsLoaded.emit(self.models)

    def _select_model(self, wanted: str) -> bool:
        if not wanted:
            return False
        for i in range(self.model_box.count()):
            value = str(self.model_box.itemData(i) or "")
            name = self.models[i].name if i < len(self.models) else ""
            if wanted in (value, name, self.model_box.itemText(i)):
                self.model_box.setCurrentIndex(i)
                return True
        return False

    def current_model_path(self) -> str | None:
        index = self.model_box.currentIndex()
        return str(self.models[index].path) if 0 <= index < len(self.models) else None

    def _model_changed(self, *_: object) -> None:
        self._fill_schedulers(self.current_model_path())
        self._token_timer.start()

    def _fill_schedulers(self, model_path: str | None) -> None:
        current = self.scheduler_box.currentData() or self.settings.scheduler
        self.scheduler_box.blockSignals(True)
        self.scheduler_box.clear()
        for key, name in scheduler_choices(model_path):
            self.scheduler_box.addItem(name, key)
        self.scheduler_box.blockSignals(False)
        self._select_scheduler(str(current))

    # ---- token count -----------------------------------------------------------------

    def _request_token_count(self) -> None:
        model = self.current_model()
        if not model or not self.bridge.ready:
            self.token_label.setText("")
            return
        job = CountTokens(prompt=self.prompt_edit.toPlainText(), model=model)
        self._tokens_job = job.job_id
        self.bridge.interactive(job)

    def _show_token_count(self, used: int, limit: int) -> None:
        over = used > limit
        self.token_label.setText(f"{used} / {limit} tokens" + (" — the rest is cut" if over else ""))
        self.token_label.setToolTip(
            f"The text encoder reads {limit} tokens; words past that are ignored."
            if over
            else f"The text encoder reads up to {limit} tokens."
        )
        self.token_label.setProperty("over", "true" if over else "false")
        self.token_label.style().unpolish(self.token_label)
        self.token_label.style().polish(self.token_label)
        self.tokensCounted.emit(used, limit)

    # ---- public ------------------------------------------------------------------------

    def set_prompt(self, text: str) -> None:
        self.prompt_edit.setPlainText(text)
        self.prompt_edit.setFocus()

    def apply_parameters(self, params: dict) -> None:
        """Restore a request (from our PNG JSON or parsed A1111 parameters)."""
        notes = []
        if "prompt" in params:
            self.prompt_edit.setPlainText(str(params["prompt"]))
        if "negative_prompt" in params:
            self.negative_edit.setPlainText(str(params["negative_prompt"]))
        if _finite(params.get("guidance_scale")):
            self.cfg.setValue(float(params["guidance_scale"]))
        for key, widget in (("steps", self.steps),):
            if isinstance(params.get(key), int):
                widget.setValue(params[key])
        if isinstance(params.get("width"), int):
            self.width_box.setValue(params["width"])
        if isinstance(params.get("height"), int):
            self.height_box.setValue(params["height"])
        if isinstance(params.get("batch_size"), int):
            self.batch_size.setValue(params["batch_size"])
        if isinstance(params.get("seed"), int) and 0 <= params["seed"] <= MAX_SEED:
            self.seed.set_seed(params["seed"])
        method = params.get("guidance_method")
        if method and not select_data(self.guidance_box, str(method)):
            notes.append(f"guidance {method!r} is not available here")
        scheduler = params.get("scheduler")
        if scheduler and not self._select_scheduler(str(scheduler)):
            notes.append(f"scheduler {scheduler!r} is not available here")
        model = params.get("model")
        if model:
            if self.models_loaded and not self._select_model(str(model)):
                notes.append(f"model {model!r} is not installed; kept {self.model_box.currentText()}")
            elif not self.models_loaded:
                self._pending_model = str(model)
        self._clear_error()
        self._show_notices(["Restored settings: " + "; ".join(notes) + "."] if notes else [])

    def generate(self) -> list[str]:
        """Queue the jobs the form describes (batch count jobs); their ids, or [] on bad input."""
        self._clear_error()
        try:
            requests = self.requests()
        except UserError as exc:
            self._show_error(exc.message)
            return []
        ids = [self.bridge.submit(job) for job in requests]
        self.jobs.extend(ids)
        self._results = []
        self.results.clear()
        self._show_notices([])
        self._update_buttons()
        count = len(ids)
        self.caption.setText(f"Queued {count} job{'s' if count != 1 else ''}.")
        return ids

    def requests(self) -> list[TextToImage]:
        """The TextToImage requests for the form's values; UserError for bad input."""
        model = self.current_model()
        if not model:
            raise UserError(
                "No text-to-image model is selected. Put a diffusers pipeline folder under "
                "models/ or add a model folder in Settings."
            )
        width, height = self.width_box.value(), self.height_box.value()
        if width % 8 or height % 8:
            raise UserError(f"Width and height must be multiples of 8 (got {width}×{height}).")
        guidance = self.cfg.value()
        if not math.isfinite(guidance) or guidance < 0:
            raise UserError("The CFG scale must be a number of 0 or more.")
        steps = self.steps.int_value()
        if steps < 1:
            raise UserError("Steps must be at least 1.")
        batch_size = self.batch_size.value()
        seed = self.seed.next_seed()
        jobs = []
        for n in range(self.batch_count.value()):
            if n and self.seed.mode == RANDOM:
                seed = self.seed.next_seed()
            elif n:
                # Fixed seeds advance past the images of the previous job, as A1111 does.
                seed = (seed + batch_size) % (MAX_SEED + 1)
            jobs.append(
                TextToImage(
                    prompt=self.prompt_edit.toPlainText().strip(),
                    negative_prompt=self.negative_edit.toPlainText().strip(),
                    guidance_scale=guidance,
                    guidance_method=str(self.guidance_box.currentData()),
                    steps=steps,
                    scheduler=str(self.scheduler_box.currentData()),
                    seed=seed,
                    width=width,
                    height=height,
                    batch_size=batch_size,
                    model=model,
                )
            )
        return jobs

    def cancel(self) -> None:
        """Stop this pane's running job and remove its queued ones."""
        for job_id in list(self.jobs):
            self.bridge.cancel(job_id)

    # ---- engine events -----------------------------------------------------------------

    def _on_started(self, job_id: str, job: object) -> None:
        if job_id in self.jobs:
            left = len(self.jobs)
            self.caption.setText("Loading the model…" if left == 1 else f"Loading the model… ({left} jobs left)")
            self._update_buttons()

    def _on_progress(self, job_id: str, step: int, total: int, preview: object) -> None:
        if job_id not in self.jobs:
            return
        self.caption.setText(f"Step {step} of {total}")
        if preview is not None:
            self.view.set_image(preview, f"step {step}/{total}")
            self.previewShown.emit(step, total)

    def _on_finished(self, job_id: str, result: object) -> None:
        if job_id == self._models_job:
            self._set_models(list(result or []))
            return
        if job_id == self._tokens_job:
            used, limit = result  # type: ignore[misc]
            self._show_token_count(int(used), int(limit))
            return
        if job_id not in self.jobs:
            return
        self.jobs.remove(job_id)
        self.last_result = result
        images = list(getattr(result, "images", []) or [])
        paths = [str(p) for p in getattr(result, "paths", []) or []]
        seeds = list(getattr(result, "seeds", []) or [])
        for i, image in enumerate(images):
            path = paths[i] if i < len(paths) else ""
            seed = seeds[i] if i < len(seeds) else None
            self._results.append((image, path, seed))
            item = QListWidgetItem(untinted_icon(QPixmap.fromImage(to_qimage(image))), f"seed {seed}")
            item.setToolTip(f"seed {seed}\n{path}" if path else f"seed {seed}")
            self.results.addItem(item)
        if seeds:
            self.seed.set_last(int(seeds[-1]))
        if images:
            first_new = len(self._results) - len(images)
            self.results.setCurrentRow(first_new)
            self._show_result(first_new)
        self._show_notices(list(getattr(result, "notices", []) or []))
        self._update_buttons()
        self.imagesShown.emit(result)

    def _on_failed(self, job_id: str, message: str, detail: str) -> None:
        if job_id == self._tokens_job:
            self.token_label.setText("")
            self.token_label.setToolTip(message)
            return
        if job_id == self._models_job:
            self._set_models([])
            self._show_error(message, detail)
            return
        if job_id not in self.jobs:
            return
        self.jobs.remove(job_id)
        self._show_error(message, detail)
        self.caption.setText("Failed.")
        self._update_buttons()

    def _on_cancelled(self, job_id: str) -> None:
        if job_id not in self.jobs:
            return
        self.jobs.remove(job_id)
        self.caption.setText("Cancelled: nothing was saved.")
        if not self._results:
            self.view.clear()
        else:
            self._show_result(self.results.currentRow())
        self._update_buttons()

    # ---- display -------------------------------------------------------------------------

    def _show_result(self, row: int) -> None:
        if not 0 <= row < len(self._results):
            return
        image, path, seed = self._results[row]
        self.view.set_image(image, f"seed {seed}" if seed is not None else "")
        self.caption.setText(f"Saved {path}" if path else f"Seed {seed}")

    def _show_error(self, message: str, detail: str = "") -> None:
        self.error_label.setText(message)
        self.error_label.show()
        self._error_detail = detail
        self.details_button.setVisible(bool(detail))
        self.errorShown.emit(message)

    def _clear_error(self) -> None:
        self.error_label.hide()
        self.error_label.setText("")
        self.details_button.hide()
        self._error_detail = ""

    def _show_details(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, "Error details", self.error_label.text(), parent=self)
        box.setDetailedText(self._error_detail)
        box.exec()

    def _show_notices(self, notices: list[str]) -> None:
        self.notice_label.setText("\n".join(str(n) for n in notices))
        self.notice_label.setVisible(bool(notices))

    def error_text(self) -> str:
        return self.error_label.text()

    def notice_text(self) -> str:
        return self.notice_label.text()

    def _update_buttons(self) -> None:
        self.stop_button.setEnabled(bool(self.jobs))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
