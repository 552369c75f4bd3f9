"""The inference thread: one long-lived thread owns the device.

Batch jobs run in order from a queue. Interactive requests go to a latest-only
mailbox per lane: a newer request replaces one that has not started, a result
made stale by a newer request is dropped, and the mailbox is served between the
steps of a running batch job (`JobContext.progress`), so exploring stays live
while an image renders. Cancel is a flag checked at every step.
"""

from __future__ import annotations

import importlib
import threading
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from studio.core.devices import DeviceInfo, choose_device, is_out_of_memory, release_memory
from studio.core.errors import UserError
from studio.core.jobs import (
    TERMINAL_EVENTS,
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

Listener = Callable[[Event], None]


class JobCancelled(Exception):
    """Raised inside a handler at a safe point once cancel was asked for."""


class ModelCache:
    """Loaded models by key. Loading a key evicts the others of its group, so
    switching models frees the previous one. Touched only on the inference thread."""

    def __init__(self, on_release: Callable[[], None] | None = None) -> None:
        self._entries: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._on_release = on_release

    def get(self, key: str, loader: Callable[[], Any], group: str = "default") -> Any:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key][1]
        stale = [k for k, (g, _) in self._entries.items() if g == group]
        for k in stale:
            del self._entries[k]
        if stale and self._on_release:
            self._on_release()
        value = loader()
        self._entries[key] = (group, value)
        return value

    def peek(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        return entry[1] if entry else None

    def evict(self, key: str) -> bool:
        found = self._entries.pop(key, None) is not None
        if found and self._on_release:
            self._on_release()
        return found

    def clear(self) -> None:
        self._entries.clear()
        if self._on_release:
            self._on_release()

    def keys(self) -> list[str]:
        return list(self._entries)


class JobContext:
    """What a handler sees: progress/token reporting, cancel checks, the model cache."""

    def __init__(self, engine: Engine, job: Job, interactive: bool = False) -> None:
        self._engine = engine
        self.job = job
        self.interactive = interactive
        self._cancel = threading.Event()
        self.started_at = time.perf_counter()

    @property
    def device(self) -> str:
        return self._engine.device_info.device

    @property
    def dtype(self) -> Any:
        return self._engine.device_info.dtype

    @property
    def device_info(self) -> DeviceInfo:
        return self._engine.device_info

    @property
    def models(self) -> ModelCache:
        return self._engine.models

    @property
    def options(self) -> dict[str, Any]:
        """Engine-wide switches from settings (attention slicing, VAE tiling, ...)."""
        return self._engine.options

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set() or self._engine._stopping

    def cancel(self) -> None:
        self._cancel.set()

    def check_cancel(self) -> None:
        if self.cancelled:
            raise JobCancelled()

    def progress(self, step: int, total: int, preview: Any = None) -> None:
        self._engine._emit(Progress(self.job.job_id, step, total, preview))
        if not self.interactive:
            self._engine._serve_interactive()
        self.check_cancel()

    def token(self, text: str) -> None:
        self._engine._emit(Token(self.job.job_id, text))
        if not self.interactive:
            self._engine._serve_interactive()
        self.check_cancel()

    def serve_interactive(self) -> None:
        if not self.interactive:
            self._engine._serve_interactive()


class JobHandle:
    """Follows one job's events; `wait` blocks until it ends (for the CLI and tests)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.events: list[Event] = []
        self._done = threading.Event()

    def _add(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, TERMINAL_EVENTS):
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Event:
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.job.title} did not finish in {timeout} s")
        return self.events[-1]

    def result(self, timeout: float | None = None) -> Any:
        """The result, or UserError with the failure's message."""
        end = self.wait(timeout)
        if isinstance(end, Finished):
            return end.result
        if isinstance(end, Failed):
            raise UserError(end.message, end.detail)
        raise UserError("Cancelled.")


def _resolve(handler: str) -> Callable[[Job, JobContext], Any]:
    if ":" not in handler:
        raise UserError(f"This request has no handler ({handler!r}).")
    module_name, func_name = handler.split(":", 1)
    return getattr(importlib.import_module(module_name), func_name)


class Engine:
    def __init__(self, device: str = "auto", options: dict[str, Any] | None = None) -> None:
        self.device_preference = device
        self.options: dict[str, Any] = dict(options or {})
        self.device_info = DeviceInfo("cpu", "CPU", False)
        self.models = ModelCache(on_release=lambda: release_memory(self.device_info.device))
        self._listeners: list[Listener] = []
        self._handles: dict[str, JobHandle] = {}
        self._queue: deque[Job] = deque()
        self._mailbox: OrderedDict[str, Job] = OrderedDict()
        self._lane_generation: dict[str, int] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._running: JobContext | None = None
        self._serving_interactive = False

    # ---- lifecycle --------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        with self._cond:
            self._stopping = True
            running = self._running
            self._cond.notify_all()
        if running:
            running.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- listeners -----------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: Event) -> None:
        handle = self._handles.get(event.job_id)
        if handle is not None:
            handle._add(event)
            if handle.done:
                self._handles.pop(event.job_id, None)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not take the thread down
                traceback.print_exc()

    # ---- batch lane -------------------------------------------------------------

    def submit(self, job: Job) -> JobHandle:
        if job.lane:
            return self.request_interactive(job)
        handle = JobHandle(job)
        self._handles[job.job_id] = handle
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()
            self._emit_queue()
        return handle

    def run(self, job: Job, timeout: float | None = None) -> Any:
        """Submit and block until done; the result, or UserError. Not for the UI thread."""
        return self.submit(job).result(timeout)

    def _emit_queue(self) -> None:
        # Called with the lock held, so queue snapshots reach listeners in the order
        # the queue changed (a later snapshot can never be overtaken by an earlier one).
        self._emit(QueueChanged("", tuple(self._queue)))

    def pending(self) -> tuple[Job, ...]:
        with self._cond:
            return tuple(self._queue)

    @property
    def running_job(self) -> Job | None:
        ctx = self._running
        return ctx.job if ctx else None

    def cancel_running(self) -> bool:
        """Interrupt the running batch job at its next step; queued jobs stay."""
        ctx = self._running
        if ctx is None:
            return False
        ctx.cancel()
        return True

    def cancel(self, job_id: str) -> bool:
        """Cancel one job, running or queued."""
        ctx = self._running
        if ctx is not None and ctx.job.job_id == job_id:
            ctx.cancel()
            return True
        return self.remove_queued(job_id)

    def remove_queued(self, job_id: str) -> bool:
        with self._cond:
            found = [j for j in self._queue if j.job_id == job_id]
            for j in found:
                self._queue.remove(j)
            if found:
                self._emit_queue()
        if found:
            self._emit(Cancelled(job_id))
        return bool(found)

    def clear_queue(self) -> int:
        with self._cond:
            removed = list(self._queue)
            self._queue.clear()
            if removed:
                self._emit_queue()
        for job in removed:
            self._emit(Cancelled(job.job_id))
        return len(removed)

    # ---- interactive lane ---------------------------------------------------------

    def request_interactive(self, job: Job) -> JobHandle:
        """Latest-only: replaces a not-yet-started request of the same lane."""
        lane = job.lane or "interactive"
        handle = JobHandle(job)
        self._handles[job.job_id] = handle
        with self._cond:
            replaced = self._mailbox.pop(lane, None)
            self._mailbox[lane] = job
            self._lane_generation[lane] = self._lane_generation.get(lane, 0) + 1
            self._cond.notify_all()
        if replaced is not None:
            self._emit(Cancelled(replaced.job_id))
        return handle

    def _take_interactive(self) -> tuple[Job, int] | None:
        with self._cond:
            if not self._mailbox:
                return None
            lane, job = self._mailbox.popitem(last=False)
            return job, self._lane_generation.get(lane, 0)

    def _serve_interactive(self) -> None:
        if self._serving_interactive:
            return
        self._serving_interactive = True
        try:
            while (taken := self._take_interactive()) is not None:
                self._execute(*taken, interactive=True)
        finally:
            self._serving_interactive = False

    # ---- the thread ---------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self.device_info = choose_device(
                self.device_preference, allow_half=self.options.get("half_precision", True)
            )
        except Exception as exc:  # a broken torch install must still leave a usable UI
            self.device_info = DeviceInfo("cpu", f"CPU ({exc})", False)
        self._ready.set()
        self._emit(EngineReady("", self.device_info.device, self.device_info.name))
        while True:
            with self._cond:
                while not self._stopping and not self._queue and not self._mailbox:
                    self._cond.wait()
                if self._stopping:
                    return
                batch_job = None if self._mailbox else self._queue.popleft()
                if batch_job is not None:
                    self._emit_queue()
            if batch_job is None:
                self._serve_interactive()
                continue
            self._execute(batch_job, 0, interactive=False)

    def _execute(self, job: Job, generation: int, interactive: bool) -> None:
        ctx = JobContext(self, job, interactive=interactive)
        if not interactive:
            self._running = ctx
        self._emit(Started(job.job_id, job))
        try:
            result = _resolve(job.handler)(job, ctx)
        except JobCancelled:
            self._emit(Cancelled(job.job_id))
            return
        except UserError as exc:
            self._emit(Failed(job.job_id, exc.message, exc.detail))
            return
        except Exception as exc:
            self._emit(self._failure(job, exc))
            return
        finally:
            if not interactive:
                self._running = None
        if interactive and self._is_stale(job, generation):
            self._emit(Cancelled(job.job_id))
            return
        self._emit(Finished(job.job_id, result))

    def _is_stale(self, job: Job, generation: int) -> bool:
        with self._cond:
            return self._lane_generation.get(job.lane or "interactive", 0) != generation

    def _failure(self, job: Job, exc: Exception) -> Failed:
        detail = traceback.format_exc()
        if is_out_of_memory(exc):
            self.models.clear()
            where = "GPU" if self.device_info.device != "cpu" else "system"
            return Failed(
                job.job_id,
                f"Out of {where} memory while running {job.title}. Cached models were released; "
                "turn on attention slicing, VAE tiling or model CPU offload in Settings, "
                "or lower the size or batch size.",
                detail,
            )
        return Failed(job.job_id, f"{job.title} failed: {type(exc).__name__}: {exc}", detail)


def run_on_thread(engine: Engine, fn: Callable[[JobContext], Any]) -> Any:
    """Run an arbitrary function on the inference thread (used by tests and tools)."""
    return engine.run(CallJob(fn=fn))


@dataclass(frozen=True, kw_only=True)
class CallJob(Job):
    handler: ClassVar[str] = "studio.core.engine:_run_call"
    fn: Callable[[JobContext], Any]


def _run_call(job: CallJob, ctx: JobContext) -> Any:
    return job.fn(ctx)
