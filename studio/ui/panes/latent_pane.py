"""What the VAE and GAN panes share: their jobs in flight and what each is for.

Both panes send interactive requests (a drag, a slider) next to queued ones
(exports, directions). A result is shown only if no newer request of the same
purpose has already been shown, so a slow old render never overwrites a new one.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from studio.ui.widgets.latent_views import LatestSender


class LatentPane(QWidget):
    exported = Signal(str)
    errorShown = Signal(str)

    #: purposes whose results must be the newest sent; ``None`` means every purpose
    LATEST_ONLY: tuple[str, ...] | None = None

    def __init__(self, bridge: Any, settings: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.settings = settings
        self._jobs: dict[str, tuple[str, int]] = {}  # job id -> (purpose, order sent)
        self._shown: dict[str, int] = {}  # purpose -> order of the result on screen
        self._counter = 0
        self.sender = LatestSender(bridge, on_sent=self._track)
        bridge.finished.connect(self._on_finished)
        bridge.failed.connect(self._on_failed)
        bridge.cancelled.connect(self._on_ended)
        bridge.progress.connect(self._on_progress)

    # ---- hooks for the panes ----------------------------------------------------------

    def _show(self, purpose: str, result: object) -> None:
        """Put a finished result on screen."""
        raise NotImplementedError

    def _failed(self, purpose: str) -> None:
        """Undo a pane's "working…" state after a failed job."""

    def _progress(self, purpose: str, step: int, total: int) -> None:
        """Report a running job's progress."""

    # ---- bookkeeping ---------------------------------------------------------------------

    def _track(self, job_id: str, purpose: str) -> str:
        self._counter += 1
        self._jobs[job_id] = (purpose, self._counter)
        return job_id

    def _take(self, job_id: str) -> str | None:
        """The purpose of a finished job, or None if it is not ours or already outdated."""
        if job_id not in self._jobs:
            return None
        purpose, seq = self._jobs.pop(job_id)
        if self.LATEST_ONLY is None or purpose in self.LATEST_ONLY:
            if seq < self._shown.get(purpose, 0):
                return None
            self._shown[purpose] = seq
        return purpose

    def _on_finished(self, job_id: str, result: object) -> None:
        try:
            purpose = self._take(job_id)
            if purpose is not None:
                self._show(purpose, result)
        finally:
            self.sender.done(job_id)

    def _on_failed(self, job_id: str, message: str, detail: str) -> None:
        if job_id in self._jobs:
            purpose, _ = self._jobs.pop(job_id)
            self._failed(purpose)
            self._error(message)
        self.sender.done(job_id)

    def _on_ended(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self.sender.done(job_id)

    def _on_progress(self, job_id: str, step: int, total: int, preview: object) -> None:
        if job_id in self._jobs:
            self._progress(self._jobs[job_id][0], step, total)

    def _error(self, message: str) -> None:
        self.message.error(message)
        self.errorShown.emit(message)
