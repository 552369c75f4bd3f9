"""The Gallery pane: every saved image, newest first, from the outputs folder's index."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QImageReader, QKeySequence, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.core.errors import UserError
from studio.core.gallery import Gallery, GalleryItem
from studio.core.settings import Settings
from studio.ui.bridge import Bridge
from studio.ui.widgets.image_view import ImageView, untinted_icon

THUMB = 128
PAGE = 500
_PATH = Qt.ItemDataRole.UserRole


def thumbnail(path: Path, size: int = THUMB) -> QPixmap:
    """A thumbnail decoded at its small size (cheap even for large images)."""
    reader = QImageReader(str(path))
    original = reader.size()
    if original.isValid() and (original.width() > size or original.height() > size):
        reader.setScaledSize(original.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        return QPixmap()
    if image.width() < size and image.height() < size:
        # Small samples are enlarged without blurring, like the large view does.
        image = image.scaled(
            size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation
        )
    return QPixmap.fromImage(image)


class GalleryPane(QWidget):
    useSettings = Signal(dict)  # TextToImage keyword arguments of the selected image

    def __init__(self, bridge: Bridge, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.gallery: Gallery | None = None
        self._items: dict[str, GalleryItem] = {}
        self._unthumbed: list[QListWidgetItem] = []
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setInterval(0)
        self._thumb_timer.timeout.connect(self._load_thumbnails)

        self.list = QListWidget()
        self.list.setObjectName("galleryList")
        self.list.setViewMode(QListWidget.ViewMode.IconMode)
        self.list.setIconSize(QSize(THUMB, THUMB))
        self.list.setGridSize(QSize(THUMB + 16, THUMB + 34))
        self.list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.list.setMovement(QListWidget.Movement.Static)
        self.list.setUniformItemSizes(True)
        self.list.setSelectionMode(QListWidget.SelectionMode.SingleSelection)

        self.view = ImageView("Select an image")
        self.view.setObjectName("galleryView")
        self.info = QPlainTextEdit()
        self.info.setObjectName("galleryInfo")
        self.info.setReadOnly(True)
        self.info.setMaximumHeight(150)
        self.use_button = QPushButton("Use these settings")
        self.use_button.setToolTip("Copy this image's prompt and settings into the Image pane")
        self.folder_button = QPushButton("Open folder")
        self.delete_button = QPushButton("Delete")
        self.status = QLabel("")
        self.status.setObjectName("galleryStatus")
        self.status.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.use_button)
        buttons.addWidget(self.folder_button)
        buttons.addStretch(1)
        buttons.addWidget(self.delete_button)
        detail = QWidget()
        detail_layout = QVBoxLayout(detail)
        detail_layout.setContentsMargins(0, 0, 0, 0)
        detail_layout.addWidget(self.view, 1)
        detail_layout.addWidget(self.info)
        detail_layout.addLayout(buttons)

        splitter = QSplitter()
        splitter.addWidget(self.list)
        splitter.addWidget(detail)
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)

        self.list.currentItemChanged.connect(self._show_current)
        self.list.itemDoubleClicked.connect(lambda _: self.use_selected())
        self.use_button.clicked.connect(self.use_selected)
        self.folder_button.clicked.connect(self.open_folder)
        self.delete_button.clicked.connect(lambda: self.delete_selected(confirm=True))
        delete_key = QShortcut(QKeySequence.StandardKey.Delete, self.list)
        delete_key.setContext(Qt.ShortcutContext.WidgetShortcut)
        delete_key.activated.connect(lambda: self.delete_selected(confirm=True))
        bridge.finished.connect(self._on_finished)
        self._open()
        self.refresh()

    # ---- data ----------------------------------------------------------------------

    def _open(self) -> None:
        if self.gallery is not None:
            self.gallery.close()
        self.gallery = Gallery(self.settings.resolved_outputs_dir())

    def settings_changed(self) -> None:
        if self.gallery is None or self.gallery.folder != self.settings.resolved_outputs_dir():
            self._open()
            self.refresh()

    def refresh(self) -> None:
        """Reload the list from the index, newest first, keeping the selection."""
        assert self.gallery is not None
        current = self.selected_item()
        try:
            items = self.gallery.list_items(limit=PAGE)
        except UserError as exc:
            self.status.setText(exc.message)
            return
        self._items = {str(item.path): item for item in items}
        self.list.blockSignals(True)
        self.list.clear()
        self._unthumbed.clear()
        for item in items:
            self.list.addItem(self._entry(item))
        self.list.blockSignals(False)
        if current is not None and str(current.path) in self._items:
            self.select(current.path)
        elif current is not None:
            self._show_current(None)
        self._update_status()

    def add_new(self, paths: list[Path]) -> None:
        """Put freshly saved images at the top without reloading the rest."""
        assert self.gallery is not None
        current = self.list.currentRow()
        added = 0
        for path in paths:
            if str(path) in self._items:
                continue
            try:
                item = self.gallery.get(path)
            except UserError as exc:
                self.status.setText(exc.message)
                return
            if item is None:
                continue
            self._items[str(item.path)] = item
            self.list.insertItem(0, self._entry(item))
            added += 1
        while self.list.count() > PAGE:
            dropped = self.list.takeItem(self.list.count() - 1)
            self._items.pop(dropped.data(_PATH), None)
        if current >= 0 and added:
            self.list.blockSignals(True)
            self.list.setCurrentRow(current + added)
            self.list.blockSignals(False)
        self._update_status()

    def _entry(self, item: GalleryItem) -> QListWidgetItem:
        label = f"seed {item.seed}" if item.seed is not None else item.path.stem
        entry = QListWidgetItem(label)
        entry.setData(_PATH, str(item.path))
        entry.setToolTip(item.prompt or item.path.name)
        # Decoded a few at a time from the event loop: a large history must not
        # freeze the window while its thumbnails load.
        self._unthumbed.append(entry)
        self._thumb_timer.start()
        return entry

    def _load_thumbnails(self) -> None:
        deadline = time.monotonic() + 0.015
        while self._unthumbed and time.monotonic() < deadline:
            entry = self._unthumbed.pop(0)
            try:
                if entry.listWidget() is self.list:
                    entry.setIcon(untinted_icon(thumbnail(Path(entry.data(_PATH)))))
            except RuntimeError:
                continue  # the item was deleted with a reload
        if not self._unthumbed:
            self._thumb_timer.stop()

    def thumbnails_pending(self) -> int:
        return len(self._unthumbed)

    def _update_status(self) -> None:
        assert self.gallery is not None
        count = self.list.count()
        self.status.setText(
            f"{count}{'+' if count >= PAGE else ''} image{'s' if count != 1 else ''} in {self.gallery.folder}"
            if count
            else f"No images yet in {self.gallery.folder}. Generate some in the Image pane."
        )
        self._update_buttons()

    def paths(self) -> list[Path]:
        return [Path(self.list.item(i).data(_PATH)) for i in range(self.list.count())]

    def select(self, path: str | Path) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(_PATH) == str(path):
                self.list.setCurrentRow(i)
                return

    def selected_item(self) -> GalleryItem | None:
        entry = self.list.currentItem()
        return self._items.get(entry.data(_PATH)) if entry is not None else None

    # ---- actions ---------------------------------------------------------------------

    def use_selected(self) -> dict[str, Any] | None:
        item = self.selected_item()
        if item is None:
            return None
        params = self.parameters_of(item)
        if params is None:
            self.status.setText(f"{item.path.name} carries no generation parameters.")
            return None
        self.useSettings.emit(params)
        return params

    @staticmethod
    def parameters_of(item: GalleryItem) -> dict[str, Any] | None:
        from studio.core.metadata import parameters_to_request, parse_parameters, request_from_png

        if item.request:
            return {k: v for k, v in item.request.items() if k not in ("type", "job_id")}
        if item.parameters:
            return parameters_to_request(parse_parameters(item.parameters))
        try:
            return request_from_png(item.path)
        except UserError:
            return None

    def open_folder(self) -> None:
        assert self.gallery is not None
        item = self.selected_item()
        folder = item.path.parent if item is not None else self.gallery.folder
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def delete_selected(self, confirm: bool = True) -> bool:
        item = self.selected_item()
        if item is None or self.gallery is None:
            return False
        if confirm:
            answer = QMessageBox.question(
                self, "Delete image", f"Delete {item.path.name} from the outputs folder?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                return False
        row = self.list.currentRow()
        try:
            self.gallery.delete(item)
        except UserError as exc:
            self.status.setText(exc.message)
            return False
        self.refresh()
        if self.list.count():
            self.list.setCurrentRow(min(row, self.list.count() - 1))
        return True

    # ---- display ------------------------------------------------------------------------

    def _show_current(self, *_: object) -> None:
        item = self.selected_item()
        if item is None:
            self.view.clear()
            self.info.clear()
        else:
            self.view.set_image(QPixmap(str(item.path)).toImage(), item.path.name)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.created))
            self.info.setPlainText(f"{item.parameters or item.prompt}\n\n{when} · {item.path}")
        self._update_buttons()

    def _update_buttons(self) -> None:
        has = self.selected_item() is not None
        self.use_button.setEnabled(has)
        self.delete_button.setEnabled(has)

    def _on_finished(self, job_id: str, result: object) -> None:
        paths = getattr(result, "paths", None)
        if paths:
            self.add_new([Path(p) for p in paths])
            if self.list.count() and self.list.currentRow() < 0:
                self.list.setCurrentRow(0)

    def shutdown(self) -> None:
        if self.gallery is not None:
            self.gallery.close()
