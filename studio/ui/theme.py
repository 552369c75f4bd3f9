"""The dark Fusion theme (default) and the light one, applied to the whole application."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

_STYLE_SHEET = """
QLabel#notBuilt, QLabel#paneError { font-size: 14px; color: palette(mid); }
QLabel#paneError { color: #e57373; }
QLabel#errorBanner {
    background: #5c2326; color: #ffdede; border: 1px solid #8e3b3f;
    border-radius: 4px; padding: 6px;
}
QLabel#noticeBanner {
    background: #4a4120; color: #fff3c4; border: 1px solid #7a6a2c;
    border-radius: 4px; padding: 6px;
}
QPushButton#generateButton { font-weight: bold; padding: 6px 18px; }
QLabel#tokenCount { color: palette(mid); }
QLabel#tokenCount[over="true"] { color: #e5a04f; }
"""


def dark_palette() -> QPalette:
    p = QPalette()
    window, base, text = QColor(45, 45, 48), QColor(30, 30, 32), QColor(225, 225, 228)
    highlight = QColor(74, 132, 214)
    p.setColor(QPalette.ColorRole.Window, window)
    p.setColor(QPalette.ColorRole.WindowText, text)
    p.setColor(QPalette.ColorRole.Base, base)
    p.setColor(QPalette.ColorRole.AlternateBase, QColor(40, 40, 43))
    p.setColor(QPalette.ColorRole.ToolTipBase, QColor(55, 55, 58))
    p.setColor(QPalette.ColorRole.ToolTipText, text)
    p.setColor(QPalette.ColorRole.PlaceholderText, QColor(130, 130, 135))
    p.setColor(QPalette.ColorRole.Text, text)
    p.setColor(QPalette.ColorRole.Button, QColor(55, 55, 59))
    p.setColor(QPalette.ColorRole.ButtonText, text)
    p.setColor(QPalette.ColorRole.BrightText, QColor(255, 90, 90))
    p.setColor(QPalette.ColorRole.Link, highlight.lighter(120))
    p.setColor(QPalette.ColorRole.Highlight, highlight)
    p.setColor(QPalette.ColorRole.HighlightedText, QColor(255, 255, 255))
    p.setColor(QPalette.ColorRole.Light, QColor(70, 70, 74))
    p.setColor(QPalette.ColorRole.Midlight, QColor(60, 60, 64))
    p.setColor(QPalette.ColorRole.Mid, QColor(140, 140, 146))
    p.setColor(QPalette.ColorRole.Dark, QColor(25, 25, 27))
    p.setColor(QPalette.ColorRole.Shadow, QColor(10, 10, 10))
    disabled = QPalette.ColorGroup.Disabled
    for role in (
        QPalette.ColorRole.WindowText,
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
    ):
        p.setColor(disabled, role, QColor(120, 120, 125))
    p.setColor(disabled, QPalette.ColorRole.Base, QColor(38, 38, 40))
    p.setColor(disabled, QPalette.ColorRole.Button, QColor(48, 48, 51))
    return p


def apply_theme(app: QApplication, theme: str = "dark") -> None:
    """Fusion everywhere so the app looks the same on every platform; dark unless asked."""
    app.setStyle("Fusion")
    if theme == "light":
        app.setPalette(app.style().standardPalette())
    else:
        app.setPalette(dark_palette())
    app.setStyleSheet(_STYLE_SHEET)
