"""The queue: the running job first, then the batch jobs waiting, in order."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.core.jobs import Job
from studio.ui.bridge import Bridge

_JOB_ID = Qt.ItemDataRole.UserRole
_RUNNING = Qt.ItemDataRole.UserRole + 1


class JobList(QWidget):
    def __init__(self, bridge: Bridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.list = QListWidget()
        self.list.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.list.setObjectName("jobList")
        self.list.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.remove_button = QPushButton("Remove queued")
        self.remove_button.setToolTip("Take the selected waiting jobs off the queue (Delete)")
        self.cancel_button = QPushButton("Cancel running")
        self.cancel_button.setToolTip("Stop the running job at its next step (Esc)")
        buttons = QHBoxLayout()
        buttons.addWidget(self.remove_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.list, 1)
        layout.addLayout(buttons)

        self._step = ""
        self.remove_button.clicked.connect(self.remove_selected)
        self.cancel_button.clicked.connect(self.bridge.cancel_running)
        self.list.itemSelectionChanged.connect(self._update_buttons)
        bridge.queueChanged.connect(self._rebuild)
        bridge.started.connect(self._on_started)
        bridge.ended.connect(self._on_ended)
        bridge.progress.connect(self._on_progress)
        self._rebuild()

    def queued_ids(self) -> list[str]:
        return [
            self.list.item(i).data(_JOB_ID)
            for i in range(self.list.count())
            if not self.list.item(i).data(_RUNNING)
        ]

    def select_job(self, job_id: str) -> None:
        for i in range(self.list.count()):
            item = self.list.item(i)
            item.setSelected(item.data(_JOB_ID) == job_id)

    def remove_selected(self) -> int:
        removed = 0
        for item in self.list.selectedItems():
            if not item.data(_RUNNING) and self.bridge.remove_queued(item.data(_JOB_ID)):
                removed += 1
        return removed

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt override
        if event.key() in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            self.remove_selected()
            return
        super().keyPressEvent(event)

    def _on_started(self, job_id: str, job: object) -> None:
        if isinstance(job, Job) and not job.lane:
            self._step = ""
            self._rebuild()

    def _on_ended(self, job_id: str) -> None:
        self._rebuild()

    def _on_progress(self, job_id: str, step: int, total: int, preview: object) -> None:
        running = self.bridge.running
        if running is None or running.job_id != job_id or self.list.count() == 0:
            return
        self._step = f"  ({step}/{total})"
        first = self.list.item(0)
        if first.data(_RUNNING):
            first.setText(f"▶ {running.title}{self._step}")

    def _rebuild(self, *_: object) -> None:
        selected = {item.data(_JOB_ID) for item in self.list.selectedItems()}
        self.list.clear()
        running = self.bridge.running
        if running is not None:
            item = QListWidgetItem(f"▶ {running.title}{self._step}")
            item.setToolTip(running.title)
            item.setData(_JOB_ID, running.job_id)
            item.setData(_RUNNING, True)
            font = item.font()
            font.setBold(True)
            item.setFont(font)
            self.list.addItem(item)
        for n, job in enumerate(self.bridge.pending, 1):
            item = QListWidgetItem(f"{n}. {job.title}")
            item.setToolTip(job.title)
            item.setData(_JOB_ID, job.job_id)
            item.setData(_RUNNING, False)
            self.list.addItem(item)
            item.setSelected(job.job_id in selected)
        self._update_buttons()

    def _update_buttons(self) -> None:
        self.cancel_button.setEnabled(self.bridge.running is not None)
        self.remove_button.setEnabled(
            any(not item.data(_RUNNING) for item in self.list.selectedItems())
        )
