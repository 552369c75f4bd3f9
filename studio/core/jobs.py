"""Requests the inference thread serves, and the events a job emits.

A request is a frozen dataclass holding everything needed to reproduce its
result; `handler` names the function ("module:function") that runs it on the
inference thread, imported lazily so torch stays off the UI's start-up path.
Each model family adds its requests in its own section below.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

_ids = itertools.count(1)


def new_job_id() -> str:
    return f"job-{next(_ids)}"


@dataclass(frozen=True, kw_only=True)
class Job:
    handler: ClassVar[str] = ""
    # Interactive requests go to a latest-only mailbox keyed by `lane`
    # instead of the batch queue (see Engine.request_interactive).
    lane: ClassVar[str] = ""
    job_id: str = field(default_factory=new_job_id, compare=False)

    @property
    def title(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("job_id", None)
        data["type"] = type(self).__name__
        return data


# ---- events -----------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    job_id: str


@dataclass(frozen=True)
class EngineReady(Event):
    device: str = ""
    device_name: str = ""


@dataclass(frozen=True)
class QueueChanged(Event):
    pending: tuple[Job, ...] = ()


@dataclass(frozen=True)
class Started(Event):
    job: Job | None = None


@dataclass(frozen=True)
class Progress(Event):
    step: int = 0
    total: int = 0
    # HxWx3 uint8 numpy array (or None): cheap preview of the work in progress.
    preview: Any = None


@dataclass(frozen=True)
class Token(Event):
    text: str = ""


@dataclass(frozen=True)
class Finished(Event):
    result: Any = None


@dataclass(frozen=True)
class Failed(Event):
    message: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Cancelled(Event):
    pass


TERMINAL_EVENTS = (Finished, Failed, Cancelled)


# ---- text to image ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TextToImage(Job):
    handler: ClassVar[str] = "studio.core.diffusion:run_text_to_image"
    prompt: str
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    steps: int = 30
    scheduler: str = "euler"
    seed: int = 0
    width: int = 64
    height: int = 64
    batch_size: int = 1
    model: str = "shapes-diffusion"

    @property
    def title(self) -> str:
        return f"Image: {self.prompt[:40] or '(empty prompt)'}"
