"""The VAE pane: interpolate between two images in a VAE's latent space, sample
the prior, draw the latent map, and check reconstructions.

Endpoints are image files (picked, dropped, or from the gallery) or prior
samples. Scrubbing and clicking the map are interactive requests (latest-only),
everything else is a batch job; every result arrives through the bridge.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.core.jobs import (
    ExportFrames,
    VaeDecodePoint,
    VaeInterpolate,
    VaeLatentMap,
    VaePriorGrid,
    VaeReconstruct,
    VaeScrub,
)
from studio.ui.panes.latent_pane import LatentPane
from studio.ui.widgets.image_view import ImageView
from studio.ui.widgets.latent_views import (
    EndpointSlot,
    ExportButton,
    FramePlayer,
    GalleryPicker,
    LatentMapView,
    MessageLine,
    ModelPicker,
    TileGrid,
    WrapLabel,
    accept_file_drops,
    local_paths,
)

VAE_KINDS = ("autoencoder-kl", "vae-2d", "diffusers-pipeline")


class DropList(QListWidget):
    """A list of image paths that takes files dropped on it."""

    pathsDropped = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setDragDropMode(QListWidget.DragDropMode.DropOnly)

    def showEvent(self, event: Any) -> None:
        accept_file_drops(self)
        super().showEvent(event)

    def paths(self) -> tuple[str, ...]:
        return tuple(str(self.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.count()))

    def add_path(self, path: str) -> None:
        self.addItem(Path(path).name if not path.startswith("prior:") else path)
        self.item(self.count() - 1).setData(Qt.ItemDataRole.UserRole, path)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            for p in paths:
                self.add_path(p)
            self.pathsDropped.emit(paths)


class VaePane(LatentPane):
    stripShown = Signal(object)  # Frames
    scrubShown = Signal(object)  # Frame
    priorShown = Signal(object)  # Frames
    mapShown = Signal(object)  # LatentMap
    pointShown = Signal(object)  # Frame
    reconstructionShown = Signal(object)  # Reconstruction

    def __init__(self, bridge: Any, settings: Any, parent: QWidget | None = None) -> None:
        super().__init__(bridge, settings, parent)
        self.strip: Any = None
        self.prior: Any = None
        self.map: Any = None
        self.reconstruction: Any = None
        self._scrub_t = 0.0
        self._point = (0.0, 0.0)
        self._build()

    def _outputs(self) -> Any:
        getter = getattr(self.settings, "resolved_outputs_dir", None)
        return getter() if getter else None

    # ---- layout -------------------------------------------------------------------------

    def _build(self) -> None:
        self.picker = ModelPicker(self.bridge, self.settings, VAE_KINDS, "shapes-vae")
        self.picker.modelChanged.connect(self._model_changed)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_interpolate(), "Interpolate")
        self.tabs.addTab(self._build_prior(), "Prior samples")
        self.tabs.addTab(self._build_map(), "Latent map")
        self.tabs.addTab(self._build_reconstruct(), "Reconstruct")
        self.message = MessageLine()
        layout = QVBoxLayout(self)
        layout.addWidget(self.picker)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.message)

    def _build_interpolate(self) -> QWidget:
        folder = self._outputs()
        self.slot_a = EndpointSlot("A", folder)
        self.slot_b = EndpointSlot("B", folder)
        self.steps_box = QSpinBox()
        self.steps_box.setRange(2, 256)
        self.steps_box.setValue(16)
        self.mode_box = QComboBox()
        self.mode_box.addItem("slerp", "slerp")
        self.mode_box.addItem("lerp", "lerp")
        self.interpolate_button = QPushButton("Interpolate")
        self.export_button = ExportButton()
        self.export_button.setEnabled(False)
        form = QGridLayout()
        form.addWidget(QLabel("Steps"), 0, 0)
        form.addWidget(self.steps_box, 0, 1)
        form.addWidget(QLabel("Mode"), 1, 0)
        form.addWidget(self.mode_box, 1, 1)
        form.addWidget(self.interpolate_button, 2, 0, 1, 2)
        form.addWidget(self.export_button, 3, 0, 1, 2)
        ends = QVBoxLayout()
        ends.addWidget(self.slot_a, 1)
        ends.addWidget(self.slot_b, 1)
        ends.addLayout(form)
        left = QWidget()
        left.setLayout(ends)
        left.setMaximumWidth(280)

        self.player = FramePlayer("Pick two endpoints: images (drop them here) or prior samples")
        self.strip_grid = TileGrid(columns=16)
        self.strip_grid.setMinimumHeight(70)
        self.strip_grid.setMaximumHeight(110)
        self.strip_grid.placeholder = "The decoded strip appears here."
        right = QVBoxLayout()
        right.addWidget(self.player, 1)
        right.addWidget(self.strip_grid)
        right_box = QWidget()
        right_box.setLayout(right)

        split = QWidget()
        row = QHBoxLayout(split)
        row.addWidget(left)
        row.addWidget(right_box, 1)

        self.slot_a.changed.connect(self._endpoint_changed)
        self.slot_b.changed.connect(self._endpoint_changed)
        self.interpolate_button.clicked.connect(self.interpolate)
        self.mode_box.currentIndexChanged.connect(lambda *_: self._endpoint_changed())
        self.player.scrubbed.connect(self.scrub)
        self.strip_grid.tileClicked.connect(self.player.show_index)
        self.export_button.exportRequested.connect(self._export_dialog)
        return split

    def _build_prior(self) -> QWidget:
        self.prior_seed = QSpinBox()
        self.prior_seed.setRange(0, 2**31 - 1)
        self.prior_seed.setPrefix("seed ")
        self.prior_count = QSpinBox()
        self.prior_count.setRange(1, 64)
        self.prior_count.setValue(16)
        self.prior_button = QPushButton("Sample the prior")
        self.use_a = QPushButton("Use as A")
        self.use_b = QPushButton("Use as B")
        self.use_a.setEnabled(False)
        self.use_b.setEnabled(False)
        self.prior_export = ExportButton(formats=(".png",))
        self.prior_export.setEnabled(False)
        row = QHBoxLayout()
        for w in (self.prior_seed, QLabel("samples"), self.prior_count, self.prior_button, self.use_a, self.use_b):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(self.prior_export)
        self.prior_grid = TileGrid(columns=8)
        self.prior_grid.placeholder = "Samples of N(0, I), decoded."
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.addLayout(row)
        layout.addWidget(self.prior_grid, 1)
        self.prior_button.clicked.connect(self.sample_prior)
        self.prior_grid.tileClicked.connect(self._prior_clicked)
        self.use_a.clicked.connect(lambda: self._use_prior(self.slot_a))
        self.use_b.clicked.connect(lambda: self._use_prior(self.slot_b))
        self.prior_export.exportRequested.connect(lambda suffix: self._export_dialog(suffix, prior=True))
        return box

    def _build_map(self) -> QWidget:
        self.map_list = DropList()
        self.map_list.setMaximumWidth(260)
        self.map_list.setToolTip("Images to mark on the map (drop files here). A latent larger than "
                                 "2-D needs exactly three: they span the plane.")
        add_file = QPushButton("Add file…")
        add_gallery = QPushButton("Gallery…")
        add_ends = QPushButton("Add A and B")
        clear = QPushButton("Clear")
        self.map_grid = QSpinBox()
        self.map_grid.setRange(2, 32)
        self.map_grid.setValue(12)
        self.map_extent = QDoubleSpinBox()
        self.map_extent.setRange(0.0, 10.0)
        self.map_extent.setSingleStep(0.5)
        self.map_extent.setSpecialValueText("auto")
        self.map_extent.setValue(0.0)
        self.map_extent.setToolTip("Half-width of the 2-D latent plane shown; auto: where the training images lie")
        self.map_button = QPushButton("Draw map")
        self.map_hint = WrapLabel("")
        side = QGridLayout()
        side.addWidget(self.map_list, 0, 0, 1, 2)
        side.addWidget(add_file, 1, 0)
        side.addWidget(add_gallery, 1, 1)
        side.addWidget(add_ends, 2, 0)
        side.addWidget(clear, 2, 1)
        side.addWidget(QLabel("Tiles a side"), 3, 0)
        side.addWidget(self.map_grid, 3, 1)
        side.addWidget(QLabel("Extent (2-D)"), 4, 0)
        side.addWidget(self.map_extent, 4, 1)
        side.addWidget(self.map_button, 5, 0, 1, 2)
        side.addWidget(self.map_hint, 6, 0, 1, 2)
        self.point_view = ImageView("Click the map to decode that point")
        self.point_view.setMaximumWidth(260)
        self.point_view.setMinimumHeight(160)
        side.addWidget(self.point_view, 7, 0, 1, 2)
        side_box = QWidget()
        side_box.setLayout(side)
        side_box.setMaximumWidth(280)
        self.map_view = LatentMapView()
        box = QWidget()
        row = QHBoxLayout(box)
        row.addWidget(side_box)
        row.addWidget(self.map_view, 1)
        add_file.clicked.connect(self._map_add_file)
        add_gallery.clicked.connect(self._map_add_gallery)
        add_ends.clicked.connect(self._map_add_ends)
        clear.clicked.connect(self.map_list.clear)
        self.map_button.clicked.connect(self.draw_map)
        self.map_view.pointClicked.connect(self.decode_point)
        return box

    def _build_reconstruct(self) -> QWidget:
        self.recon_slot = EndpointSlot("Image", self._outputs())
        for w in (self.recon_slot.prior_seed, self.recon_slot.prior_button):
            w.hide()
        self.recon_slot.setMaximumWidth(260)
        self.recon_button = QPushButton("Reconstruct")
        self.original_view = ImageView("Original")
        self.recon_view = ImageView("Reconstruction")
        self.psnr_label = QLabel("")
        self.psnr_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = self.psnr_label.font()
        font.setPointSize(font.pointSize() + 3)
        self.psnr_label.setFont(font)
        side = QVBoxLayout()
        side.addWidget(self.recon_slot, 1)
        side.addWidget(self.recon_button)
        views = QHBoxLayout()
        views.addWidget(self.original_view, 1)
        views.addWidget(self.recon_view, 1)
        right = QVBoxLayout()
        right.addLayout(views, 1)
        right.addWidget(self.psnr_label)
        box = QWidget()
        layout = QHBoxLayout(box)
        layout.addLayout(side)
        layout.addLayout(right, 1)
        self.recon_button.clicked.connect(self.reconstruct)
        self.recon_slot.changed.connect(lambda *_: self.reconstruct())
        return box

    # ---- requests ---------------------------------------------------------------------------

    @property
    def model(self) -> str:
        return self.picker.current()

    def _model_changed(self, _model: str) -> None:
        self.message.clear_message()
        self._shown.clear()
        self.map_view.clear()
        self.point_view.clear()
        self.sample_prior()
        if self.slot_a.source and self.slot_b.source:
            self.interpolate()
        if self.recon_slot.source:
            self.reconstruct()

    def _have_model(self) -> bool:
        """Whether a model is chosen; says so if not, unless the list is still arriving
        (its first model then re-runs what waits for it)."""
        if self.model:
            return True
        if not self.picker.listing:
            self._error("No VAE model: pick one above, or load a folder with Open….")
        return False

    def _endpoint_changed(self, *_: Any) -> None:
        if self.slot_a.source and self.slot_b.source:
            self.interpolate()

    def interpolate(self) -> str:
        a, b = self.slot_a.source, self.slot_b.source
        if not (a and b):
            self._error("Pick both endpoints first (an image or a prior sample each).")
            return ""
        if not self._have_model():
            return ""
        job = VaeInterpolate(model=self.model, a=a, b=b, steps=self.steps_box.value(), mode=str(self.mode_box.currentData()))
        self.message.clear_message()
        return self._track(self.bridge.submit(job), "strip")

    def scrub(self, t: float) -> str:
        """Render position t between the endpoints (interactive; a drag renders the newest)."""
        self._scrub_t = float(t)
        return self.sender.send("scrub", self._scrub_job)

    def _scrub_job(self) -> VaeScrub | None:
        a, b = self.slot_a.source, self.slot_b.source
        if not (a and b):
            return None
        return VaeScrub(model=self.model, a=a, b=b, t=self._scrub_t, mode=str(self.mode_box.currentData()))

    def sample_prior(self) -> str:
        if not self.model:
            return ""
        job = VaePriorGrid(model=self.model, seed=self.prior_seed.value(), count=self.prior_count.value())
        return self._track(self.bridge.interactive(job), "prior")

    def _prior_clicked(self, index: int) -> None:
        self.use_a.setEnabled(True)
        self.use_b.setEnabled(True)

    def _use_prior(self, slot: EndpointSlot) -> None:
        i = self.prior_grid.current
        if self.prior is None or not 0 <= i < len(self.prior):
            return
        slot.set_source(self.prior.params[i]["endpoint"], self.prior.frames[i])
        self.tabs.setCurrentIndex(0)

    def draw_map(self) -> str:
        if not self._have_model():
            return ""
        job = VaeLatentMap(
            model=self.model, images=self.map_list.paths(), grid=self.map_grid.value(), extent=self.map_extent.value()
        )
        self.map_hint.setText("Drawing…")
        return self._track(self.bridge.submit(job), "map")

    def decode_point(self, x: float, y: float) -> str:
        self._point = (float(x), float(y))
        return self.sender.send("point", self._point_job)

    def _point_job(self) -> VaeDecodePoint:
        images = self.map.request.images if self.map is not None and not self.map.two_d else ()
        return VaeDecodePoint(model=self.model, images=images, x=self._point[0], y=self._point[1])

    def _map_add_file(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        paths, _ = QFileDialog.getOpenFileNames(self, "Images to mark", str(self._outputs() or ""), "Images (*.png *.jpg *.jpeg *.webp *.bmp)")
        for p in paths:
            self.map_list.add_path(p)

    def _map_add_gallery(self) -> None:
        path = GalleryPicker.choose(self._outputs(), self)
        if path:
            self.map_list.add_path(path)

    def _map_add_ends(self) -> None:
        for slot in (self.slot_a, self.slot_b):
            if slot.source:
                self.map_list.add_path(slot.source)

    def reconstruct(self) -> str:
        if not self.recon_slot.source:
            self._error("Pick an image to reconstruct.")
            return ""
        if not self._have_model():
            return ""
        job = VaeReconstruct(model=self.model, image=self.recon_slot.source)
        return self._track(self.bridge.submit(job), "recon")

    def export_strip(self, path: str) -> str:
        if self.strip is None:
            self._error("Nothing to export yet: interpolate first.")
            return ""
        columns = len(self.strip) if Path(path).suffix.lower() == ".png" else 0
        job = ExportFrames(frames=tuple(self.strip.frames), path=path, fps=float(self.player.fps.value()), columns=columns)
        return self._track(self.bridge.submit(job), "export")

    def export_prior(self, path: str) -> str:
        if self.prior is None:
            self._error("Nothing to export yet: sample the prior first.")
            return ""
        job = ExportFrames(frames=tuple(self.prior.frames), path=path, columns=self.prior_grid.columns)
        return self._track(self.bridge.submit(job), "export")

    def _export_dialog(self, suffix: str, prior: bool = False) -> None:
        from PySide6.QtWidgets import QFileDialog

        folder = Path(self._outputs() or Path.home())
        name = "vae-prior" if prior else "vae-interpolation"
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(folder / f"{name}{suffix}"), f"*{suffix}")
        if path:
            if not path.lower().endswith(suffix):
                path += suffix
            (self.export_prior if prior else self.export_strip)(path)

    # ---- engine events --------------------------------------------------------------------------

    def _show(self, purpose: str, result: object) -> None:
        notices = list(getattr(result, "notices", ()) or ())
        if notices:
            self.message.notice(notices)
        elif self.message.kind == "error" and purpose != "export":
            self.message.clear_message()
        if purpose == "strip":
            self.strip = result
            frames = list(result.frames)
            self.player.set_frames(frames)
            self.strip_grid.columns = len(frames)
            self.strip_grid.set_tiles(frames)
            self.export_button.setEnabled(True)
            self.stripShown.emit(result)
        elif purpose == "scrub":
            self.player.show_image(result.image, f"t={result.params['t']:.3f}")
            self.scrubShown.emit(result)
        elif purpose == "prior":
            self.prior = result
            self.prior_grid.columns = 8 if len(result) > 16 else 4 if len(result) > 4 else len(result)
            self.prior_grid.set_tiles(list(result.frames), list(result.labels))
            self.prior_export.setEnabled(True)
            self.priorShown.emit(result)
        elif purpose == "map":
            self.map = result
            caption = "2-D latent plane" if result.two_d else "plane through the three encodings"
            self.map_view.set_map(result.image, result.grid, result.extent, list(result.markers), caption)
            self.map_hint.setText("Click the map to decode a point.")
            self.mapShown.emit(result)
        elif purpose == "point":
            self.point_view.set_image(result.image, f"({result.params['x']:.2f}, {result.params['y']:.2f})")
            self.pointShown.emit(result)
        elif purpose == "recon":
            self.reconstruction = result
            self.original_view.set_image(result.original, "original")
            self.recon_view.set_image(result.reconstruction, "reconstruction")
            value = "∞" if math.isinf(result.psnr) else f"{result.psnr:.2f}"
            self.psnr_label.setText(f"PSNR {value} dB")
            self.reconstructionShown.emit(result)
        elif purpose == "export":
            self.message.notice([f"Exported {result}."])
            self.exported.emit(str(result))

    def _failed(self, purpose: str) -> None:
        if purpose == "map":
            self.map_hint.setText("")

    def _progress(self, purpose: str, step: int, total: int) -> None:
        if purpose == "map":
            self.map_hint.setText(f"Drawing… {step}/{total} tiles")
