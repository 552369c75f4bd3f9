"""Seed travel and prompt travel with the Image pane's diffusion model.

Seed travel slerps between the initial noises of two seeds; prompt travel lerps
between the text embeddings of two prompts (and slerps the noise when a second
seed is given). Each frame is one ordinary pipeline call with `latents=`,
`prompt_embeds=` and `negative_prompt_embeds=`, so frame t is a function of the
request and t alone: rendering it again, alone or in a longer run, gives the
same image.
"""

from __future__ import annotations

from typing import Any

from studio.core.errors import UserError
from studio.core.export import Frames
from studio.core.guidance import guidance_key, guidance_rule


def frame_positions(job: Any) -> list[float]:
    """The t of each frame: `at` when given, else `frames` evenly from 0 to 1."""
    at = tuple(getattr(job, "at", ()) or ())
    if at:
        if any(not 0.0 <= t <= 1.0 for t in at):
            raise UserError("Frame positions must lie between 0 and 1.")
        return [float(t) for t in at]
    if job.frames < 2:
        raise UserError("A travel needs at least 2 frames.")
    return [i / (job.frames - 1) for i in range(job.frames)]


def _check(job: Any) -> None:
    if job.steps < 1:
        raise UserError("Steps must be at least 1.")
    if job.width % 8 or job.height % 8:
        raise UserError("Width and height must be multiples of 8.")
    guidance_key(job.guidance_method)


def initial_noise(pipe: Any, seed: int, width: int, height: int) -> Any:
    """The initial latents the pipeline itself draws for `seed` (CPU generator)."""
    from studio.core.latent import seeded_normal

    factor = getattr(pipe, "vae_scale_factor", 8)
    channels = pipe.unet.config.in_channels
    return seeded_normal(seed, (1, channels, height // factor, width // factor))


def _pipeline(ctx: Any, job: Any) -> Any:
    """The Image pane's cached pipeline with the request's scheduler."""
    from studio.core import diffusion

    key = diffusion.scheduler_key(job.scheduler)
    loaded = diffusion.load_pipeline(ctx, job.model)
    for name in ("width", "height"):
        value = getattr(job, name)
        if value < loaded.min_size or value % loaded.size_multiple:
            raise UserError(
                f"The {name} must be at least {loaded.min_size} and a multiple of "
                f"{loaded.size_multiple} for {loaded.name} (got {value})."
            )
    loaded.pipe.scheduler = diffusion.make_scheduler(loaded, key)
    return loaded.pipe


def _notices(pipe: Any, prompts: list[str], negative: str) -> tuple[str, ...]:
    from studio.core import diffusion

    out: list[str] = []
    for prompt in prompts:
        for notice in diffusion.encode_prompt(pipe, prompt, negative):
            if notice not in out:
                out.append(notice)
    return tuple(out)


def _encode(pipe: Any, prompt: str, negative: str, device: Any) -> dict[str, Any]:
    """Text embeddings as the pipeline's keyword arguments (SD and SDXL)."""
    import torch

    with torch.inference_mode():
        out = pipe.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=negative,
        )
    if len(out) == 4:  # SDXL: pooled embeddings too
        return {
            "prompt_embeds": out[0],
            "negative_prompt_embeds": out[1],
            "pooled_prompt_embeds": out[2],
            "negative_pooled_prompt_embeds": out[3],
        }
    return {"prompt_embeds": out[0], "negative_prompt_embeds": out[1]}


def _render(pipe: Any, ctx: Any, job: Any, latents: Any, embeds: dict[str, Any], frame: int, frames: int) -> Any:
    import torch

    total = frames * job.steps

    def on_step(_pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        ctx.progress(frame * job.steps + step + 1, total)
        return kwargs

    device = getattr(pipe, "_execution_device", None) or pipe.device
    dtype = pipe.unet.dtype
    # Ancestral schedulers draw fresh noise each step: a fixed generator per frame
    # keeps that noise the same for every frame and every rerun.
    generator = torch.Generator(device="cpu").manual_seed(int(job.seed_a))
    with torch.inference_mode(), guidance_rule(pipe, job.guidance_method):
        out = pipe(
            **embeds,
            latents=latents.to(device, dtype),
            num_inference_steps=job.steps,
            guidance_scale=float(job.guidance_scale),
            width=job.width,
            height=job.height,
            generator=generator,
            output_type="np",
            callback_on_step_end=on_step,
        )
    import numpy as np

    return (np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8)


def _threads(handler: Any) -> Any:
    """Run a travel with one intra-op thread when the pipeline's UNet is small."""
    import functools

    @functools.wraps(handler)
    def run(job: Any, ctx: Any) -> Any:
        from studio.core.latent import threads_for, torch_threads

        _check(job)
        pipe = _pipeline(ctx, job)
        with torch_threads(threads_for(pipe.unet, ctx.device)):
            return handler(job, ctx, pipe)

    return run


@_threads
def run_seed_travel(job: Any, ctx: Any, pipe: Any) -> Frames:
    from studio.core.latent import slerp

    ts = frame_positions(job)
    device = getattr(pipe, "_execution_device", None) or pipe.device
    embeds = _encode(pipe, job.prompt, job.negative_prompt, device)
    notices = _notices(pipe, [job.prompt], job.negative_prompt)
    na = initial_noise(pipe, job.seed_a, job.width, job.height)
    nb = initial_noise(pipe, job.seed_b, job.width, job.height)
    frames, params = [], []
    for i, t in enumerate(ts):
        ctx.check_cancel()
        frames.append(_render(pipe, ctx, job, slerp(na, nb, t), embeds, i, len(ts)))
        params.append({**_base_params(job), "t": t})
    return Frames(tuple(frames), tuple(params), notices, job, tuple(f"t={t:.2f}" for t in ts))


@_threads
def run_prompt_travel(job: Any, ctx: Any, pipe: Any) -> Frames:
    from studio.core.latent import lerp, slerp

    ts = frame_positions(job)
    device = getattr(pipe, "_execution_device", None) or pipe.device
    ea = _encode(pipe, job.prompt_a, job.negative_prompt, device)
    eb = _encode(pipe, job.prompt_b, job.negative_prompt, device)
    notices = _notices(pipe, [job.prompt_a, job.prompt_b], job.negative_prompt)
    na = initial_noise(pipe, job.seed_a, job.width, job.height)
    nb = na if job.seed_b is None else initial_noise(pipe, job.seed_b, job.width, job.height)
    frames, params = [], []
    for i, t in enumerate(ts):
        ctx.check_cancel()
        # Embeddings are lerped: CLIP token embeddings are not spread on a sphere the
        # way Gaussian noise is, and lerp keeps the negative branch fixed exactly.
        embeds = {k: lerp(ea[k].float().cpu(), eb[k].float().cpu(), t).to(ea[k].device, ea[k].dtype) for k in ea}
        noise = na if job.seed_b is None else slerp(na, nb, t)
        frames.append(_render(pipe, ctx, job, noise, embeds, i, len(ts)))
        params.append({**_base_params(job), "t": t})
    return Frames(tuple(frames), tuple(params), notices, job, tuple(f"t={t:.2f}" for t in ts))


def _base_params(job: Any) -> dict[str, Any]:
    data = job.to_dict()
    data.pop("frames", None)
    data.pop("at", None)
    return data
