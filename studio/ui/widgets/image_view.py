"""Shows one image scaled to fit, crisp when small images are enlarged."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QImage, QPainter, QPaintEvent, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget


def to_qimage(image: Any) -> QImage:
    """A QImage (deep copy) from an HxWx3 / HxWx4 uint8 array, a PIL image or a QImage."""
    if isinstance(image, QImage):
        return image.copy()
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        import numpy as np

        image = np.asarray(image.convert("RGBA" if "A" in image.mode else "RGB"))
    import numpy as np

    array = np.ascontiguousarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.ascontiguousarray(np.stack([array] * 3, axis=-1))
    height, width, channels = array.shape
    fmt = QImage.Format.Format_RGBA8888 if channels == 4 else QImage.Format.Format_RGB888
    # QImage borrows the buffer; copy() detaches it before `array` can be freed.
    return QImage(array.data, width, height, channels * width, fmt).copy()


def untinted_icon(source: QPixmap | str) -> QIcon:
    """An icon that shows ``source`` (a pixmap, or an image file's path) as it is when its
    item is selected too.

    Qt's default Selected mode blends the highlight colour into the picture, which
    misreports a thumbnail's colours: a yellow star on purple turns sage green on lavender.
    The selection still shows in the item's label and frame. A path is read only when the
    icon is first painted, as ``QIcon(path)`` would, so a long list opens at once.
    """
    icon = QIcon()
    for mode in (QIcon.Mode.Normal, QIcon.Mode.Selected, QIcon.Mode.Active):
        if isinstance(source, str):
            icon.addFile(source, QSize(), mode)
        else:
            icon.addPixmap(source, mode)
    return icon


class ImageView(QWidget):
    """A picture scaled to the widget, aspect kept; nearest-neighbour when enlarged
    by a whole factor (a 64×64 sample stays sharp), smooth otherwise."""

    def __init__(self, placeholder: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pixmap = QPixmap()
        self._placeholder = placeholder
        self._caption = ""
        self.setMinimumSize(96, 96)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_image(self, image: Any, caption: str = "") -> None:
        self._pixmap = QPixmap() if image is None else QPixmap.fromImage(to_qimage(image))
        self._caption = caption
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.update()

    def clear(self) -> None:
        self.set_image(None)

    def has_image(self) -> bool:
        return not self._pixmap.isNull()

    def pixmap(self) -> QPixmap:
        return self._pixmap

    def caption(self) -> str:
        return self._caption

    def sizeHint(self) -> QSize:
        return QSize(384, 384)

    def target_rect(self) -> QRect:
        if self._pixmap.isNull():
            return QRect()
        area = self.rect().adjusted(6, 6, -6, -24 if self._caption else -6)
        size = self._pixmap.size().scaled(area.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = area.x() + (area.width() - size.width()) // 2
        y = area.y() + (area.height() - size.height()) // 2
        return QRect(x, y, size.width(), size.height())

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(27, 27, 29))
        painter.setPen(QColor(58, 58, 62))
        painter.drawRect(self.rect().adjusted(0, 0, -1, -1))
        if self._pixmap.isNull():
            painter.setPen(self.palette().color(self.palette().ColorRole.Mid))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self._placeholder)
            return
        target = self.target_rect()
        enlarged = target.width() >= 2 * self._pixmap.width()
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, not enlarged)
        painter.drawPixmap(target, self._pixmap)
        if self._caption:
            painter.setPen(self.palette().color(self.palette().ColorRole.Text))
            caption_rect = QRect(0, self.height() - 22, self.width(), 20)
            painter.drawText(caption_rect, Qt.AlignmentFlag.AlignCenter, self._caption)
