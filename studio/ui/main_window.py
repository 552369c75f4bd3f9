"""The one window: panes as tabs, the queue as a dock, the engine's state in the status bar."""

from __future__ import annotations

import importlib
import time
import traceback
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QKeySequence,
    QShortcut,
    QShowEvent,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.core.jobs import Job
from studio.core.settings import Settings, save_settings
from studio.ui.bridge import Bridge
from studio.ui.panes import PANES
from studio.ui.widgets.job_list import JobList

IMAGE_SUFFIXES = (".png",)
_DRAG_EVENTS = (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop)


def format_eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PaneError(QWidget):
    """Stands in for a pane that failed to load, with the reason, so the rest still works."""

    def __init__(self, title: str, spec: str, detail: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        label = QLabel(f"The {title} pane could not be loaded ({spec}).")
        label.setObjectName("paneError")
        label.setWordWrap(True)
        text = QPlainTextEdit(detail)
        text.setReadOnly(True)
        layout = QVBoxLayout(self)
        layout.addWidget(label)
        layout.addWidget(text, 1)
        self.detail = detail


def load_pane(title: str, spec: str, bridge: Bridge, settings: Settings) -> QWidget:
    try:
        module_name, class_name = spec.split(":", 1)
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(bridge, settings)
    except Exception:
        return PaneError(title, spec, traceback.format_exc())


def engine_options(settings: Settings) -> dict[str, Any]:
    """What the engine's handlers read from settings (model folders resolve picker names)."""
    options = settings.engine_options()
    options.setdefault("model_folders", list(settings.model_folders))
    return options


def png_paths(mime: Any) -> list[Path]:
    if not mime.hasUrls():
        return []
    paths = [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
    return [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]


class MainWindow(QMainWindow):
    parametersRestored = Signal(dict)
    modelsLoaded = Signal()

    def __init__(
        self,
        bridge: Bridge,
        settings: Settings,
        settings_path: str | Path | None = None,
        persist: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self.settings_path = settings_path
        # False for throwaway windows (--smoke): nothing is written back on close.
        self.persist = persist
        self.exit_code = 0
        self.setWindowTitle("Latent Studio")
        self.setObjectName("mainWindow")
        self.resize(1200, 800)

        # ---- panes ------------------------------------------------------------
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        # Panes are built once the window's first frame is on screen, one per
        # event-loop turn (the visible one first), so the window appears without
        # waiting on them; anything that needs a pane earlier builds it on demand.
        self.panes: dict[str, QWidget] = {}
        self._specs: dict[str, str] = dict(PANES)
        self._holders: dict[str, QScrollArea] = {}
        for title, _ in PANES:
            # A pane larger than the window scrolls instead of forcing the window's
            # minimum size up to the largest pane's (laptop screens stay usable).
            holder = QScrollArea()
            holder.setObjectName(f"holder{title}")
            holder.setWidgetResizable(True)
            holder.setFrameShape(QFrame.Shape.NoFrame)
            self._holders[title] = holder
            self.tabs.addTab(holder, title)
        self.setCentralWidget(self.tabs)
        self._panes_started = False
        self.tabs.currentChanged.connect(self._tab_changed)
        self._build_timer = QTimer(self)
        self._build_timer.setInterval(0)
        self._build_timer.timeout.connect(self._build_next_pane)

        # ---- queue dock ---------------------------------------------------------
        self.job_list = JobList(bridge)
        self.queue_dock = QDockWidget("Queue", self)
        self.queue_dock.setObjectName("queueDock")
        self.queue_dock.setWidget(self.job_list)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.queue_dock)

        # ---- status bar -----------------------------------------------------------
        status = self.statusBar()
        self.device_label = QLabel("Starting the inference engine…")
        self.device_label.setObjectName("deviceLabel")
        self.job_label = QLabel("Idle")
        self.job_label.setObjectName("jobLabel")
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("jobProgress")
        self.progress_bar.setMaximumWidth(220)
        self.progress_bar.setTextVisible(True)
        self.progress_bar.hide()
        self.eta_label = QLabel("")
        self.eta_label.setObjectName("etaLabel")
        self.queue_label = QLabel("Queue: 0")
        self.queue_label.setObjectName("queueLabel")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setToolTip("Stop the running job at its next step (Esc)")
        self.cancel_button.setEnabled(False)
        status.addWidget(self.device_label)
        status.addWidget(self.job_label, 1)
        status.addPermanentWidget(self.progress_bar)
        status.addPermanentWidget(self.eta_label)
        status.addPermanentWidget(self.queue_label)
        status.addPermanentWidget(self.cancel_button)

        self.cancel_button.clicked.connect(self.cancel_running)
        bridge.engineReady.connect(self._on_engine_ready)
        bridge.started.connect(self._on_started)
        bridge.progress.connect(self._on_progress)
        bridge.ended.connect(self._on_ended)
        bridge.queueChanged.connect(self._on_queue_changed)
        bridge.error.connect(self._on_error)
        if bridge.ready:
            self._on_engine_ready(bridge.device, bridge.device_name)

        # ---- menus and shortcuts -------------------------------------------------
        self._build_menus()
        self.cancel_shortcut = QShortcut(QKeySequence(Qt.Key.Key_Escape), self)
        self.cancel_shortcut.setContext(Qt.ShortcutContext.WindowShortcut)
        self.cancel_shortcut.activated.connect(self.cancel_running)

        # PNG drops anywhere in the window restore their parameters: the window
        # takes them where no child accepts drops, and a filter on each child that
        # does (a text box would paste the file's URL) takes them there first.
        self.setAcceptDrops(True)
        self._restore_window_state()

    # ---- panes --------------------------------------------------------------------

    def pane(self, title: str) -> QWidget | None:
        """The pane titled `title`, built now if it was not yet."""
        built = self.panes.get(title)
        if built is not None or title not in self._specs:
            return built
        pane = load_pane(title, self._specs[title], self.bridge, self.settings)
        pane.setObjectName(f"pane{title}")
        self.panes[title] = pane
        self._holders[title].setWidget(pane)
        self._connect_pane(title, pane)
        self._watch_drops(pane)
        return pane

    def _watch_drops(self, root: QWidget) -> None:
        for child in [root, *root.findChildren(QWidget)]:
            if child.acceptDrops():
                child.installEventFilter(self)

    def build_all_panes(self) -> None:
        for title in self._specs:
            self.pane(title)

    def _build_next_pane(self) -> None:
        current = self.tabs.tabText(self.tabs.currentIndex())
        for title in [current, "Image", *self._specs]:
            if title in self._specs and title not in self.panes:
                self.pane(title)
                return
        self._build_timer.stop()

    def _tab_changed(self, index: int) -> None:
        if self._panes_started:
            self.pane(self.tabs.tabText(index))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._panes_started:
            self._panes_started = True
            # Not in the event-loop turn that paints the first frame.
            QTimer.singleShot(30, self._build_timer.start)

    @property
    def image_pane(self) -> QWidget | None:
        pane = self.pane("Image")
        return None if isinstance(pane, PaneError) else pane

    def show_pane(self, title: str) -> None:
        if self._select_tab(title):
            self.pane(title)

    def _select_tab(self, title: str) -> bool:
        for index in range(self.tabs.count()):
            if self.tabs.tabText(index) == title:
                self.tabs.setCurrentIndex(index)
                return True
        return False

    def current_pane(self) -> QWidget | None:
        return self.pane(self.tabs.tabText(self.tabs.currentIndex()))

    def _connect_pane(self, title: str, pane: QWidget) -> None:
        if isinstance(getattr(type(pane), "sendPrompt", None), Signal) and title != "Image":
            pane.sendPrompt.connect(self._send_prompt)
        if isinstance(getattr(type(pane), "useSettings", None), Signal):
            pane.useSettings.connect(self.restore_parameters)
        if title == "Image" and isinstance(getattr(type(pane), "modelsLoaded", None), Signal):
            pane.modelsLoaded.connect(lambda *_: self.modelsLoaded.emit())

    def models_loaded(self) -> bool:
        """True once the Image pane has its model list (or there is no Image pane)."""
        if "Image" not in self._specs:
            return True
        image = self.panes.get("Image")
        return image is not None and bool(getattr(image, "models_loaded", True))

    def _send_prompt(self, text: str) -> None:
        image = self.image_pane
        if image is not None:
            image.set_prompt(text)
            self.show_pane("Image")

    def restore_parameters(self, params: dict) -> None:
        image = self.image_pane
        if image is None or not hasattr(image, "apply_parameters"):
            return
        image.apply_parameters(params)
        self.show_pane("Image")
        self.parametersRestored.emit(params)

    def open_png(self, path: str | Path) -> bool:
        """Restore the generation parameters stored in a PNG (ours or A1111's)."""
        from studio.core.errors import UserError
        from studio.core.metadata import request_from_png

        try:
            params = request_from_png(path)
        except UserError as exc:
            self._show_message(exc.message, 10000)
            return False
        self.restore_parameters(params)
        self._show_message(f"Restored the settings of {Path(path).name}.")
        return True

    # ---- engine state -----------------------------------------------------------

    def _on_engine_ready(self, device: str, device_name: str) -> None:
        text = f"GPU: {device_name}" if device == "cuda" else device_name
        self.device_label.setText(text)
        self.device_label.setToolTip(f"Inference device: {device_name} ({device})")

    def _on_started(self, job_id: str, job: object) -> None:
        if not isinstance(job, Job) or job.lane:
            return
        self.job_label.setText(job.title)
        self.job_label.setToolTip(job.title)
        self.progress_bar.setRange(0, 0)  # busy until the first step reports
        self.progress_bar.show()
        self.eta_label.setText("")
        self.cancel_button.setEnabled(True)

    def _on_progress(self, job_id: str, step: int, total: int, preview: object) -> None:
        running = self.bridge.running
        if running is None or running.job_id != job_id or total <= 0:
            return
        self.progress_bar.setRange(0, total)
        self.progress_bar.setValue(step)
        self.progress_bar.setFormat(f"{step}/{total}")
        if step > 0:
            elapsed = time.monotonic() - self.bridge.running_since
            self.eta_label.setText(f"ETA {format_eta(elapsed / step * (total - step))}")

    def _on_ended(self, job_id: str) -> None:
        if self.bridge.running is not None:
            return
        self.job_label.setText("Idle")
        self.job_label.setToolTip("")
        self.progress_bar.hide()
        self.eta_label.setText("")
        self.cancel_button.setEnabled(False)

    def _on_queue_changed(self, pending: list) -> None:
        self.queue_label.setText(f"Queue: {len(pending)}")

    def _on_error(self, message: str) -> None:
        self._show_message(message, 10000)

    def _show_message(self, text: str, timeout_ms: int = 5000) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def cancel_running(self) -> bool:
        cancelled = self.bridge.cancel_running()
        if cancelled:
            self.job_label.setText("Cancelling…")
        return cancelled

    # ---- menus ----------------------------------------------------------------------

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        open_action = QAction("&Open image settings…", self)
        open_action.setShortcut(QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self._open_png_dialog)
        file_menu.addAction(open_action)
        outputs_action = QAction("Open &outputs folder", self)
        outputs_action.triggered.connect(self._open_outputs)
        file_menu.addAction(outputs_action)
        file_menu.addSeparator()
        settings_action = QAction("&Settings…", self)
        settings_action.setShortcut(QKeySequence("Ctrl+,"))
        settings_action.triggered.connect(self.open_settings)
        file_menu.addAction(settings_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.queue_dock.toggleViewAction())
        for index, (title, _) in enumerate(PANES):
            action = QAction(title, self)
            action.setShortcut(QKeySequence(f"Ctrl+{index + 1}"))
            action.triggered.connect(lambda _=False, t=title: self.show_pane(t))
            view_menu.addAction(action)

        help_menu = self.menuBar().addMenu("&Help")
        about = QAction("&About Latent Studio", self)
        about.triggered.connect(self._about)
        help_menu.addAction(about)

    def _open_png_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", "", "PNG images (*.png)")
        if path:
            self.open_png(path)

    def _open_outputs(self) -> None:
        folder = self.settings.resolved_outputs_dir()
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def open_settings(self) -> None:
        from studio.ui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            dialog.apply()
            self.bridge.engine.options.update(engine_options(self.settings))
            self.save_settings()
            for pane in self.panes.values():
                refresh = getattr(pane, "settings_changed", None)
                if callable(refresh):
                    refresh()
            if dialog.needs_restart:
                self._show_message("The device change takes effect after a restart.", 10000)

    def _about(self) -> None:
        from studio import __version__

        QMessageBox.about(
            self,
            "About Latent Studio",
            f"<b>Latent Studio</b> {__version__}<br>Local text, image and latent generation.<br>"
            f"Device: {self.device_label.text()}",
        )

    # ---- drag and drop --------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in _DRAG_EVENTS and self._take_png_drop(event):
            return True
        return super().eventFilter(watched, event)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if not self._take_png_drop(event):
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if not self._take_png_drop(event):
            super().dragMoveEvent(event)

    def dropEvent(self, event: QDropEvent) -> None:
        if not self._take_png_drop(event):
            super().dropEvent(event)

    def _take_png_drop(self, event: QEvent) -> bool:
        paths = png_paths(event.mimeData())  # type: ignore[attr-defined]
        if not paths:
            return False
        event.acceptProposedAction()  # type: ignore[attr-defined]
        if event.type() == QEvent.Type.Drop:
            self.open_png(paths[0])
        return True

    # ---- state across restarts ---------------------------------------------------------

    def _restore_window_state(self) -> None:
        s = self.settings
        if s.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(s.window_geometry.encode("ascii")))
        if s.window_state:
            self.restoreState(QByteArray.fromBase64(s.window_state.encode("ascii")))
        self._select_tab(s.current_pane if s.current_pane in self._specs else "Image")

    def store_state(self) -> None:
        """Copy window and pane state into the settings object."""
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        self.settings.window_state = bytes(self.saveState().toBase64()).decode("ascii")
        self.settings.current_pane = self.tabs.tabText(self.tabs.currentIndex())
        for pane in self.panes.values():
            store = getattr(pane, "store_settings", None)
            if callable(store):
                try:
                    store(self.settings)
                except Exception:
                    traceback.print_exc()

    def save_settings(self) -> None:
        try:
            save_settings(self.settings, self.settings_path)
        except OSError as exc:
            self._show_message(f"Could not save settings: {exc}", 10000)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._build_timer.stop()
        if self.persist:
            self.store_state()
            self.save_settings()
        for pane in self.panes.values():
            shutdown = getattr(pane, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:
                    traceback.print_exc()
        super().closeEvent(event)
