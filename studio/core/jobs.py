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
    # "cfg" (classifier-free guidance, what every other tool does), "fdg" or "apg";
    # see studio.core.guidance.
    guidance_method: str = "cfg"
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


@dataclass(frozen=True, kw_only=True)
class CountTokens(Job):
    """How many tokens `prompt` takes in `model`'s text encoder: result (count, limit).
    Interactive, so typing in the prompt box stays live while an image renders."""

    handler: ClassVar[str] = "studio.core.diffusion:run_count_tokens"
    lane: ClassVar[str] = "tokens"
    prompt: str
    model: str = "shapes-diffusion"


# ---- chat (local causal LMs) -------------------------------------------------

# The decoding methods the Prompt pane offers, by the names textbooks give them.
DECODING_METHODS = ("greedy", "sample", "beam")


@dataclass(frozen=True, kw_only=True)
class Decoding:
    method: str = "sample"  # one of DECODING_METHODS
    temperature: float = 0.7
    top_k: int = 40  # 0: off
    top_p: float = 0.95  # 1.0: off
    num_beams: int = 4  # used by "beam" only
    repetition_penalty: float = 1.1
    max_new_tokens: int = 256
    seed: int = -1  # -1: a fresh seed each time, reported in the result
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ChatRequest(Job):
    handler: ClassVar[str] = "studio.core.llm:run_chat"
    model: str = "prompt-writer"  # a picker name, an HF repo id in the local cache, or a folder
    system: str = ""
    # (role, content) pairs, oldest first; the last one is the user's new message.
    messages: tuple[tuple[str, str], ...] = ()
    decoding: Decoding = field(default_factory=Decoding)
    # Only ever True when the user ticked "trust remote code" for this model.
    trust_remote_code: bool = False

    @property
    def title(self) -> str:
        last = self.messages[-1][1] if self.messages else ""
        return f"Chat: {last[:40] or '(empty message)'}"


# ---- latent exploration: VAE, GAN, travel ---------------------------------------
# Endpoints are image paths or "prior:SEED" (a sample of N(0, I)). Requests with a
# `lane` are interactive: a slider drag sends many, only the newest is rendered.


@dataclass(frozen=True, kw_only=True)
class VaeInterpolate(Job):
    handler: ClassVar[str] = "studio.core.vae:run_interpolate"
    model: str = "shapes-vae"
    a: str
    b: str
    steps: int = 16
    mode: str = "slerp"

    @property
    def title(self) -> str:
        return f"VAE interpolation ({self.steps} steps, {self.mode})"


@dataclass(frozen=True, kw_only=True)
class VaeScrub(Job):
    handler: ClassVar[str] = "studio.core.vae:run_scrub"
    lane: ClassVar[str] = "vae"
    model: str = "shapes-vae"
    a: str
    b: str
    t: float = 0.5
    mode: str = "slerp"


@dataclass(frozen=True, kw_only=True)
class VaePriorGrid(Job):
    handler: ClassVar[str] = "studio.core.vae:run_prior_grid"
    lane: ClassVar[str] = "vae-prior"
    model: str = "shapes-vae"
    seed: int = 0
    count: int = 16

    @property
    def title(self) -> str:
        return f"VAE prior samples (seed {self.seed})"


@dataclass(frozen=True, kw_only=True)
class VaeLatentMap(Job):
    """A decoded grid over the latent plane: the plane itself for a 2-D latent,
    otherwise the plane through the encodings of three images."""

    handler: ClassVar[str] = "studio.core.vae:run_latent_map"
    model: str = "shapes-vae-2d"
    images: tuple[str, ...] = ()
    grid: int = 12
    extent: float = 0.0  # 2-D map half-width; 0: the model's latent range (else ±3)

    @property
    def title(self) -> str:
        return f"VAE latent map ({self.grid}×{self.grid})"


@dataclass(frozen=True, kw_only=True)
class VaeDecodePoint(Job):
    handler: ClassVar[str] = "studio.core.vae:run_decode_point"
    lane: ClassVar[str] = "vae"
    model: str = "shapes-vae-2d"
    images: tuple[str, ...] = ()
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True, kw_only=True)
class VaeReconstruct(Job):
    handler: ClassVar[str] = "studio.core.vae:run_reconstruct"
    model: str = "shapes-vae"
    image: str

    @property
    def title(self) -> str:
        return "VAE reconstruction"


@dataclass(frozen=True, kw_only=True)
class GanSample(Job):
    """A page of samples by seed; interactive so dragging ψ re-renders live."""

    handler: ClassVar[str] = "studio.core.gan:run_sample"
    lane: ClassVar[str] = "gan-grid"
    model: str = "shapes-gan"
    seeds: tuple[int, ...] = tuple(range(16))
    truncation: float = 1.0
    z_dim: int = 0  # 0: from the model's config or metadata


@dataclass(frozen=True, kw_only=True)
class GanEdit(Job):
    """One sample moved along latent directions by `amounts` standard deviations."""

    handler: ClassVar[str] = "studio.core.gan:run_edit"
    lane: ClassVar[str] = "gan"
    model: str = "shapes-gan"
    seed: int = 0
    truncation: float = 1.0
    directions: tuple[tuple[float, ...], ...] = ()
    stds: tuple[float, ...] = ()
    amounts: tuple[float, ...] = ()
    z_dim: int = 0


@dataclass(frozen=True, kw_only=True)
class GanInterpolate(Job):
    handler: ClassVar[str] = "studio.core.gan:run_interpolate"
    model: str = "shapes-gan"
    seed_a: int = 0
    seed_b: int = 1
    frames: int = 24
    truncation: float = 1.0
    mode: str = "slerp"
    z_dim: int = 0

    @property
    def title(self) -> str:
        return f"GAN interpolation {self.seed_a} → {self.seed_b}"


@dataclass(frozen=True, kw_only=True)
class GanWalk(Job):
    """A looping random walk: slerp through `keypoints` latents drawn from seed, seed+1, ..."""

    handler: ClassVar[str] = "studio.core.gan:run_walk"
    model: str = "shapes-gan"
    seed: int = 0
    frames: int = 48
    keypoints: int = 4
    truncation: float = 1.0
    z_dim: int = 0

    @property
    def title(self) -> str:
        return f"GAN random walk (seed {self.seed})"


@dataclass(frozen=True, kw_only=True)
class GanDirections(Job):
    """GANSpace: PCA over sampled latents ("latent") or an early layer's activations."""

    handler: ClassVar[str] = "studio.core.gan:run_directions"
    model: str = "shapes-gan"
    source: str = "activations"
    count: int = 8
    samples: int = 2000
    seed: int = 0
    z_dim: int = 0

    @property
    def title(self) -> str:
        return f"GAN PCA directions ({self.source})"


@dataclass(frozen=True, kw_only=True)
class SeedTravel(Job):
    """Slerp between the initial noises of two seeds, one prompt."""

    handler: ClassVar[str] = "studio.core.travel:run_seed_travel"
    model: str = "shapes-diffusion"
    prompt: str = ""
    negative_prompt: str = ""
    seed_a: int = 0
    seed_b: int = 1
    frames: int = 24
    steps: int = 20
    guidance_scale: float = 7.5
    guidance_method: str = "cfg"  # as TextToImage's
    scheduler: str = "euler"
    width: int = 64
    height: int = 64
    at: tuple[float, ...] = ()  # render only these t (0..1) instead of `frames`

    @property
    def title(self) -> str:
        return f"Seed travel {self.seed_a} → {self.seed_b}"


@dataclass(frozen=True, kw_only=True)
class PromptTravel(Job):
    """Interpolate the text embeddings of two prompts; the noise slerps from seed_a
    to seed_b (seed_b = None keeps seed_a's noise for every frame)."""

    handler: ClassVar[str] = "studio.core.travel:run_prompt_travel"
    model: str = "shapes-diffusion"
    prompt_a: str = ""
    prompt_b: str = ""
    negative_prompt: str = ""
    seed_a: int = 0
    seed_b: int | None = None
    frames: int = 24
    steps: int = 20
    guidance_scale: float = 7.5
    guidance_method: str = "cfg"  # as TextToImage's
    scheduler: str = "euler"
    width: int = 64
    height: int = 64
    at: tuple[float, ...] = ()

    @property
    def title(self) -> str:
        return f"Prompt travel: {self.prompt_a[:20]} → {self.prompt_b[:20]}"


@dataclass(frozen=True, kw_only=True)
class ExportFrames(Job):
    """Write frames to PNG (strip/grid), GIF, WebP or MP4, chosen by the suffix."""

    handler: ClassVar[str] = "studio.core.export:run_export"
    frames: tuple[Any, ...] = ()
    path: str = ""
    fps: float = 12.0
    scale: int = 1
    columns: int = 0

    @property
    def title(self) -> str:
        return f"Export {self.path.rsplit('/', 1)[-1]}"
