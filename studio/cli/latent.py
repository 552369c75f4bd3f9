"""Latent exploration from the command line: interpolate, sample-gan, travel.

Each command sends the same request the VAE, GAN or Travel pane sends through an
engine, then writes the frames by the output's suffix (.png strip or grid, .gif,
.webp, .mp4). Import-light: torch loads only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from studio.core.settings import Settings


def register(sub: Any) -> None:
    p = sub.add_parser(
        "interpolate",
        help="decode a VAE interpolation between two images to a strip or an animation",
        description="Encode A and B with a VAE (posterior mean), interpolate, decode. "
        "An endpoint may be prior:SEED for a sample of N(0, I).",
    )
    p.add_argument("a", metavar="A", help="first image (or prior:SEED)")
    p.add_argument("b", metavar="B", help="second image (or prior:SEED)")
    p.add_argument("--vae", default="shapes-vae", help="VAE name or folder (AutoencoderKL, pipeline, 2-D VAE)")
    p.add_argument("--steps", type=int, default=16, help="frames, endpoints included (default 16)")
    p.add_argument("--mode", choices=("lerp", "slerp"), default="slerp")
    _output_args(p, "strip.png")
    p.set_defaults(func=_interpolate)

    p = sub.add_parser("sample-gan", help="sample a GAN generator by seed into a grid or animation")
    p.add_argument("--model", default="shapes-gan", help="DCGAN folder or TorchScript file")
    p.add_argument("--seeds", default="0-15", help="seeds: 0-15, or 1,5,9 (default 0-15)")
    p.add_argument("--truncation", type=float, default=1.0, help="ψ: 1 leaves z, 0 gives the mean sample")
    p.add_argument("--z-dim", type=int, default=0, help="z size of a TorchScript generator without metadata")
    p.add_argument("--columns", type=int, default=0, help="grid columns (default: near square)")
    _output_args(p, "grid.png")
    p.set_defaults(func=_sample_gan)

    p = sub.add_parser(
        "travel",
        help="seed travel or prompt travel with a diffusion model",
        description="With one prompt (--prompt) and two seeds: seed travel. With --prompt-a "
        "and --prompt-b: prompt travel, the noise of --seed-a throughout unless --seed-b is given.",
    )
    p.add_argument("--model", default="shapes-diffusion", help="diffusers pipeline name or folder")
    p.add_argument("--prompt", default=None, help="prompt for seed travel")
    p.add_argument("--prompt-a", default=None)
    p.add_argument("--prompt-b", default=None)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--seed-a", type=int, default=0)
    p.add_argument("--seed-b", type=int, default=None)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--guidance", default=Settings.guidance_method,
                   help="cfg (classifier-free guidance), fdg (frequency-decoupled) or apg "
                   f"(adaptive projected); default {Settings.guidance_method}, as the Image pane")
    p.add_argument("--scheduler", default="euler")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    _output_args(p, "travel.gif")
    p.set_defaults(func=_travel)


def _output_args(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("-o", "--output", required=True, help=f"output file: .png, .gif, .webp or .mp4 (e.g. {example})")
    p.add_argument("--fps", type=float, default=12.0, help="animation frames per second (default 12)")
    p.add_argument("--scale", type=int, default=1, help="upscale each frame by this factor (nearest)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"), help="device (default auto)")


def parse_seeds(text: str) -> tuple[int, ...]:
    """"0-15", "1,5,9" or a mix ("0-3,10") → seeds in order."""
    import re

    from studio.core.errors import UserError

    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", part)
        if m is None or (m.group(1) and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"Cannot read seeds {text!r}: use a range like 0-15 or a list like 1,5,9.")
        if m.group(3):
            seeds.append(int(m.group(3)))
        else:
            seeds.extend(range(int(m.group(1)), int(m.group(2)) + 1))
        if len(seeds) > 1024:
            raise UserError("Too many seeds for one grid (at most 1024).")
    if not seeds:
        raise UserError("No seeds given.")
    return tuple(seeds)


def _run(job: Any, device: str = "auto") -> Any:
    from studio.core.engine import Engine

    engine = Engine(device=device)
    engine.start()
    try:
        return engine.run(job)
    finally:
        engine.stop()


def _write(result: Any, args: argparse.Namespace, columns: int | None = None) -> int:
    from studio.core import export

    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    path = export.save(result.frames, args.output, fps=args.fps, scale=args.scale, columns=columns)
    h, w = result.frames[0].shape[:2]
    print(f"{path}: {len(result.frames)} frames of {w * max(args.scale, 1)}×{h * max(args.scale, 1)}")
    return 0


def _interpolate(args: argparse.Namespace) -> int:
    from studio.core.errors import UserError
    from studio.core.jobs import VaeInterpolate

    if args.steps < 2:
        raise UserError("--steps must be at least 2.")
    result = _run(VaeInterpolate(model=args.vae, a=args.a, b=args.b, steps=args.steps, mode=args.mode), args.device)
    return _write(result, args, columns=len(result.frames))


def _sample_gan(args: argparse.Namespace) -> int:
    from studio.core.jobs import GanSample

    job = GanSample(model=args.model, seeds=parse_seeds(args.seeds), truncation=args.truncation, z_dim=args.z_dim)
    result = _run(job, args.device)
    return _write(result, args, columns=args.columns or None)


def _travel(args: argparse.Namespace) -> int:
    from studio.core.errors import UserError
    from studio.core.jobs import PromptTravel, SeedTravel

    common = {
        "model": args.model,
        "negative_prompt": args.negative_prompt,
        "frames": args.frames,
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "guidance_method": args.guidance,
        "scheduler": args.scheduler,
        "width": args.width,
        "height": args.height,
        "seed_a": args.seed_a,
    }
    if args.prompt_a is not None or args.prompt_b is not None:
        if args.prompt_a is None or args.prompt_b is None:
            raise UserError("Prompt travel needs both --prompt-a and --prompt-b.")
        job: Any = PromptTravel(prompt_a=args.prompt_a, prompt_b=args.prompt_b, seed_b=args.seed_b, **common)
    else:
        if args.prompt is None:
            raise UserError("Give --prompt (seed travel) or --prompt-a and --prompt-b (prompt travel).")
        seed_b = args.seed_b if args.seed_b is not None else args.seed_a + 1
        job = SeedTravel(prompt=args.prompt, seed_b=seed_b, **common)
    result = _run(job, args.device)
    return _write(result, args, columns=len(result.frames))
