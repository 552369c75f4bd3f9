"""The project's small convolutional VAE with a flat latent (2-D for the latent map).

Stored as ``config.json`` (``"architecture": "conv-vae"``, sizes) plus
``model.safetensors``; ``build_vae2d(config)`` rebuilds the module so the
weights load with ``load_state_dict(strict=True)``. Only torch is imported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ARCHITECTURE = "conv-vae"
DEFAULT_CONFIG: dict[str, Any] = {
    "_class_name": "ConvVAE",
    "architecture": ARCHITECTURE,
    "image_size": 64,
    "in_channels": 3,
    "latent_dim": 2,
    "channels": [32, 64, 64, 64],
    "hidden": 128,
    "output_range": "-1,1",
}


class ConvVAE(nn.Module):
    """Four stride-2 convolutions down to 4x4, an MLP to (mu, logvar), and the mirror image."""

    def __init__(self, image_size: int, in_channels: int, latent_dim: int,
                 channels: list[int], hidden: int) -> None:
        super().__init__()
        if image_size % (2 ** len(channels)):
            raise ValueError(f"image_size {image_size} is not divisible by 2**{len(channels)}")
        self.image_size = image_size
        self.latent_dim = latent_dim
        self.base = image_size // 2 ** len(channels)
        enc: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            enc += [nn.Conv2d(prev, ch, 4, 2, 1), nn.SiLU()]
            prev = ch
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        flat = prev * self.base * self.base
        self.to_stats = nn.Sequential(nn.Linear(flat, hidden), nn.SiLU(),
                                      nn.Linear(hidden, 2 * latent_dim))
        self.from_latent = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(),
                                         nn.Linear(hidden, flat), nn.SiLU())
        dec: list[nn.Module] = []
        rev = list(reversed(channels))
        for i, ch in enumerate(rev):
            nxt = rev[i + 1] if i + 1 < len(rev) else in_channels
            dec.append(nn.ConvTranspose2d(ch, nxt, 4, 2, 1))
            if i + 1 < len(rev):
                dec.append(nn.SiLU())
        self.decoder = nn.Sequential(*dec, nn.Tanh())
        self._top = rev[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [-1, 1], (N, C, H, W) -> (mu, logvar), each (N, latent_dim)."""
        stats = self.to_stats(self.encoder(x))
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar.clamp(-12.0, 6.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, latent_dim) -> images in [-1, 1], (N, C, H, W)."""
        h = self.from_latent(z.reshape(z.shape[0], self.latent_dim))
        return self.decoder(h.view(-1, self._top, self.base, self.base))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def build_vae2d(config: dict[str, Any]) -> ConvVAE:
    """Build the module a ``config.json`` describes (missing keys take the defaults)."""
    cfg = {**DEFAULT_CONFIG, **config}
    arch = str(cfg.get("architecture", ARCHITECTURE)).lower()
    if arch != ARCHITECTURE:
        raise ValueError(f"architecture {arch!r} is not {ARCHITECTURE!r}")
    return ConvVAE(int(cfg["image_size"]), int(cfg["in_channels"]), int(cfg["latent_dim"]),
                   [int(c) for c in cfg["channels"]], int(cfg["hidden"]))
