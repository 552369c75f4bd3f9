"""Cheap previews of latents being denoised: never the full VAE per step.

The default is a per-pixel linear map latent → RGB fitted once per model to that
model's own VAE (least squares of decoded images on their latents), so it works
for any latent space without a hand-made table. A tiny decoder (AutoencoderTiny,
e.g. TAESD) can be configured instead for sharper previews.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LinearPreview:
    """latent (C channels) → RGB by a (C+1)×3 matrix, the last row a bias."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float32)

    @property
    def channels(self) -> int:
        return self.matrix.shape[0] - 1

    def __call__(self, latents: Any, width: int, height: int) -> np.ndarray:
        lat = _first_latent(latents)  # C×h×w float32
        c, h, w = lat.shape
        rgb = np.tensordot(lat, self.matrix[:c], axes=([0], [0])) + self.matrix[c]
        return _upsample(_to_uint8(rgb), width, height)


class TinyDecoderPreview:
    """Decodes with a tiny VAE (AutoencoderTiny) that shares the model's latent space."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder

    def __call__(self, latents: Any, width: int, height: int) -> np.ndarray:
        import torch

        with torch.no_grad():
            first = latents[:1].to(self.decoder.device, self.decoder.dtype)
            image = self.decoder.decode(first).sample[0]
        rgb = image.permute(1, 2, 0).float().cpu().numpy()
        return _upsample(_to_uint8(rgb), width, height)


def _first_latent(latents: Any) -> np.ndarray:
    first = latents[0]
    if hasattr(first, "detach"):
        first = first.detach().float().cpu().numpy()
    return np.asarray(first, dtype=np.float32)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)


def _upsample(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if (w, h) == (width, height) or w == 0 or h == 0:
        return np.ascontiguousarray(rgb)
    # Nearest neighbour by index maps: exact for the usual integer factor, and cheap.
    rows = (np.arange(height) * h // height).clip(0, h - 1)
    cols = (np.arange(width) * w // width).clip(0, w - 1)
    return np.ascontiguousarray(rgb[rows][:, cols])


def _smooth_images(n: int, size: int, generator: Any) -> Any:
    """Random images of flat colour regions and soft gradients: latents of pictures,
    not of noise, so the fit holds for what the model actually denoises towards."""
    import torch
    import torch.nn.functional as F

    coarse = torch.rand(n, 3, 4, 4, generator=generator) * 2 - 1
    blocks = F.interpolate(coarse, size=(size, size), mode="nearest")
    soft = F.interpolate(
        torch.rand(n, 3, 3, 3, generator=generator) * 2 - 1, size=(size, size), mode="bilinear"
    )
    mix = torch.rand(n, 1, 1, 1, generator=generator)
    return (mix * blocks + (1 - mix) * soft).clamp(-1, 1)


def fit_linear_preview(
    vae: Any,
    device: Any = None,
    samples: int = 4,
    latent_size: int = 12,
    seed: int = 0,
) -> LinearPreview:
    """Fit latent → RGB on the VAE: encode random pictures, decode their latents, and
    solve least squares of the decoded colours (pooled to latent resolution) on the
    latents as the pipeline sees them (scaled by the VAE's scaling factor)."""
    import torch
    import torch.nn.functional as F

    config = vae.config
    factor = 2 ** (len(config.block_out_channels) - 1)
    scaling = float(getattr(config, "scaling_factor", 1.0) or 1.0)
    shift = float(getattr(config, "shift_factor", 0.0) or 0.0)
    device = device if device is not None else vae.device
    dtype = vae.dtype
    # SDXL's VAE overflows in fp16; its pipeline upcasts to decode, and so does the fit.
    upcast = dtype == torch.float16 and getattr(config, "force_upcast", False)
    generator = torch.Generator("cpu").manual_seed(seed)
    images = _smooth_images(samples, latent_size * factor, generator)
    try:
        if upcast:
            vae.to(torch.float32)
        run_dtype = torch.float32 if upcast else dtype
        with torch.no_grad():
            raw = vae.encode(images.to(device, run_dtype)).latent_dist.mean
            decoded = vae.decode(raw).sample.float().cpu()
    finally:
        if upcast:
            vae.to(dtype)
    if not (torch.isfinite(raw).all() and torch.isfinite(decoded).all()):
        raise ValueError("the VAE gave non-finite values; no preview fit")
    latents = ((raw.float().cpu() - shift) * scaling).permute(0, 2, 3, 1).reshape(-1, raw.shape[1])
    target = F.avg_pool2d(decoded, factor).permute(0, 2, 3, 1).reshape(-1, 3)
    x = torch.cat([latents, torch.ones(latents.shape[0], 1)], dim=1).double().numpy()
    y = target.double().numpy()
    matrix, *_ = np.linalg.lstsq(x, y, rcond=None)
    return LinearPreview(matrix.astype(np.float32))


def make_previewer(pipe: Any, options: dict[str, Any] | None = None) -> Any:
    """The preview function for a loaded pipeline: a tiny decoder when
    `options["preview_decoder"]` names an AutoencoderTiny folder, else the linear fit."""
    options = options or {}
    tiny = options.get("preview_decoder")
    # Where the VAE's weights are now: with model CPU offload that is the CPU, since
    # offload hooks move a model only for `forward`, not for encode/decode.
    device = pipe.vae.device
    if tiny:
        from diffusers import AutoencoderTiny

        try:
            decoder = AutoencoderTiny.from_pretrained(tiny, torch_dtype=pipe.vae.dtype)
            return TinyDecoderPreview(decoder.to(device))
        except (OSError, ValueError, RuntimeError):
            pass  # a missing or broken tiny decoder falls back to the linear fit
    return fit_linear_preview(pipe.vae, device=device)
