"""Widgets the latent panes share: a tile grid, a frame player, an endpoint slot,
the latent map, an export button and a gallery picker."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QPointF, QRect, QSize, Qt, QTimer, Signal
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPen,
    QPixmap,
)
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio.ui.widgets.image_view import ImageView, to_qimage, untinted_icon

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
PIN_COLOURS = (QColor(255, 176, 32), QColor(64, 196, 255))


def local_paths(mime: Any) -> list[str]:
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []


class _DropRouter(QObject):
    """Gives file drops over a drop target of these panes to that target.

    The main window filters every drag event of the application so that a PNG
    dropped anywhere opens its parameters. Installed after it (event filters run
    newest first), this filter lets a drop on an endpoint slot or the map list go
    where the user aimed it; every other drop continues to the window."""

    _installed: _DropRouter | None = None

    @classmethod
    def ensure(cls) -> None:
        app = QApplication.instance()
        if app is None or cls._installed is not None:
            return
        cls._installed = cls(app)
        app.installEventFilter(cls._installed)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind not in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            return False
        target = watched
        while isinstance(target, QWidget) and not target.property("latentDropTarget"):
            target = target.parentWidget()
        if not isinstance(target, QWidget) or not local_paths(event.mimeData()):  # type: ignore[attr-defined]
            return False
        event.acceptProposedAction()  # type: ignore[attr-defined]
        if kind == QEvent.Type.Drop:
            target.dropEvent(event)  # type: ignore[arg-type]
        return True


def accept_file_drops(widget: QWidget) -> None:
    """Mark `widget` as a drop target for image files (see _DropRouter)."""
    widget.setAcceptDrops(True)
    widget.setProperty("latentDropTarget", True)
    _DropRouter.ensure()


# ---- tiles ---------------------------------------------------------------------------


class TileGrid(QWidget):
    """Images in a grid, each with a caption; click selects, pins are outlined.

    Painted in one pass (no child widgets), so a page of 16 samples re-renders
    at slider speed."""

    tileClicked = Signal(int)
    tileDoubleClicked = Signal(int)

    def __init__(self, columns: int = 4, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = columns
        self._pixmaps: list[QPixmap] = []
        self._captions: list[str] = []
        self.pins: list[int] = []  # indices, in pin order (A, B)
        self.current = -1
        self.placeholder = ""
        self.setMinimumSize(160, 80)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(False)

    def set_tiles(self, images: list[Any], captions: list[str] | None = None) -> None:
        self._pixmaps = [QPixmap.fromImage(to_qimage(im)) for im in images]
        self._captions = list(captions or [""] * len(images))
        self.update()

    def count(self) -> int:
        return len(self._pixmaps)

    def set_pins(self, pins: list[int]) -> None:
        self.pins = list(pins)
        self.update()

    def _layout(self) -> tuple[int, int, int]:
        n = max(1, len(self._pixmaps))
        cols = max(1, min(self.columns, n))
        rows = math.ceil(n / cols)
        caption = 16 if any(self._captions) else 0
        side = max(8, min((self.width() - 4) // cols, (self.height() - 4) // rows - caption))
        return cols, side, caption

    def tile_rect(self, index: int) -> QRect:
        cols, side, caption = self._layout()
        r, c = divmod(index, cols)
        left = max(2, (self.width() - cols * side) // 2)  # centred when height limits the tiles
        return QRect(left + c * side, 2 + r * (side + caption), side, side)

    def index_at(self, x: float, y: float) -> int:
        for i in range(len(self._pixmaps)):
            cell = self.tile_rect(i).adjusted(0, 0, 0, self._layout()[2])
            if cell.contains(int(x), int(y)):
                return i
        return -1

    def sizeHint(self) -> QSize:
        return QSize(420, 420)

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(27, 27, 29))
        if not self._pixmaps:
            painter.setPen(QColor(140, 140, 146))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder)
            return
        _, side, caption = self._layout()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        for i, pm in enumerate(self._pixmaps):
            rect = self.tile_rect(i)
            painter.drawPixmap(rect.adjusted(2, 2, -2, -2), pm)
            if i in self.pins:
                pen = QPen(PIN_COLOURS[self.pins.index(i) % 2], 3)
                painter.setPen(pen)
                painter.drawRect(rect.adjusted(1, 1, -2, -2))
                painter.drawText(rect.adjusted(6, 4, 0, 0), "AB"[self.pins.index(i) % 2])
            elif i == self.current:
                painter.setPen(QPen(QColor(200, 200, 210), 1, Qt.PenStyle.DashLine))
                painter.drawRect(rect.adjusted(1, 1, -2, -2))
            if caption and i < len(self._captions):
                painter.setPen(QColor(200, 200, 206))
                painter.drawText(
                    QRect(rect.x(), rect.bottom(), rect.width(), caption),
                    Qt.AlignmentFlag.AlignCenter,
                    self._captions[i],
                )

    def mousePressEvent(self, event: QMouseEvent) -> None:
        i = self.index_at(event.position().x(), event.position().y())
        if i >= 0 and event.button() == Qt.MouseButton.LeftButton:
            self.current = i
            self.update()
            self.tileClicked.emit(i)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        i = self.index_at(event.position().x(), event.position().y())
        if i >= 0:
            self.tileDoubleClicked.emit(i)


# ---- playing frames -------------------------------------------------------------------------


class FramePlayer(QWidget):
    """A view that plays frames as a loop; its slider shows the position.

    The slider's `scrubbed` signal reports a position in [0, 1] so a pane can
    render in-between frames through the interactive lane."""

    scrubbed = Signal(float)

    STEPS = 1000

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.frames: list[Any] = []
        self.view = ImageView(placeholder)
        self.play_button = QPushButton("Play")
        self.play_button.setCheckable(True)
        self.play_button.setEnabled(False)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, self.STEPS)
        self.slider.setEnabled(False)
        self.fps = QSpinBox()
        self.fps.setRange(1, 60)
        self.fps.setValue(12)
        self.fps.setSuffix(" fps")
        self.position_label = QLabel("")
        self.position_label.setMinimumWidth(56)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._advance)
        self._index = 0
        controls = QHBoxLayout()
        controls.addWidget(self.play_button)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.position_label)
        controls.addWidget(self.fps)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view, 1)
        layout.addLayout(controls)
        self.play_button.toggled.connect(self._toggle)
        self.slider.valueChanged.connect(self._slid)
        self.fps.valueChanged.connect(lambda v: self._timer.setInterval(int(1000 / v)))

    def set_frames(self, frames: list[Any]) -> None:
        self.frames = list(frames)
        has = bool(self.frames)
        self.play_button.setEnabled(len(self.frames) > 1)
        self.slider.setEnabled(has)
        if not has:
            self.play_button.setChecked(False)
            self.view.clear()
            return
        self.show_index(0)

    def show_index(self, index: int) -> None:
        if not self.frames:
            return
        self._index = index % len(self.frames)
        n = len(self.frames)
        self.view.set_image(self.frames[self._index], f"frame {self._index + 1}/{n}")
        self.slider.blockSignals(True)
        self.slider.setValue(round(self._index / max(1, n - 1) * self.STEPS))
        self.slider.blockSignals(False)
        self.position_label.setText(f"t={self._index / max(1, n - 1):.2f}")

    def show_image(self, image: Any, caption: str) -> None:
        self.view.set_image(image, caption)

    @property
    def playing(self) -> bool:
        return self._timer.isActive()

    def _toggle(self, on: bool) -> None:
        self.play_button.setText("Pause" if on else "Play")
        if on and len(self.frames) > 1:
            self._timer.start(int(1000 / self.fps.value()))
        else:
            self._timer.stop()

    def _advance(self) -> None:
        self.show_index(self._index + 1)

    def _slid(self, value: int) -> None:
        if self.play_button.isChecked():
            self.play_button.setChecked(False)
        t = value / self.STEPS
        self.position_label.setText(f"t={t:.2f}")
        self.scrubbed.emit(t)


# ---- endpoints ---------------------------------------------------------------------------------


class EndpointSlot(QFrame):
    """One endpoint: an image file (button, drop, or gallery) or a prior sample by seed."""

    changed = Signal(str)

    def __init__(self, title: str, gallery_folder: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.source = ""
        self.gallery_folder = gallery_folder
        self.title = QLabel(f"<b>{title}</b>")
        self.thumb = ImageView("Drop an image here")
        self.thumb.setMinimumSize(72, 72)
        self.file_button = QPushButton("File…")
        self.gallery_button = QPushButton("Gallery…")
        self.prior_seed = QSpinBox()
        self.prior_seed.setRange(0, 2**31 - 1)
        self.prior_seed.setPrefix("seed ")
        self.prior_button = QPushButton("Prior")
        self.prior_button.setToolTip("A random sample of the prior N(0, I) with this seed")
        buttons = QHBoxLayout()
        buttons.addWidget(self.file_button)
        buttons.addWidget(self.gallery_button)
        prior = QHBoxLayout()
        prior.addWidget(self.prior_seed, 1)
        prior.addWidget(self.prior_button)
        self.title.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.thumb, 1)
        layout.addLayout(buttons)
        layout.addLayout(prior)
        self.file_button.clicked.connect(self._pick_file)
        self.gallery_button.clicked.connect(self._pick_gallery)
        self.prior_button.clicked.connect(lambda: self.set_source(f"prior:{self.prior_seed.value()}"))

    def set_source(self, source: str, thumbnail: Any = None) -> None:
        self.source = source
        if source.startswith("prior:"):
            self.thumb.set_placeholder(f"prior sample\nseed {source[6:]}")
            self.thumb.set_image(thumbnail, f"prior seed {source[6:]}")
        else:
            self.thumb.set_image(_thumbnail(source), Path(source).name)
        self.changed.emit(source)

    def _pick_file(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(
            self, "Choose an image", str(self.gallery_folder or ""), "Images (*.png *.jpg *.jpeg *.webp *.bmp)"
        )
        if path:
            self.set_source(path)

    def _pick_gallery(self) -> None:
        path = GalleryPicker.choose(self.gallery_folder, self)
        if path:
            self.set_source(path)

    def showEvent(self, event: Any) -> None:
        # After the main window's own drop filter exists (see _DropRouter).
        accept_file_drops(self)
        super().showEvent(event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_paths(event.mimeData())
        if paths:
            event.acceptProposedAction()
            self.set_source(paths[0])


def _thumbnail(path: str) -> Any:
    """A small preview, or None when the file is not an image (the job will say why)."""
    from PySide6.QtGui import QImage

    image = QImage(path)
    return None if image.isNull() else image.scaled(128, 128, Qt.AspectRatioMode.KeepAspectRatio)


class GalleryPicker(QDialog):
    """The newest images of the outputs folder, as thumbnails to pick from."""

    def __init__(self, folder: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Pick an image from the gallery")
        self.list = QListWidget()
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setIconSize(QSize(96, 96))
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setMinimumSize(520, 360)
        for path in gallery_images(folder):
            item = QListWidgetItem(untinted_icon(str(path)), path.name)
            item.setData(Qt.ItemDataRole.UserRole, str(path))
            self.list.addItem(item)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.list.itemDoubleClicked.connect(lambda *_: self.accept())
        layout = QVBoxLayout(self)
        if self.list.count() == 0:
            layout.addWidget(QLabel(f"No images in {folder} yet: generate some in the Image pane."))
        layout.addWidget(self.list)
        layout.addWidget(buttons)

    def selected(self) -> str:
        item = self.list.currentItem()
        return str(item.data(Qt.ItemDataRole.UserRole)) if item is not None else ""

    @classmethod
    def choose(cls, folder: Any, parent: QWidget | None = None) -> str:
        dialog = cls(folder, parent)
        return dialog.selected() if dialog.exec() == QDialog.DialogCode.Accepted else ""


def gallery_images(folder: Any, limit: int = 120) -> list[Path]:
    """Images of the outputs folder, newest first (the gallery index, else the files)."""
    if not folder:
        return []
    root = Path(folder)
    try:
        from studio.core.gallery import gallery_for

        items = gallery_for(root).list_items(limit=limit)
        found = [item.path for item in items if Path(item.path).is_file()]
        if found:
            return found
    except Exception:  # a locked or missing index still leaves the files to list
        pass
    if not root.is_dir():
        return []
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)[:limit]


# ---- the latent map --------------------------------------------------------------------------------


class LatentMapView(ImageView):
    """A decoded grid over a latent plane; the chosen images are marked and a click
    reports the plane coordinates under the cursor."""

    pointClicked = Signal(float, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Draw a map to see the latent plane", parent)
        self.extent = (-1.0, 1.0, -1.0, 1.0)
        self.grid = 1
        self.markers: list[tuple[float, float, str]] = []
        self.cursor_point: tuple[float, float] | None = None
        self.setCursor(Qt.CursorShape.CrossCursor)

    def set_map(
        self,
        image: Any,
        grid: int,
        extent: tuple[float, float, float, float],
        markers: list[tuple[float, float, str]],
        caption: str,
    ) -> None:
        self.grid = max(1, grid)
        self.extent = tuple(extent)  # type: ignore[assignment]
        self.markers = list(markers)
        self.cursor_point = None
        self.set_image(image, caption)

    def to_plane(self, x: float, y: float) -> tuple[float, float] | None:
        rect = self.target_rect()
        if rect.isNull() or not rect.contains(int(x), int(y)):
            return None
        x0, x1, y0, y1 = self.extent
        # Tile centres sit at the grid coordinates, so the image spans half a tile more.
        n = self._grid()
        fx = (x - rect.x()) / rect.width()
        fy = (y - rect.y()) / rect.height()
        step_x = (x1 - x0) / max(1, n - 1)
        step_y = (y1 - y0) / max(1, n - 1)
        return x0 - step_x / 2 + fx * step_x * n, y1 + step_y / 2 - fy * step_y * n

    def to_widget(self, px: float, py: float) -> QPointF:
        rect = self.target_rect()
        x0, x1, y0, y1 = self.extent
        n = self._grid()
        step_x = (x1 - x0) / max(1, n - 1)
        step_y = (y1 - y0) / max(1, n - 1)
        fx = (px - (x0 - step_x / 2)) / (step_x * n)
        fy = ((y1 + step_y / 2) - py) / (step_y * n)
        return QPointF(rect.x() + fx * rect.width(), rect.y() + fy * rect.height())

    def _grid(self) -> int:
        return self.grid

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.pixmap().isNull():
            return
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for i, (x, y, label) in enumerate(self.markers):
            p = self.to_widget(x, y)
            painter.setPen(QPen(QColor(0, 0, 0), 4))
            painter.drawEllipse(p, 6, 6)
            painter.setPen(QPen(PIN_COLOURS[i % 2] if i < 2 else QColor(120, 255, 120), 2))
            painter.drawEllipse(p, 6, 6)
            painter.drawText(p + QPointF(9, -6), label)
        if self.cursor_point is not None:
            p = self.to_widget(*self.cursor_point)
            painter.setPen(QPen(QColor(255, 255, 255), 1))
            painter.drawLine(p + QPointF(-8, 0), p + QPointF(8, 0))
            painter.drawLine(p + QPointF(0, -8), p + QPointF(0, 8))

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._pick(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._pick(event)

    def _pick(self, event: QMouseEvent) -> None:
        point = self.to_plane(event.position().x(), event.position().y())
        if point is not None:
            self.cursor_point = point
            self.update()
            self.pointClicked.emit(*point)


# ---- export -------------------------------------------------------------------------------------------


class ExportButton(QToolButton):
    """Export… with a menu of formats; emits the chosen suffix."""

    exportRequested = Signal(str)

    FORMATS = (
        (".png", "PNG strip / grid"),
        (".gif", "GIF animation"),
        (".webp", "WebP animation"),
        (".mp4", "MP4 video"),
    )

    def __init__(self, parent: QWidget | None = None, formats: tuple[str, ...] | None = None) -> None:
        super().__init__(parent)
        self.setText("Export")
        self.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self)
        for suffix, label in self.FORMATS:
            if formats is None or suffix in formats:
                action = menu.addAction(label)
                action.triggered.connect(lambda _=False, s=suffix: self.exportRequested.emit(s))
        self.setMenu(menu)


# ---- model picker and messages ---------------------------------------------------------------------------


class ModelPicker(QWidget):
    """Models of some kinds, found on the inference thread, plus any folder or file the
    user opens. `modelChanged` carries the picker name or path to put in requests."""

    modelChanged = Signal(str)
    modelsListed = Signal(list)

    def __init__(self, bridge: Any, settings: Any, kinds: tuple[str, ...], default: str,
                 open_files: bool = False, parent: QWidget | None = None) -> None:
        from PySide6.QtWidgets import QComboBox

        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.kinds = kinds
        self.default = default
        self.open_files = open_files
        self.box = QComboBox()
        self.box.setMinimumContentsLength(16)
        self.box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Use a model folder" + (" or a TorchScript file" if open_files else ""))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Model"))
        layout.addWidget(self.box, 1)
        layout.addWidget(self.open_button)
        self._job = ""
        self.box.currentIndexChanged.connect(lambda *_: self.modelChanged.emit(self.current()))
        self.open_button.clicked.connect(self._open)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(lambda job_id, *_: self._list_ended(job_id))
        bridge.cancelled.connect(self._list_ended)
        self._listed = False

    def showEvent(self, event: Any) -> None:
        # Models are listed (and the first one loaded) when the pane is first
        # opened, so a window that never shows it spends nothing on it.
        if not self._listed:
            self._listed = True
            self.refresh()
        super().showEvent(event)

    def current(self) -> str:
        data = self.box.currentData()
        return str(data) if data else self.box.currentText()

    @property
    def listing(self) -> bool:
        """True until the first list of models has arrived (modelChanged follows it)."""
        return not self._listed or bool(self._job)

    def refresh(self) -> None:
        kinds, settings = self.kinds, self.settings

        def fn(ctx: Any) -> list:
            from studio.core.registry import discover

            return discover(settings, kinds=kinds)

        # A lane of its own: listing models is no queue entry and never waits
        # behind an image job (it is served between steps).
        self._job = self.bridge.interactive(_list_job(self.kinds)(fn=fn))

    def add_path(self, path: str, select: bool = True) -> None:
        index = self.box.findData(path)
        if index < 0:
            self.box.addItem(Path(path).name + " (opened)", path)
            index = self.box.count() - 1
        if select:
            self.box.setCurrentIndex(index)

    def _open(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        if self.open_files:
            path, _ = QFileDialog.getOpenFileName(self, "Open a TorchScript generator", "", "TorchScript (*.pt *.ts *.pth *.torchscript);;All files (*)")
            if not path:
                path = QFileDialog.getExistingDirectory(self, "Or open a model folder")
        else:
            path = QFileDialog.getExistingDirectory(self, "Open a model folder")
        if path:
            self.add_path(path)

    def _list_ended(self, job_id: str) -> None:
        if job_id == self._job:
            self._job = ""

    def _on_finished(self, job_id: str, result: object) -> None:
        if job_id != self._job or not isinstance(result, list):
            return
        self._job = ""
        previous = self.current()
        self.box.blockSignals(True)
        extra = [(self.box.itemText(i), self.box.itemData(i)) for i in range(self.box.count()) if str(self.box.itemText(i)).endswith("(opened)")]
        self.box.clear()
        for entry in result:
            self.box.addItem(entry.label, entry.name if entry.source == "bundled" else str(entry.path))
        for text, data in extra:
            self.box.addItem(text, data)
        wanted = previous or self.default
        index = max(0, self.box.findData(wanted))
        self.box.setCurrentIndex(index)
        self.box.blockSignals(False)
        self.modelsListed.emit(result)
        if self.box.count() and self.current() != previous:
            self.modelChanged.emit(self.current())


_LIST_JOBS: dict[tuple[str, ...], type] = {}


def _list_job(kinds: tuple[str, ...]) -> type:
    """A CallJob class on the interactive lane "models:<kinds>"."""
    from studio.core.engine import CallJob

    if kinds not in _LIST_JOBS:
        _LIST_JOBS[kinds] = type("ListModels", (CallJob,), {"lane": "models:" + ",".join(kinds)})
    return _LIST_JOBS[kinds]


class WrapLabel(QLabel):
    """A word-wrapped label that does not report height-for-width.

    A wrapped QLabel makes its layout height-for-width, and a resizable scroll
    area (the window's pane holder) then sizes the whole pane to its preferred
    height and scrolls; this label takes the height of its text instead."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self.setWordWrap(True)

    def hasHeightForWidth(self) -> bool:
        return False

    def minimumSizeHint(self) -> QSize:
        return QSize(40, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:
        width = max(200, self.width())
        height = self.fontMetrics().boundingRect(0, 0, width, 10_000, Qt.TextFlag.TextWordWrap, self.text()).height()
        return QSize(width, max(height, self.fontMetrics().height()) + 4)

    def setText(self, text: str) -> None:
        super().setText(text)
        self.updateGeometry()


class MessageLine(WrapLabel):
    """One line under a pane: an error (red) or notices (muted); never a modal box."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.kind = ""

    def error(self, message: str) -> None:
        self.kind = "error"
        self.setStyleSheet("color: #ff6b6b;")
        self.setText(message)

    def notice(self, lines: Any) -> None:
        lines = [str(x) for x in lines if x]
        self.kind = "notice" if lines else ""
        self.setStyleSheet("color: #b0b0b8;")
        self.setText("\n".join(lines))

    def clear_message(self) -> None:
        self.kind = ""
        self.setText("")


class LatestSender:
    """At most one interactive request in flight per purpose; while it renders, newer
    ones are coalesced into one, built from the widgets' state when it is sent.

    The engine drops a result that a newer request made stale, so a drag that sends
    faster than the model renders would otherwise never show a frame until it stops;
    gating here keeps every render useful and the display moving at the model's pace."""

    def __init__(self, bridge: Any, on_sent: Any = None) -> None:
        self.bridge = bridge
        self.on_sent = on_sent  # called as on_sent(job_id, purpose) for every request sent
        self.inflight: dict[str, str] = {}
        self.pending: dict[str, Any] = {}

    def send(self, purpose: str, make_job: Any) -> str:
        if purpose in self.inflight:
            self.pending[purpose] = make_job
            return ""
        job = make_job()
        if job is None:
            return ""
        job_id = self.bridge.interactive(job)
        self.inflight[purpose] = job_id
        if self.on_sent is not None:
            self.on_sent(job_id, purpose)
        return job_id

    def done(self, job_id: str) -> str:
        """After a job ended: send what waited behind it; the new job id, or ""."""
        for purpose, running in list(self.inflight.items()):
            if running == job_id:
                del self.inflight[purpose]
                make_job = self.pending.pop(purpose, None)
                return self.send(purpose, make_job) if make_job is not None else ""
        return ""

    def purpose_of(self, job_id: str) -> str:
        for purpose, running in self.inflight.items():
            if running == job_id:
                return purpose
        return ""
