"""Train ``models/shapes-vae`` (diffusers AutoencoderKL) and ``models/shapes-vae-2d``.

* ``shapes-vae``: an ``AutoencoderKL`` with a 4x8x8 latent (256 numbers per
  64x64 image), trained on mean-squared error plus a KL term strong enough to
  keep the latent space smooth for interpolation, yet weak enough for sharp
  reconstructions. Saved with ``save_pretrained`` so
  ``AutoencoderKL.from_pretrained`` loads it.
* ``shapes-vae-2d``: the project's conv VAE (``vae2d_model.py``) with a flat
  2-D latent for the classic latent map; ``config.json`` + ``model.safetensors``.

Images are rendered on the fly from the shapes world; training seeds are drawn
below ``TRAIN_SEED_LIMIT`` and held-out evaluation seeds start at
``HELDOUT_SEED_START``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from studio.training import world
from studio.training.common import (
    CHECKPOINT_DIR,
    Progress,
    TrainError,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from studio.training.vae2d_model import DEFAULT_CONFIG as VAE2D_CONFIG
from studio.training.vae2d_model import build_vae2d

# Per model (steps, batch size); the CLI leaves them as None for train() to fill in.
DEFAULTS: dict[str, tuple[int, int]] = {"shapes-vae": (4000, 8), "shapes-vae-2d": (1500, 32)}
TRAIN_SEED_LIMIT = 1_000_000_000
HELDOUT_SEED_START = 2_000_000_000
TIER2_SHARE = 0.2

KL_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 32, 64, 64],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
}
TINY_KL_CONFIG: dict[str, Any] = dict(
    KL_CONFIG, block_out_channels=[8, 8], down_block_types=["DownEncoderBlock2D"] * 2,
    up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=4,
)
TINY_2D_CONFIG: dict[str, Any] = dict(VAE2D_CONFIG, channels=[8, 8, 8, 8], hidden=16)


# --------------------------------------------------------------------------- data & figures


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) -> float tensor (N, 3, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    arr = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    return arr.permute(0, 2, 3, 1).numpy()


def training_batch(step_seed: tuple[int, ...], batch_size: int, tier2_share: float = 0.0):
    """Images for one step, drawn from training seeds only."""
    rng = np.random.default_rng(step_seed)
    seeds = rng.integers(0, TRAIN_SEED_LIMIT, batch_size)
    tiers = [2 if rng.random() < tier2_share else 1 for _ in range(batch_size)]
    images, _, _ = world.render_batch(seeds, tiers)
    return to_tensor(images)


def heldout_images(n: int, tier2_share: float = 0.0, seed_offset: int = 0) -> np.ndarray:
    start = HELDOUT_SEED_START + seed_offset
    seeds = range(start, start + n)
    tiers = [2 if i % round(1 / tier2_share) == 0 else 1 for i in range(n)] if tier2_share else 1
    images, _, _ = world.render_batch(seeds, tiers)
    return images


def save_grid(images: np.ndarray, columns: int, path: Path | str, scale: int = 2,
              pad: int = 2) -> None:
    """Tile uint8 (N, H, W, 3) images into one PNG with a thin grey gutter."""
    from PIL import Image

    n, h, w, _ = images.shape
    rows = math.ceil(n / columns)
    sheet = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 128, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        sheet[y:y + h, x:x + w] = img
    pic = Image.fromarray(sheet)
    if scale != 1:
        pic = pic.resize((pic.width * scale, pic.height * scale), Image.NEAREST)
    pic.save(str(path))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-image PSNR in dB between uint8 image batches."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    mse = (diff ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def cosine_lr(step: int, total: int, peak: float, warmup: int, progress: float | None = None
              ) -> float:
    """Linear warm-up, then cosine decay to 2% of ``peak``.

    ``progress`` (0..1) overrides ``step / total`` after the warm-up, for runs
    whose length is set by a time budget.
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup) if progress is None else progress
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class Budget:
    """Training length: ``steps``, or fewer when ``max_minutes`` of wall time run out.

    ``progress(step)`` is the larger of the step and time fractions, so the
    learning-rate schedule still decays fully when the clock ends a run early.
    """

    def __init__(self, steps: int, max_minutes: float | None, start_step: int = 0) -> None:
        self.steps = steps
        self.seconds = max_minutes * 60 if max_minutes else None
        self.start_step = start_step
        self.t0 = time.monotonic()

    def progress(self, step: int) -> float:
        p = step / self.steps
        if self.seconds:
            p = max(p, (time.monotonic() - self.t0) / self.seconds)
        return min(1.0, p)

    def done(self, step: int) -> bool:
        return self.progress(step) >= 1.0


def _finish(out: Path, info: dict[str, Any]) -> None:
    write_json(out / "training_log.json", info)
    # The finished folder is what gets bundled; the resume state is not needed any more.
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def _resume(args: argparse.Namespace, out: Path, modules: dict, optimizers: dict) -> int:
    if not args.resume:
        return 0
    if not has_checkpoint(out):
        raise TrainError(f"--resume: no checkpoint in {out}")
    step, _ = load_checkpoint(out, modules, optimizers)
    return step


# --------------------------------------------------------------------------- AutoencoderKL


def build_kl_vae(config: dict[str, Any] | None = None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(**(config or KL_CONFIG))


def kl_reconstruct(vae, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Encode to the posterior mean and decode: uint8 in, uint8 out."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_tensor(images[i:i + batch])
            z = vae.encode(x).latent_dist.mean
            outs.append(to_uint8(vae.decode(z).sample))
    return np.concatenate(outs)


def kl_interpolations(vae, pairs: np.ndarray, steps: int = 8) -> np.ndarray:
    """Rows of decoded linear interpolations between image pairs (2k images -> k rows)."""
    import torch

    with torch.no_grad():
        z = vae.encode(to_tensor(pairs)).latent_dist.mean
        rows = []
        for k in range(0, len(pairs), 2):
            t = torch.linspace(0, 1, steps)[:, None, None, None]
            zs = z[k] * (1 - t) + z[k + 1] * t
            rows.append(to_uint8(vae.decode(zs).sample))
    return np.concatenate(rows)


def train_kl(args: argparse.Namespace) -> None:
    import torch

    out = Path(args.out)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    tiny = getattr(args, "tiny", False)
    vae = build_kl_vae(TINY_KL_CONFIG if tiny else KL_CONFIG).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = _resume(args, out, {"vae": vae}, {"opt": opt})
    warmup = max(1, min(200, args.steps // 20))
    budget = Budget(args.steps, args.max_minutes, step)
    bar = Progress(args.steps, initial=step, desc="shapes-vae")
    vae.train()
    while not budget.done(step):
        lr = cosine_lr(step, args.steps, args.lr, warmup, budget.progress(step))
        for group in opt.param_groups:
            group["lr"] = lr
        x = training_batch((args.seed, step), args.batch_size, TIER2_SHARE).to(device)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample()).sample
        mse = torch.mean((recon - x) ** 2)
        kl = post.kl().mean() / post.mean[0].numel()
        loss = mse + args.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        # PSNR on the [0, 255] scale: images span 2 units in [-1, 1].
        bar.update(loss.item(), psnr=10 * math.log10(4.0 / max(mse.item(), 1e-10)), kl=kl.item())
        if step % args.checkpoint_every == 0 and step < args.steps:
            save_checkpoint(out, step, {"vae": vae}, {"opt": opt})
    wall = bar.close()
    vae.eval().to("cpu")
    n_eval = 32 if tiny else 512
    held = heldout_images(n_eval, TIER2_SHARE)
    with torch.no_grad():
        mu = vae.encode(to_tensor(held[:256])).latent_dist.mean
    # Diffusers convention: latents * scaling_factor have unit variance.
    vae.register_to_config(scaling_factor=float(1.0 / mu.std().clamp_min(1e-6)))
    vae.save_pretrained(str(out), safe_serialization=True)
    recon = kl_reconstruct(vae, held)
    info = {
        "model": "shapes-vae", "steps": step, "max_minutes": args.max_minutes, "batch_size": args.batch_size,
        "lr": args.lr, "kl_weight": args.kl_weight, "wall_seconds": round(wall, 1),
        "device": args.device, "parameters": sum(p.numel() for p in vae.parameters()),
        "latent_shape": list(mu.shape[1:]), "scaling_factor": vae.config.scaling_factor,
        "heldout_psnr_db": round(psnr(held, recon), 2), "heldout_images": n_eval,
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(info, indent=1))
    k = 8
    pairs = held[16:16 + 2 * 4]
    save_grid(np.concatenate([held[:k], recon[:k], held[k:2 * k], recon[k:2 * k],
                              kl_interpolations(vae, pairs, steps=k)]), k, out / "samples.png")
    _finish(out, info)


# --------------------------------------------------------------------------- 2-D VAE


def latent_map(vae, grid: int = 16, extent: float = 3.0) -> np.ndarray:
    """Decode a grid x grid lattice over [-extent, extent]^2 (rows: y from +extent down)."""
    import torch

    xs = torch.linspace(-extent, extent, grid)
    ys = torch.linspace(extent, -extent, grid)
    z = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
    with torch.no_grad():
        return to_uint8(vae.decode(z))


def standardise_latent(vae, x) -> None:
    """Rescale the code so encoded images have zero mean and unit spread per axis.

    The map the studio draws spans +-3 units; folding the affine change into
    the encoder's last layer and the decoder's first keeps the model exact
    (decode(encode(x)) is unchanged) while the data fills that window.
    """
    import torch

    with torch.no_grad():
        mu, _ = vae.encode(x)
        m, s = mu.mean(0), mu.std(0).clamp_min(1e-6)
        head = vae.to_stats[-1]
        d = vae.latent_dim
        head.weight[:d] /= s[:, None]
        head.bias[:d] = (head.bias[:d] - m) / s
        head.bias[d:] -= 2 * torch.log(s)  # logvar of the rescaled code
        first = vae.from_latent[0]
        # decoder input z_old = z_new * s + m
        first.bias += first.weight @ m
        first.weight *= s[None, :]


def train_2d(args: argparse.Namespace) -> None:
    import torch

    out = Path(args.out)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    tiny = getattr(args, "tiny", False)
    config = dict(TINY_2D_CONFIG if tiny else VAE2D_CONFIG)
    vae = build_vae2d(config).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    step = _resume(args, out, {"vae": vae}, {"opt": opt})
    warmup = max(1, min(200, args.steps // 20))
    budget = Budget(args.steps, args.max_minutes, step)
    bar = Progress(args.steps, initial=step, desc="shapes-vae-2d")
    vae.train()
    # Gaussian likelihood with a broad sigma^2 = 1 (on [-1, 1]), so the KL term
    # still matters next to 12288 pixel terms and the codes fill the plane
    # without holes; the latent is standardised after training anyway.
    inv_two_var = 1.0 / (2 * 1.0)
    while not budget.done(step):
        lr = cosine_lr(step, args.steps, args.lr, warmup, budget.progress(step))
        for group in opt.param_groups:
            group["lr"] = lr
        x = training_batch((args.seed, step), args.batch_size).to(device)
        recon, mu, logvar = vae(x)
        sse = ((recon - x) ** 2).flatten(1).sum(1).mean()
        kl = (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)).sum(1).mean()
        loss = (sse * inv_two_var + kl) / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 5.0)
        opt.step()
        step += 1
        bar.update(loss.item(), kl=kl.item())
        if step % args.checkpoint_every == 0 and step < args.steps:
            save_checkpoint(out, step, {"vae": vae}, {"opt": opt})
    wall = bar.close()
    vae.eval().to("cpu")
    standardise_latent(vae, to_tensor(heldout_images(256 if not tiny else 16, seed_offset=10**6)))
    held = heldout_images(32 if tiny else 512)
    with torch.no_grad():
        mu, _ = vae.encode(to_tensor(held))
        recon = to_uint8(vae.decode(mu))
    lo = np.percentile(mu.numpy(), 1, axis=0)
    hi = np.percentile(mu.numpy(), 99, axis=0)
    config["latent_range"] = [[round(float(a), 3), round(float(b), 3)] for a, b in zip(lo, hi, strict=True)]
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()},
              str(out / "model.safetensors"))
    write_json(out / "config.json", config)
    info = {
        "model": "shapes-vae-2d", "steps": step, "max_minutes": args.max_minutes, "batch_size": args.batch_size,
        "lr": args.lr, "wall_seconds": round(wall, 1), "device": args.device,
        "parameters": sum(p.numel() for p in vae.parameters()),
        "heldout_psnr_db": round(psnr(held, recon), 2), "heldout_images": len(held),
        "latent_range_1_99": config["latent_range"],
        "latent_std": [round(float(s), 3) for s in mu.std(0)],
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(info, indent=1))
    save_grid(latent_map(vae, 16, 3.0), 16, out / "samples.png", scale=1, pad=0)
    _finish(out, info)


# --------------------------------------------------------------------------- entry


def train(args: argparse.Namespace) -> None:
    steps, batch_size = DEFAULTS.get(args.model, DEFAULTS["shapes-vae"])
    args.steps = args.steps or steps
    args.batch_size = args.batch_size or batch_size
    if args.model == "shapes-vae-2d":
        if args.lr is None:
            args.lr = 2e-3
        train_2d(args)
    else:
        if args.lr is None:
            args.lr = 1e-3
        train_kl(args)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--kl-weight", type=float, default=1e-4,
                        help="KL weight per latent number (shapes-vae)")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this much wall time (the schedule adapts)")
    parser.add_argument("--tiny", action="store_true", help="a very small model (tests)")
