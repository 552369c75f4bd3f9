"""The GAN pane: a page of samples by seed, truncation, pins, slerp and walks,
and GANSpace-style PCA directions that bend the pinned sample live.

The page and the edited sample are interactive requests (latest-only lanes), so
dragging ψ or a direction slider renders only the newest position; walks,
interpolations, PCA and exports are batch jobs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.core.errors import UserError
from studio.core.jobs import (
    ExportFrames,
    GanDirections,
    GanEdit,
    GanInterpolate,
    GanSample,
    GanWalk,
)
from studio.ui.panes.latent_pane import LatentPane
from studio.ui.widgets.image_view import ImageView
from studio.ui.widgets.latent_views import (
    ExportButton,
    FramePlayer,
    MessageLine,
    ModelPicker,
    TileGrid,
)
from studio.ui.widgets.slider_spin import SliderSpin

PAGE = 16
MAX_SEED = 2**31 - 1
DIRECTION_RANGE = 5.0  # slider range in standard deviations


def directions_dir() -> Path:
    from studio.core.settings import data_dir

    return data_dir() / "directions"


class DirectionRow(QWidget):
    """A named direction: its name (editable) and a slider in standard deviations."""

    changed = Signal()

    def __init__(self, name: str, explained: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.name = QLineEdit(name)
        self.name.setMaximumWidth(120)
        self.name.setToolTip(f"{explained:.1%} of the variance" if explained else "")
        self.slider = SliderSpin(-DIRECTION_RANGE, DIRECTION_RANGE, 0.0, step=0.05, decimals=2)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.name)
        layout.addWidget(self.slider, 1)
        self.slider.valueChanged.connect(lambda _v: self.changed.emit())


class GanPane(LatentPane):
    gridShown = Signal(object)  # Frames of the page
    editShown = Signal(object)  # GanFrame of the edited sample
    framesShown = Signal(object)  # Frames of a walk or interpolation
    directionsShown = Signal(object)  # DirectionSet
    LATEST_ONLY = ("grid", "edit")

    def __init__(self, bridge: Any, settings: Any, parent: QWidget | None = None) -> None:
        super().__init__(bridge, settings, parent)
        self.start_seed = 0
        self.pins: list[int] = []  # seeds; the last one is edited
        self.z_dims: dict[str, int] = {}  # asked once per TorchScript file without metadata
        self.directions: Any = None
        self.page: Any = None
        self.frames: Any = None
        self.edited: Any = None
        self.pca_samples = 2000
        self._build()

    # ---- layout --------------------------------------------------------------------

    def _build(self) -> None:
        self.picker = ModelPicker(self.bridge, self.settings, ("gan", "torchscript-gan"), "shapes-gan", open_files=True)
        self.picker.modelChanged.connect(self._model_changed)

        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, MAX_SEED - PAGE)
        self.seed_box.setPrefix("seeds from ")
        self.prev_button = QPushButton("◀ Page")
        self.next_button = QPushButton("Page ▶")
        self.reroll_button = QPushButton("Re-roll")
        self.reroll_button.setToolTip("A random page of seeds")
        self.psi = SliderSpin(0.0, 1.5, 1.0, step=0.01, decimals=2)
        self.psi.setToolTip("Truncation ψ: 1 leaves z as drawn, 0 gives the mean sample")
        top = QHBoxLayout()
        top.addWidget(self.picker, 2)
        top.addWidget(self.seed_box)
        top.addWidget(self.prev_button)
        top.addWidget(self.next_button)
        top.addWidget(self.reroll_button)
        self.page_export = ExportButton(formats=(".png",))
        self.page_export.setToolTip("Export this page of samples as a PNG grid")
        top.addWidget(self.page_export)
        psi_row = QHBoxLayout()
        psi_row.addWidget(QLabel("Truncation ψ"))
        psi_row.addWidget(self.psi, 1)

        self.grid = TileGrid(columns=4)
        self.grid.placeholder = "Samples appear here once the model loads."
        self.grid.setToolTip("Click a tile to pin it (A, then B); click again to unpin")
        left = QVBoxLayout()
        left.addLayout(psi_row)
        left.addWidget(self.grid, 1)
        left_box = QWidget()
        left_box.setLayout(left)

        # Pinned sample and its directions.
        self.pinned_view = ImageView("Pin a tile to edit it")
        self.pinned_view.setMinimumSize(160, 160)
        self.source_box = QComboBox()
        self.source_box.addItem("early-layer activations", "activations")
        self.source_box.addItem("sampled latents", "latent")
        self.count_box = QSpinBox()
        self.count_box.setRange(1, 32)
        self.count_box.setValue(8)
        self.compute_button = QPushButton("Compute PCA directions")
        self.reset_button = QPushButton("Reset sliders")
        self.save_button = QPushButton("Save directions")
        self.load_button = QPushButton("Load…")
        self.rows_box = QWidget()
        self.rows_layout = QVBoxLayout(self.rows_box)
        self.rows_layout.setContentsMargins(0, 0, 0, 0)
        self.rows_layout.addStretch(1)
        self.rows: list[DirectionRow] = []
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.rows_box)
        scroll.setMinimumHeight(120)
        pca_form = QGridLayout()
        pca_form.addWidget(QLabel("PCA over"), 0, 0)
        pca_form.addWidget(self.source_box, 0, 1)
        pca_form.addWidget(QLabel("directions"), 0, 2)
        pca_form.addWidget(self.count_box, 0, 3)
        pca_form.addWidget(self.compute_button, 1, 0, 1, 2)
        pca_form.addWidget(self.reset_button, 1, 2, 1, 2)
        pca_form.addWidget(self.save_button, 2, 0, 1, 2)
        pca_form.addWidget(self.load_button, 2, 2, 1, 2)
        pca_group = QWidget()
        pca_group.setToolTip("GANSpace: principal directions of the generator's latent space")
        pca_layout = QVBoxLayout(pca_group)
        pca_layout.addLayout(pca_form)
        pca_layout.addWidget(scroll, 1)

        # Animations.
        self.frames_box = QSpinBox()
        self.frames_box.setRange(2, 600)
        self.frames_box.setValue(32)
        self.slerp_button = QPushButton("Slerp A → B")
        self.walk_button = QPushButton("Random walk")
        self.export_button = ExportButton()
        self.export_button.setEnabled(False)
        anim_row = QHBoxLayout()
        anim_row.addWidget(QLabel("Frames"))
        anim_row.addWidget(self.frames_box)
        anim_row.addWidget(self.slerp_button)
        anim_row.addWidget(self.walk_button)
        anim_row.addWidget(self.export_button)
        self.player = FramePlayer("Slerp between two pins, or walk from the pinned seed")
        anim_group = QWidget()
        anim_layout = QVBoxLayout(anim_group)
        anim_layout.addLayout(anim_row)
        anim_layout.addWidget(self.player, 1)

        self.side_tabs = QTabWidget()
        self.side_tabs.addTab(pca_group, "Directions")
        self.side_tabs.addTab(anim_group, "Animation")
        right = QVBoxLayout()
        right.addWidget(self.pinned_view, 2)
        right.addWidget(self.side_tabs, 3)
        right_box = QWidget()
        right_box.setLayout(right)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left_box)
        split.addWidget(right_box)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)

        self.message = MessageLine()
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        layout.addWidget(self.message)

        self.seed_box.valueChanged.connect(self._seed_changed)
        self.prev_button.clicked.connect(lambda: self.set_start_seed(self.start_seed - PAGE))
        self.next_button.clicked.connect(lambda: self.set_start_seed(self.start_seed + PAGE))
        self.reroll_button.clicked.connect(lambda: self.set_start_seed(random.randint(0, MAX_SEED - PAGE)))
        self.psi.valueChanged.connect(lambda _v: self.refresh())
        self.grid.tileClicked.connect(self._tile_clicked)
        self.compute_button.clicked.connect(self.compute_directions)
        self.reset_button.clicked.connect(self.reset_sliders)
        self.save_button.clicked.connect(lambda: self.save_directions())
        self.load_button.clicked.connect(self._load_dialog)
        self.slerp_button.clicked.connect(self.interpolate_pins)
        self.walk_button.clicked.connect(self.random_walk)
        self.export_button.exportRequested.connect(self._export_dialog)
        self.page_export.exportRequested.connect(lambda suffix: self._export_dialog(suffix, page=True))
        self._update_buttons()

    # ---- state -----------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.picker.current()

    @property
    def truncation(self) -> float:
        return self.psi.value()

    def seeds(self) -> tuple[int, ...]:
        return tuple(range(self.start_seed, self.start_seed + PAGE))

    def z_dim(self) -> int:
        """The z size to send: 0 (the model says) unless asked for a bare TorchScript file."""
        model = self.model
        if model in self.z_dims:
            return self.z_dims[model]
        path = Path(model)
        value = 0
        if path.is_file() and path.suffix.lower() in (".pt", ".ts", ".pth", ".torchscript"):
            from studio.core.gan import torchscript_z_dim

            if not torchscript_z_dim(path):
                from PySide6.QtWidgets import QInputDialog

                asked, ok = QInputDialog.getInt(
                    self, "z size", f"{path.name} does not say how long its z is.\nz size:", 128, 1, 65536
                )
                value = asked if ok else 0
        self.z_dims[model] = value
        return value

    def set_start_seed(self, seed: int) -> None:
        seed = max(0, min(seed, MAX_SEED - PAGE))
        if self.seed_box.value() != seed:
            self.seed_box.setValue(seed)  # → _seed_changed
        else:
            self._seed_changed(seed)

    def _seed_changed(self, seed: int) -> None:
        self.start_seed = seed
        self.refresh()

    def _model_changed(self, model: str) -> None:
        if self.z_dims.get(model) == 0:
            self.z_dims.pop(model)  # picked again: look (or ask) once more
        self.pins = []
        self.edited = None
        self.pinned_view.clear()
        self._set_directions(None)
        self.message.clear_message()
        self._autoload_directions()
        self.refresh()

    def _tile_clicked(self, index: int) -> None:
        seed = self.start_seed + index
        if seed in self.pins:
            self.pins.remove(seed)
        else:
            self.pins = (self.pins + [seed])[-2:]
        self._show_pins()
        self.request_edit()
        self._update_buttons()

    def pin(self, seed: int) -> None:
        if seed not in self.pins:
            self.pins = (self.pins + [seed])[-2:]
        self._show_pins()
        self.request_edit()
        self._update_buttons()

    def _show_pins(self) -> None:
        self.grid.set_pins([s - self.start_seed for s in self.pins if 0 <= s - self.start_seed < PAGE])
        if not self.pins:
            self.pinned_view.clear()

    def _update_buttons(self) -> None:
        self.slerp_button.setEnabled(len(self.pins) == 2)
        self.walk_button.setEnabled(bool(self.model))
        has_dirs = self.directions is not None
        self.save_button.setEnabled(has_dirs)
        self.reset_button.setEnabled(has_dirs)
        self.export_button.setEnabled(self.frames is not None and len(self.frames) > 0)

    # ---- requests ---------------------------------------------------------------------

    def refresh(self) -> str:
        """Render the page (interactive: a newer page or ψ replaces this one)."""
        if not self.model:
            return ""
        job_id = self._send("grid", self._grid_job)
        if self.pins:
            self.request_edit()
        return job_id

    def _send(self, purpose: str, make_job: Any) -> str:
        return self.sender.send(purpose, make_job)

    def _grid_job(self) -> GanSample:
        return GanSample(model=self.model, seeds=self.seeds(), truncation=self.truncation, z_dim=self.z_dim())

    def amounts(self) -> tuple[float, ...]:
        return tuple(row.slider.value() for row in self.rows)

    def request_edit(self) -> str:
        if not self.pins or not self.model:
            return ""
        return self._send("edit", self._edit_job)

    def _edit_job(self) -> GanEdit | None:
        if not self.pins or not self.model:
            return None
        d = self.directions
        return GanEdit(
            model=self.model,
            seed=self.pins[-1],
            truncation=self.truncation,
            directions=d.vectors if d is not None else (),
            stds=d.stds if d is not None else (),
            amounts=self.amounts() if d is not None else (),
            z_dim=self.z_dim(),
        )

    def compute_directions(self) -> str:
        job = GanDirections(
            model=self.model,
            source=str(self.source_box.currentData()),
            count=self.count_box.value(),
            samples=self.pca_samples,
            z_dim=self.z_dim(),
        )
        self.message.notice(["Computing PCA directions…"])
        return self._track(self.bridge.submit(job), "directions")

    def interpolate_pins(self) -> str:
        if len(self.pins) != 2:
            self._error("Pin two tiles (A and B) to interpolate between them.")
            return ""
        job = GanInterpolate(
            model=self.model, seed_a=self.pins[0], seed_b=self.pins[1], frames=self.frames_box.value(),
            truncation=self.truncation, z_dim=self.z_dim(),
        )
        return self._track(self.bridge.submit(job), "frames")

    def random_walk(self) -> str:
        seed = self.pins[-1] if self.pins else self.start_seed
        job = GanWalk(model=self.model, seed=seed, frames=self.frames_box.value(), truncation=self.truncation, z_dim=self.z_dim())
        return self._track(self.bridge.submit(job), "frames")

    def export_page(self, path: str) -> str:
        if self.page is None:
            self._error("Nothing to export yet: the page has not rendered.")
            return ""
        job = ExportFrames(frames=tuple(self.page.frames), path=path, columns=self.grid.columns)
        return self._track(self.bridge.submit(job), "export")

    def export_frames(self, path: str) -> str:
        if self.frames is None or not len(self.frames):
            self._error("Nothing to export yet: make a slerp or a walk first.")
            return ""
        columns = 0 if Path(path).suffix.lower() != ".png" else min(len(self.frames), 8)
        job = ExportFrames(frames=tuple(self.frames.frames), path=path, fps=float(self.player.fps.value()), columns=columns)
        return self._track(self.bridge.submit(job), "export")

    def _export_dialog(self, suffix: str, page: bool = False) -> None:
        from PySide6.QtWidgets import QFileDialog

        folder = Path(self.settings.resolved_outputs_dir()) if hasattr(self.settings, "resolved_outputs_dir") else Path.home()
        name = f"gan-seeds-{self.start_seed}" if page else f"gan-{self.pins[0] if self.pins else self.start_seed}"
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(folder / f"{name}{suffix}"), f"*{suffix}")
        if path:
            if not path.lower().endswith(suffix):
                path += suffix
            (self.export_page if page else self.export_frames)(path)

    # ---- directions ------------------------------------------------------------------------

    def _set_directions(self, directions: Any) -> None:
        for row in self.rows:
            row.setParent(None)
            row.deleteLater()
        self.rows = []
        self.directions = directions
        if directions is not None:
            explained = directions.explained or (0.0,) * len(directions.names)
            for name, share in zip(directions.names, explained, strict=True):
                row = DirectionRow(name, share)
                row.changed.connect(self.request_edit)
                self.rows_layout.insertWidget(self.rows_layout.count() - 1, row)
                self.rows.append(row)
        self._update_buttons()

    def reset_sliders(self) -> None:
        for row in self.rows:
            row.slider.blockSignals(True)
            row.slider.setValue(0.0)
            row.slider.blockSignals(False)
        self.request_edit()

    def named_directions(self) -> Any:
        d = self.directions
        if d is None:
            return None
        for i, row in enumerate(self.rows):
            d = d.renamed(i, row.name.text())
        return d

    def directions_path(self) -> Path:
        name = Path(self.model).stem if Path(self.model).suffix else Path(self.model).name
        return directions_dir() / f"{name or 'generator'}.json"

    def save_directions(self, path: str | None = None) -> Path | None:
        from studio.core.gan import save_directions

        d = self.named_directions()
        if d is None:
            self._error("Compute or load directions first.")
            return None
        target = Path(path) if path else self.directions_path()
        try:
            saved = save_directions(d, target)
        except OSError as exc:
            self._error(f"Cannot save the directions to {target}: {exc.strerror or exc}.")
            return None
        self.directions = d
        self.message.notice([f"Saved {len(d.names)} directions to {saved}."])
        return saved

    def load_directions(self, path: str) -> bool:
        from studio.core.gan import load_directions

        try:
            d = load_directions(path)
        except UserError as exc:
            self._error(exc.message)
            return False
        self._set_directions(d)
        self.message.notice([f"Loaded {len(d.names)} directions from {Path(path).name}."])
        self.directionsShown.emit(d)
        self.request_edit()
        return True

    def _autoload_directions(self) -> None:
        path = self.directions_path()
        if path.is_file():
            self.load_directions(str(path))

    def _load_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Load directions", str(directions_dir()), "Directions (*.json)")
        if path:
            self.load_directions(path)

    # ---- engine events -----------------------------------------------------------------------

    def _show(self, purpose: str, result: object) -> None:
        if purpose == "grid":
            self.page = result
            self.grid.set_tiles(list(result.frames), [f"seed {label}" for label in result.labels])
            self._show_pins()
            if result.notices:
                self.message.notice(result.notices)
            elif self.message.kind == "error":
                self.message.clear_message()
            self.gridShown.emit(result)
        elif purpose == "edit":
            self.edited = result
            shift = ", ".join(f"{a:+.1f}" for a in result.amounts if a) or "unedited"
            self.pinned_view.set_image(result.image, f"seed {result.seed} · ψ {result.truncation:.2f} · {shift}")
            self.editShown.emit(result)
        elif purpose == "directions":
            self._set_directions(result)
            lines = [f"{len(result.names)} directions over {result.source}; slide them to edit the pinned sample."]
            self.message.notice(list(result.notices) + lines)
            self.directionsShown.emit(result)
            self.request_edit()
        elif purpose == "frames":
            self.frames = result
            self.side_tabs.setCurrentIndex(1)
            self.player.set_frames(list(result.frames))
            self._update_buttons()
            self.framesShown.emit(result)
        elif purpose == "export":
            self.message.notice([f"Exported {result}."])
            self.exported.emit(str(result))

    def _progress(self, purpose: str, step: int, total: int) -> None:
        if purpose == "directions":
            self.message.notice([f"Computing PCA directions… {step}/{total} samples"])
