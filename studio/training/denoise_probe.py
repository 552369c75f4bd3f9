"""Where in the reverse process does a diffusion pipeline lose an object's shape?

``python -m studio.training.denoise_probe [FOLDER]`` encodes real held-out scenes,
noises each latent to the timestep where the sampler's last K steps begin, runs
those K steps (with classifier-free guidance, the scene's own caption as the
prompt) and reads the decoded image's shape with the attribute classifier. K = 0
is the autoencoder alone; K = all steps is plain generation from pure noise. A
score that falls between K = 0 and small K is lost by the low-noise steps, which
decide a square's corners and a star's points; a fall only at large K is the
layout stage's. ``--loss`` reports the UNet's held-out noise-prediction error per
timestep instead, the measure that compares two UNets step for step.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from studio.training import world
from studio.training.classifier import Classifier, load_or_train
from studio.training.evaluate import _to_uint8
from studio.training.train_diffusion import to_tensor

PROBE_SEED_BASE = 555_000
DEFAULT_LAST_STEPS: tuple[int, ...] = (0, 2, 4, 7, 10, 20)
LOSS_TIMESTEPS: tuple[int, ...] = (20, 60, 150, 300, 500, 700, 900)


def denoising_loss(pipe: Any, n: int = 256, timesteps: Sequence[int] = LOSS_TIMESTEPS,
                   seed: int = 0, batch: int = 64) -> dict[str, Any]:
    """The UNet's noise-prediction error on held-out scenes, per timestep.

    The training loss is measured on scenes the run has seen, under whatever
    weighting its recipe used; this is the plain epsilon MSE on the same
    unseen scenes, captions and noise for every UNet, so two UNets (a narrow and
    a wide one, or two stages) compare step for step. ``object`` averages only the
    latent pixels that cover an object, where a shape's corners and points are.
    """
    import torch

    from studio.training.train_diffusion import object_mask

    images, captions, _ = world.render_batch(
        range(PROBE_SEED_BASE + seed, PROBE_SEED_BASE + seed + n), tier=1,
        caption_style="canonical")
    sf = pipe.vae.config.scaling_factor
    sums = {int(t): {"all": 0.0, "object": 0.0} for t in timesteps}
    pixels = {"all": 0, "object": 0}
    for lo in range(0, n, batch):
        x = to_tensor(images[lo:lo + batch], pipe.device)
        with torch.no_grad():
            z0 = pipe.vae.encode(x).latent_dist.mean * sf
            cond = pipe.encode_prompt(list(captions[lo:lo + batch]), pipe.device, 1, False)[0]
        mask = torch.from_numpy(object_mask(images[lo:lo + batch], z0.shape[-1]))[:, 0].to(z0.device)
        pixels["all"] += mask.numel()
        pixels["object"] += int(mask.sum())
        for t in sums:
            # the same noise for a scene whatever the batching: one generator per scene and t
            noise = torch.stack([
                torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(
                    (seed * 1_000_003 + (lo + i) * 1009 + t) % 2**63))
                for i in range(len(z0))]).to(z0.device, z0.dtype)
            tt = torch.full((len(z0),), t, device=z0.device, dtype=torch.long)
            with torch.no_grad():
                noisy = pipe.scheduler.add_noise(z0, noise, tt)
                pred = pipe.unet(noisy, tt, encoder_hidden_states=cond).sample
            err = (pred.float() - noise.float()).pow(2).mean(1)
            sums[t]["all"] += float(err.sum())
            sums[t]["object"] += float(err[mask].sum())
    by_t = {str(t): {k: v / max(1, pixels[k]) for k, v in row.items()} for t, row in sums.items()}
    return {"scenes": n, "seed": seed, "by_timestep": by_t,
            "mean": {k: float(np.mean([row[k] for row in by_t.values()])) for k in pixels}}


def probe(pipe: Any, clf: Classifier, n: int = 160, last_steps: Sequence[int] = DEFAULT_LAST_STEPS,
          steps: int = 20, guidance: float = 7.5, seed: int = 0) -> dict[str, Any]:
    """Shape accuracy (overall and per asked shape) after the sampler's last K steps, per K."""
    import torch

    images, captions, scenes = world.render_batch(
        range(PROBE_SEED_BASE + seed, PROBE_SEED_BASE + seed + n), tier=1,
        caption_style="canonical")
    shapes = np.array([s.objects[0].shape for s in scenes])
    sf = pipe.vae.config.scaling_factor
    x = to_tensor(images, pipe.device)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    with torch.no_grad():
        z0 = pipe.vae.encode(x).latent_dist.mean * sf
        # the pipeline's own prompt encoding: the caption, and "" for the unconditional half
        cond, uncond = pipe.encode_prompt(list(captions), pipe.device, 1, True)
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed)).to(z0.device, z0.dtype)
    results: dict[str, Any] = {"scenes": n, "steps": steps, "guidance": guidance,
                               "timesteps": [int(t) for t in timesteps], "by_last_steps": {}}
    for k in sorted({min(max(0, int(k)), len(timesteps)) for k in last_steps}):
        tail = timesteps[len(timesteps) - k:] if k else timesteps[:0]
        with torch.no_grad():
            if k == len(timesteps):
                latents = noise * scheduler.init_noise_sigma
            elif k:
                latents = scheduler.add_noise(z0, noise, tail[:1].repeat(n))
            else:
                latents = z0
            for t in tail:
                both = scheduler.scale_model_input(torch.cat([latents, latents]), t)
                eps_u, eps_c = pipe.unet(both, t, encoder_hidden_states=torch.cat([uncond, cond])
                                         ).sample.chunk(2)
                latents = scheduler.step(eps_u + guidance * (eps_c - eps_u), t, latents).prev_sample
            decoded = pipe.vae.decode(latents / sf).sample
        right = clf.predict(_to_uint8(decoded.cpu()))["shape"]["label"] == shapes
        results["by_last_steps"][str(k)] = {
            "start_timestep": int(tail[0]) if k else 0,
            "shape": float(right.mean()),
            "by_shape": {s: float(right[shapes == s].mean()) for s in world.SHAPES
                         if (shapes == s).any()},
        }
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.training.denoise_probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=None,
                        help="a StableDiffusionPipeline folder (default: the bundled shapes-diffusion)")
    parser.add_argument("--scenes", type=int, default=160)
    parser.add_argument("--last-steps", type=int, nargs="+", default=list(DEFAULT_LAST_STEPS),
                        metavar="K", help="run the sampler's last K steps (0: autoencoder only)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps in all")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss", action="store_true",
                        help="instead of the probe, report the UNet's held-out noise-prediction "
                             "error at timesteps " + ", ".join(map(str, LOSS_TIMESTEPS)))
    parser.add_argument("--json", default=None, help="write the results as JSON here")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.scenes <= 0 or args.steps <= 0:
        print("error: --scenes and --steps must be positive", file=sys.stderr)
        return 2
    from studio.paths import models_dir

    folder = Path(args.folder) if args.folder else models_dir() / "shapes-diffusion"
    if not (folder / "model_index.json").is_file():
        print(f"error: no pipeline (model_index.json) in {folder}", file=sys.stderr)
        return 2
    import torch
    from diffusers import StableDiffusionPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = StableDiffusionPipeline.from_pretrained(str(folder))
    if args.loss:
        res = denoising_loss(pipe, args.scenes, seed=args.seed)
        print(f"{folder}: held-out epsilon MSE on {args.scenes} scenes (all latent pixels / "
              "the object's)")
        for t, row in res["by_timestep"].items():
            print(f"t={t:>4}: {row['all']:.4f} / {row['object']:.4f}")
        print(f"mean:   {res['mean']['all']:.4f} / {res['mean']['object']:.4f}")
    else:
        res = probe(pipe, load_or_train(), args.scenes, args.last_steps, args.steps,
                    args.guidance, args.seed)
        print(f"{folder}: shape read right after the sampler's last K of {args.steps} steps, "
              f"guidance {args.guidance:g}, {args.scenes} scenes")
        for k, row in res["by_last_steps"].items():
            per = "  ".join(f"{s} {v:.2f}" for s, v in row["by_shape"].items())
            print(f"K={k:>3} (from t={row['start_timestep']:>4}): {row['shape']:.3f}   {per}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
