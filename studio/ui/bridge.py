"""Engine events → Qt signals on the UI thread, and jobs as awaitables on the qasync loop.

The engine calls its listeners on whatever thread emitted the event (mostly the
inference thread). The listener here only re-emits the event through a queued
connection, so every public signal fires on the Qt thread, in the order the
events happened, and no widget is ever touched from the inference thread.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal, Slot

from studio.core.engine import Engine
from studio.core.errors import UserError
from studio.core.jobs import (
    Cancelled,
    EngineReady,
    Event,
    Failed,
    Finished,
    Job,
    Progress,
    QueueChanged,
    Started,
    Token,
)

if TYPE_CHECKING:
    import asyncio


class Bridge(QObject):
    engineReady = Signal(str, str)  # device ("cuda"/"mps"/"cpu"), device name
    queueChanged = Signal(list)  # pending batch jobs, in order
    started = Signal(str, object)  # job_id, job
    progress = Signal(str, int, int, object)  # job_id, step, total, preview (HxWx3 uint8) or None
    token = Signal(str, str)  # job_id, text
    finished = Signal(str, object)  # job_id, result
    failed = Signal(str, str, str)  # job_id, message, detail
    cancelled = Signal(str)  # job_id
    ended = Signal(str)  # job_id, after finished / failed / cancelled
    error = Signal(str)  # any failure's message, for the status bar

    _delivered = Signal(object)

    def __init__(self, engine: Engine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self.device = ""
        self.device_name = ""
        self.pending: list[Job] = []
        # The running batch job and when it started (monotonic), for status and ETA.
        self.running: Job | None = None
        self.running_since = 0.0
        self._futures: dict[str, asyncio.Future[Any]] = {}
        self._closed = False
        self._delivered.connect(self._dispatch, Qt.ConnectionType.QueuedConnection)
        self._unsubscribe = engine.subscribe(self._on_event)
        if engine.ready:
            # The engine came up before we subscribed: replay its ready event.
            info = engine.device_info
            QTimer.singleShot(0, lambda: self._dispatch(EngineReady("", info.device, info.name)))

    @property
    def ready(self) -> bool:
        return bool(self.device)

    # ---- requests ------------------------------------------------------------

    def submit(self, job: Job) -> str:
        """Queue a batch job (or, for a job with a `lane`, send it to the interactive lane)."""
        self.engine.submit(job)
        return job.job_id

    def interactive(self, job: Job) -> str:
        """Latest-only lane: a newer request of the same lane replaces this one if not started."""
        self.engine.request_interactive(job)
        return job.job_id

    async def run(self, job: Job) -> Any:
        """Submit `job` and wait for its result without blocking the UI.

        Raises UserError with the failure's message, or asyncio.CancelledError if
        the job was cancelled. Cancelling the awaiting task cancels the job.
        """
        import asyncio  # only once a pane awaits: keeps it off the start-up path

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._futures[job.job_id] = future

        if job.lane:
            self.interactive(job)
        else:
            self.submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            # Still registered: the awaiting task went away, not the job. Stop it too.
            if self._futures.pop(job.job_id, None) is not None:
                self.engine.cancel(job.job_id)
            raise

    def cancel_running(self) -> bool:
        return self.engine.cancel_running()

    def cancel(self, job_id: str) -> bool:
        return self.engine.cancel(job_id)

    def remove_queued(self, job_id: str) -> bool:
        return self.engine.remove_queued(job_id)

    def close(self) -> None:
        """Stop listening to the engine; pending awaitables are cancelled."""
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        futures, self._futures = self._futures, {}
        for future in futures.values():
            if not future.done():
                future.cancel()

    # ---- delivery --------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        # Any thread. Only hand the event over; the queued connection moves it.
        if self._closed:
            return
        try:
            self._delivered.emit(event)
        except RuntimeError:
            # The Qt object was deleted while the engine still ran.
            self._closed = True

    @Slot(object)
    def _dispatch(self, event: Event) -> None:
        if self._closed:
            return
        jid = event.job_id
        if isinstance(event, Progress):
            self.progress.emit(jid, event.step, event.total, event.preview)
        elif isinstance(event, Token):
            self.token.emit(jid, event.text)
        elif isinstance(event, Started):
            if event.job is not None and not event.job.lane:
                self.running = event.job
                self.running_since = time.monotonic()
            self.started.emit(jid, event.job)
        elif isinstance(event, QueueChanged):
            self.pending = list(event.pending)
            self.queueChanged.emit(list(self.pending))
        elif isinstance(event, Finished):
            self._end(jid)
            self._settle(jid, lambda f: f.set_result(event.result))
            self.finished.emit(jid, event.result)
            self.ended.emit(jid)
        elif isinstance(event, Failed):
            self._end(jid)
            self._settle(jid, lambda f: f.set_exception(UserError(event.message, event.detail)))
            self.failed.emit(jid, event.message, event.detail)
            self.error.emit(event.message)
            self.ended.emit(jid)
        elif isinstance(event, Cancelled):
            self._end(jid)
            self._settle(jid, lambda f: f.cancel())
            self.cancelled.emit(jid)
            self.ended.emit(jid)
        elif isinstance(event, EngineReady):
            self.device, self.device_name = event.device, event.device_name
            self.engineReady.emit(event.device, event.device_name)

    def _end(self, job_id: str) -> None:
        if self.running is not None and self.running.job_id == job_id:
            self.running = None

    def _settle(self, job_id: str, action: Any) -> None:
        future = self._futures.pop(job_id, None)
        if future is not None and not future.done():
            action(future)
