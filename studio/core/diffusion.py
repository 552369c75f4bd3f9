"""Text-to-image with diffusers: Stable Diffusion and SDXL pipeline folders.

Runs on the inference thread. A pipeline is loaded once per model through the
engine's model cache; each job sets its scheduler, seeds one CPU generator per
image (seed, seed+1, ... as A1111 does, so an image reproduces alone), reports a
cheap preview at every step and stops at the next step boundary on cancel, so
the final VAE decode is skipped and nothing is saved. torch and diffusers are
imported inside functions: the window imports this module at start-up.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.core.errors import UserError
from studio.core.guidance import guidance_key, guidance_rule
from studio.core.jobs import CountTokens, TextToImage
from studio.core.metadata import SAMPLER_NAMES

if TYPE_CHECKING:
    from studio.core.engine import JobContext

# Scheduler keys (what requests carry) → the names A1111 writes after "Sampler:".
SCHEDULERS: dict[str, str] = dict(SAMPLER_NAMES)

_SCHEDULER_CLASSES = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "lcm": ("LCMScheduler", {}),
}

MAX_SIZE = 4096
MAX_BATCH = 64
MAX_SEED = 2**63 - 1
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


@dataclass
class ImageResult:
    images: list[Any]  # PIL images
    paths: list[Path]
    seeds: list[int]
    request: TextToImage
    notices: list[str] = field(default_factory=list)


@dataclass
class LoadedPipeline:
    pipe: Any
    path: Path
    name: str
    is_xl: bool
    base_scheduler_config: dict[str, Any]
    supports_lcm: bool
    min_size: int
    size_multiple: int
    previewer: Any = None
    preview_source: str = ""  # the tiny decoder folder the previewer uses; "": linear fit
    model_hash: str | None = None


# ---- names and checks that need no torch -------------------------------------------


def scheduler_key(name: str) -> str:
    """Our key for a scheduler given by key or by its A1111 name; UserError if unknown."""
    from studio.core.metadata import sampler_key

    key = sampler_key(name)
    if key is None or key not in SCHEDULERS:
        choices = ", ".join(f"{k} ({v})" for k, v in SCHEDULERS.items())
        raise UserError(f"Unknown scheduler {name!r}: choose one of {choices}.")
    return key


def supports_lcm(model_path: str | os.PathLike[str]) -> bool:
    """LCM sampling needs an LCM-distilled model: a UNet with a guidance embedding, or a
    folder that ships LCMScheduler."""
    p = Path(model_path)
    unet = _json_or_none(p / "unet" / "config.json") or {}
    sched = _json_or_none(p / "scheduler" / "scheduler_config.json") or {}
    return unet.get("time_cond_proj_dim") is not None or sched.get("_class_name") == "LCMScheduler"


def available_schedulers(model_path: str | os.PathLike[str] | None = None) -> list[str]:
    """Scheduler keys a model can run (LCM only where the model supports it)."""
    keys = list(SCHEDULERS)
    if model_path is None or not supports_lcm(model_path):
        keys.remove("lcm")
    return keys


def _json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def validate_request(job: TextToImage) -> str:
    """Check what can be checked without the model; returns the scheduler key."""
    for name in ("width", "height"):
        value = getattr(job, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"The {name} must be a whole number of pixels, not {value!r}.")
        if value < 8 or value > MAX_SIZE:
            raise UserError(f"The {name} must be between 8 and {MAX_SIZE} pixels (got {value}).")
        if value % 8:
            lower, upper = value - value % 8, value - value % 8 + 8
            raise UserError(
                f"The {name} must be a multiple of 8 (got {value}; try {max(lower, 8)} or {upper})."
            )
    if not isinstance(job.steps, int) or isinstance(job.steps, bool) or job.steps < 1:
        raise UserError(f"Steps must be a whole number of at least 1 (got {job.steps!r}).")
    try:
        cfg = float(job.guidance_scale)
    except (TypeError, ValueError):
        raise UserError(f"The CFG scale must be a number (got {job.guidance_scale!r}).") from None
    if not math.isfinite(cfg) or cfg < 0:
        raise UserError(f"The CFG scale must be a finite number of 0 or more (got {cfg}).")
    if not isinstance(job.batch_size, int) or not 1 <= job.batch_size <= MAX_BATCH:
        raise UserError(
            f"The batch size must be between 1 and {MAX_BATCH} (got {job.batch_size!r})."
        )
    if not isinstance(job.seed, int) or isinstance(job.seed, bool) or job.seed > MAX_SEED:
        raise UserError(
            f"The seed must be a whole number up to {MAX_SEED}, or -1 for random (got {job.seed!r})."
        )
    guidance_key(job.guidance_method)
    return scheduler_key(job.scheduler)


def check_pipeline_folder(path: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Check a diffusers pipeline folder before loading it, naming the file at fault;
    returns its model_index.json."""
    if not path.exists():
        raise UserError(f"The model folder {path} does not exist.")
    if not path.is_dir():
        raise UserError(f"{path} is a file, not a diffusers pipeline folder.")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise UserError(f"{path} is not a diffusers pipeline folder: model_index.json is missing.")
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"Cannot read {index_file}: {exc}") from exc
    except ValueError as exc:
        raise UserError(f"{index_file} is corrupt (not valid JSON: {exc}).") from exc
    if not isinstance(index, dict):
        raise UserError(f"{index_file} is corrupt (not a JSON object).")
    cls = str(index.get("_class_name", ""))
    if cls not in SUPPORTED_PIPELINES and not _looks_like_sd(index):
        raise UserError(
            f"{path.name} holds a {cls or 'unknown'} pipeline; text-to-image runs "
            "Stable Diffusion and SDXL pipelines."
        )
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        _check_component(path / component, component, allow_pickle)
    return index


def _looks_like_sd(index: dict[str, Any]) -> bool:
    return all(isinstance(index.get(k), list) for k in ("unet", "vae", "text_encoder", "tokenizer"))


def _check_component(folder: Path, component: str, allow_pickle: bool) -> None:
    if not folder.is_dir():
        raise UserError(f"The model is incomplete: the folder {folder} is missing.")
    if component.startswith("tokenizer") or component == "feature_extractor":
        return
    if component.startswith("scheduler"):
        config = folder / "scheduler_config.json"
        if _json_or_none(config) is None:
            raise UserError(f"{config} is missing or corrupt.")
        return
    config = folder / "config.json"
    if not config.is_file():
        raise UserError(f"The model is incomplete: {config} is missing.")
    if _json_or_none(config) is None:
        raise UserError(f"{config} is corrupt (not valid JSON).")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p for p in folder.iterdir() if p.suffix in (".bin", ".ckpt", ".pt"))
        if pickles and not allow_pickle:
            raise UserError(
                f"{pickles[0]} is a pickle checkpoint, which can run code when loaded; "
                "convert it to safetensors, or allow pickle checkpoints in Settings."
            )
        if not pickles:
            raise UserError(f"The model is incomplete: {folder} holds no weights file.")
        return
    for w in weights:
        _check_safetensors(w)


def _check_safetensors(path: Path) -> None:
    """A truncated or garbled safetensors file is caught here by its header, cheaply."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ValueError("file too short")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 * 2**20):
                raise ValueError("header length out of range")
            header = json.loads(fh.read(n))
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
        if 8 + n + end > size:
            raise ValueError("file is truncated")
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as exc:
        raise UserError(f"The weights file {path} is corrupt ({exc}).") from exc


# ---- loading --------------------------------------------------------------------


def _settings_for(options: dict[str, Any]) -> Any:
    from studio.core.settings import Settings

    return Settings(model_folders=list(options.get("model_folders", [])))


def resolve_pipeline_path(model: str, options: dict[str, Any] | None = None) -> Path:
    from studio.core.registry import resolve_model

    return resolve_model(model, "diffusers-pipeline", settings=_settings_for(options or {}))


def load_pipeline(ctx: JobContext, model: str) -> LoadedPipeline:
    """The pipeline for `model` (name, HF repo id or path), loaded once and cached."""
    path = resolve_pipeline_path(model, ctx.options).resolve()
    offload = bool(ctx.options.get("cpu_offload")) and ctx.device != "cpu"
    key = f"diffusers:{path}:{ctx.device}:{ctx.dtype}:{'offload' if offload else 'resident'}"
    allow_pickle = bool(ctx.options.get("allow_pickle_checkpoints"))
    if ctx.models.peek(key) is None:
        check_pipeline_folder(path, allow_pickle)
    loaded = ctx.models.get(
        key,
        lambda: _load(path, ctx.device, ctx.dtype, offload, allow_pickle, ctx.options),
        group="diffusion",
    )
    _apply_memory_switches(loaded.pipe, ctx.options)
    if str(ctx.options.get("preview_decoder") or "") != loaded.preview_source:
        _attach_previewer(loaded, ctx.options)
    return loaded


def _load(
    path: Path, device: str, dtype: Any, offload: bool, allow_pickle: bool, options: dict[str, Any]
) -> LoadedPipeline:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Our own notices say what matters (e.g. a truncated prompt); the libraries'
    # warnings and progress bars would only clutter the CLI's stderr.
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()

    index = _json_or_none(path / "model_index.json") or {}
    is_xl = "XL" in str(index.get("_class_name", ""))
    cls = StableDiffusionXLPipeline if is_xl else StableDiffusionPipeline
    kwargs: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if not is_xl:
        kwargs.update(safety_checker=None, requires_safety_checker=False, feature_extractor=None)
    try:
        with warnings.catch_warnings():
            # Newer diffusers renamed torch_dtype; the old name works across versions.
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = cls.from_pretrained(path, **kwargs)
    except Exception as exc:
        if _is_oom(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"Cannot load the model {path}: {first}", repr(exc)) from exc
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    unet_cfg = pipe.unet.config
    vae_factor = int(getattr(pipe, "vae_scale_factor", 8))
    min_size = vae_factor * 2 ** (len(unet_cfg.down_block_types) - 1)
    loaded = LoadedPipeline(
        pipe=pipe,
        path=path,
        name=path.name if path.parent.name != "snapshots" else _repo_name(path),
        is_xl=is_xl,
        base_scheduler_config=dict(pipe.scheduler.config),
        supports_lcm=supports_lcm(path),
        min_size=max(8, -(-min_size // 8) * 8),
        size_multiple=max(8, vae_factor),
    )
    _attach_previewer(loaded, options)
    return loaded


def _attach_previewer(loaded: LoadedPipeline, options: dict[str, Any]) -> None:
    from studio.core.previews import make_previewer

    loaded.preview_source = str(options.get("preview_decoder") or "")
    try:
        loaded.previewer = make_previewer(loaded.pipe, options)
    except Exception as exc:
        # Previews are a convenience: a VAE the fit cannot handle (or a broken tiny
        # decoder folder) must not stop generation.
        if _is_oom(exc):
            raise
        loaded.previewer = None


def _repo_name(snapshot: Path) -> str:
    # …/models--org--name/snapshots/<rev> → org/name, as the picker lists it.
    repo_folder = snapshot.parent.parent.name
    return repo_folder.removeprefix("models--").replace("--", "/")


def _apply_memory_switches(pipe: Any, options: dict[str, Any]) -> None:
    if options.get("attention_slicing"):
        pipe.enable_attention_slicing()
    else:
        pipe.disable_attention_slicing()
    if options.get("vae_tiling"):
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()


def make_scheduler(loaded: LoadedPipeline, key: str) -> Any:
    if key == "lcm" and not loaded.supports_lcm:
        raise UserError(
            f"The LCM sampler needs an LCM-distilled model, and {loaded.name} is not one: "
            "choose another scheduler."
        )
    return scheduler_from_config(key, loaded.base_scheduler_config)


def scheduler_from_config(key: str, config: Any) -> Any:
    """The scheduler ``key`` (a key of SCHEDULERS) names, built from a pipeline's own
    scheduler config, so its betas, prediction type and timestep spacing carry over."""
    import diffusers

    if key not in _SCHEDULER_CLASSES:
        raise UserError(f"Unknown scheduler {key!r}: choose one of {', '.join(_SCHEDULER_CLASSES)}.")
    cls_name, overrides = _SCHEDULER_CLASSES[key]
    return getattr(diffusers, cls_name).from_config(config, **overrides)


# ---- prompts ----------------------------------------------------------------------


def count_tokens(tokenizer: Any, text: str) -> tuple[int, int]:
    """(tokens the prompt takes, tokens the text encoder takes), without BOS/EOS."""
    ids = tokenizer(text, truncation=False, add_special_tokens=False).input_ids
    return len(ids), int(tokenizer.model_max_length) - 2


def encode_prompt(pipe: Any, prompt: str, negative_prompt: str = "") -> list[str]:
    """Notices for prompts longer than the text encoder takes: what gets dropped.
    The pipeline itself truncates them; the request keeps the full text."""
    notices = []
    for label, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
        if not text:
            continue
        ids = pipe.tokenizer(text, truncation=False, add_special_tokens=False).input_ids
        limit = int(pipe.tokenizer.model_max_length) - 2
        if len(ids) > limit:
            dropped = pipe.tokenizer.decode(ids[limit:]).strip()
            notices.append(
                f"The {label} is {len(ids)} tokens long and the text encoder takes {limit}: "
                f"the end was ignored (\u201c{_shorten(dropped)}\u201d)."
            )
    return notices


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def run_count_tokens(job: CountTokens, ctx: JobContext) -> tuple[int, int]:
    path = resolve_pipeline_path(job.model, ctx.options).resolve()
    cached = [ctx.models.peek(k) for k in ctx.models.keys() if k.startswith(f"diffusers:{path}:")]
    if cached:
        tokenizer = cached[0].pipe.tokenizer
    else:
        tokenizer = ctx.models.get(
            f"tokenizer:{path}", lambda: _load_tokenizer(path), group="tokenizer"
        )
    return count_tokens(tokenizer, job.prompt)


def _load_tokenizer(path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()

    folder = path / "tokenizer"
    if not folder.is_dir():
        raise UserError(f"The model is incomplete: the folder {folder} is missing.")
    try:
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise UserError(f"Cannot read the tokenizer in {folder}: {exc}") from exc


# ---- the job ------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    from studio.core.devices import is_out_of_memory

    return is_out_of_memory(exc)


def run_text_to_image(job: TextToImage, ctx: JobContext) -> ImageResult:
    # 1. Inputs that need no model.
    key = validate_request(job)
    seed = job.seed if job.seed >= 0 else random.randint(0, 2**32 - 1)
    job = replace(job, seed=seed, scheduler=key, guidance_method=guidance_key(job.guidance_method))
    outputs_dir = Path(ctx.options.get("outputs_dir") or _default_outputs()).expanduser()
    ctx.check_cancel()
    failure: UserError | None = None
    try:
        return _generate(job, key, ctx, outputs_dir)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        failure = _oom_error(ctx, job, exc)
    # Released only here, once the failed frames and the tensors they held are gone.
    ctx.models.clear()
    raise failure


def _generate(job: TextToImage, key: str, ctx: JobContext, outputs_dir: Path) -> ImageResult:
    # 2. The pipeline (cached) and the checks that need it.
    loaded = load_pipeline(ctx, job.model)
    _check_size(job, loaded)
    pipe = loaded.pipe
    pipe.scheduler = make_scheduler(loaded, key)
    train_steps = int(pipe.scheduler.config.get("num_train_timesteps", 1000))
    if job.steps > train_steps:
        raise UserError(f"Steps must be at most {train_steps} for this model (got {job.steps}).")
    notices = encode_prompt(pipe, job.prompt, job.negative_prompt)
    if job.negative_prompt and job.guidance_scale <= 1 and key != "lcm":
        notices.append("The negative prompt has no effect at a CFG scale of 1 or less.")

    # 3. Denoise, with a preview and a cancel check at every step.
    import torch

    seeds = [(job.seed + i) % (MAX_SEED + 1) for i in range(job.batch_size)]
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    previewer = loaded.previewer if ctx.options.get("previews", True) else None
    denoised: dict[str, Any] = {}
    if previewer:
        capture_denoised(pipe.scheduler, denoised)

    def on_step_end(p: Any, i: int, t: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = int(getattr(p, "num_timesteps", 0) or job.steps)
        preview = None
        if previewer:
            latents = denoised.pop("x0", None)
            preview = previewer(tensors["latents"] if latents is None else latents, job.width, job.height)
        ctx.progress(i + 1, total, preview)
        return {}

    ctx.progress(0, job.steps, None)
    # The rules rewrite guided steps only; LCM models are guided by their embedding instead.
    rule = "cfg" if key == "lcm" else job.guidance_method
    with torch.inference_mode(), guidance_rule(pipe, rule):
        out = pipe(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt or None,
            num_inference_steps=job.steps,
            guidance_scale=float(job.guidance_scale),
            width=job.width,
            height=job.height,
            num_images_per_prompt=job.batch_size,
            generator=generators,
            callback_on_step_end=on_step_end,
            output_type="pil",
        )
    images = list(out.images)
    del out
    # A cancel that arrives during the final decode still saves nothing.
    ctx.check_cancel()

    # 4. Save each image atomically, with the parameters that reproduce it alone.
    paths = save_images(images, job, seeds, loaded, outputs_dir)
    return ImageResult(images=images, paths=paths, seeds=seeds, request=job, notices=notices)


def capture_denoised(scheduler: Any, into: dict[str, Any]) -> None:
    """Keep the scheduler's estimate of the clean latents at each step in `into["x0"]`.

    Previews show that estimate, as A1111 and ComfyUI do: the noisy latents the
    pipeline hands to its callback are mostly noise early on, at a scale that grows
    with the noise level, and decode to saturated colour noise.
    """
    step = scheduler.step

    def step_and_keep(*args: Any, **kwargs: Any) -> Any:
        out = step(*args, **kwargs)
        x0 = None
        if isinstance(out, tuple):
            x0 = out[1] if len(out) > 1 else None
        else:
            x0 = getattr(out, "pred_original_sample", None)
            if x0 is None:
                x0 = getattr(out, "denoised", None)
        if x0 is None:
            # DPM-Solver++ keeps its data prediction (the clean estimate) in model_outputs.
            outputs = [m for m in getattr(scheduler, "model_outputs", None) or [] if m is not None]
            if outputs and scheduler.config.get("algorithm_type") == "dpmsolver++":
                x0 = outputs[-1]
        into["x0"] = x0
        return out

    scheduler.step = step_and_keep


def _default_outputs() -> Path:
    from studio.core.settings import default_outputs_dir

    return default_outputs_dir()


def _check_size(job: TextToImage, loaded: LoadedPipeline) -> None:
    for name in ("width", "height"):
        value = getattr(job, name)
        if value < loaded.min_size:
            raise UserError(
                f"The {name} must be at least {loaded.min_size} pixels for {loaded.name} (got {value})."
            )
        if value % loaded.size_multiple:
            raise UserError(
                f"The {name} must be a multiple of {loaded.size_multiple} for {loaded.name} (got {value})."
            )


def _oom_error(ctx: JobContext, job: TextToImage, exc: BaseException) -> UserError:
    import traceback

    detail = "".join(traceback.format_exception(exc))
    where = "GPU" if ctx.device != "cpu" else "system"
    batch = f", batch of {job.batch_size}" if job.batch_size > 1 else ""
    return UserError(
        f"Out of {where} memory at {job.width}\u00d7{job.height}{batch}: cached models were "
        "released. Turn on VAE tiling, attention slicing or model CPU offload in Settings, "
        "or lower the size.",
        detail,
    )


def save_images(
    images: list[Any],
    job: TextToImage,
    seeds: list[int],
    loaded: LoadedPipeline,
    outputs_dir: Path,
) -> list[Path]:
    from studio.core.gallery import gallery_for
    from studio.core.metadata import format_parameters, model_hash

    if loaded.model_hash is None:
        try:
            loaded.model_hash = model_hash(loaded.path)
        except OSError:
            loaded.model_hash = ""
    gallery = gallery_for(outputs_dir)
    paths = []
    for image, seed in zip(images, seeds, strict=True):
        single = replace(job, seed=seed, batch_size=1)
        request = single.to_dict()
        text = format_parameters(request, loaded.model_hash, loaded.name)
        try:
            item = gallery.save(image, text, request)
        except UserError as exc:
            if paths:
                exc = UserError(
                    f"{exc.message} ({len(paths)} of {len(images)} images were saved.)", exc.detail
                )
            raise exc from None
        paths.append(item.path)
    return paths
