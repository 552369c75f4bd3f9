"""The project's DCGAN: generator and spectrally normalised discriminator.

A generator is stored as ``config.json`` (``"architecture": "dcgan"``, ``z_dim``,
``channels``, ``image_size``, ``base_channels``, optionally ``mapping_layers`` and
``mapping_width``) plus ``model.safetensors``;
``build_generator(config)`` rebuilds the module so the weights load with
``load_state_dict(strict=True)``. Only torch is imported.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ARCHITECTURE = "dcgan"
DEFAULT_CONFIG: dict[str, Any] = {
    "_class_name": "DCGANGenerator",
    "architecture": ARCHITECTURE,
    "z_dim": 64,
    "channels": 3,
    "image_size": 64,
    "base_channels": 32,
    "mapping_layers": 3,
    "mapping_width": 256,
    "output_range": "-1,1",
}


def _levels(image_size: int) -> int:
    levels = int(round(math.log2(image_size / 4)))
    if levels < 1 or 4 * 2 ** levels != image_size:
        raise ValueError(f"image_size must be 4 * 2**k (8, 16, 32, 64, ...), got {image_size}")
    return levels


def _mapping(z_dim: int, layers: int, width: int) -> nn.Sequential:
    """An MLP from z to the code the convolutions read.

    The shapes world is discrete (eight flat backgrounds, four shapes); a
    convolution stack fed z directly blends neighbouring modes inside one image
    (backgrounds split between two colours), while an MLP in front can carve the
    Gaussian into separate regions first, as StyleGAN's mapping network does.
    """
    dims = [z_dim] + [width] * (layers - 1) + [z_dim]
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(nn.Linear(dims[i], dims[i + 1]))
        if i < layers - 1:
            modules.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*modules)


class Generator(nn.Module):
    """z (N, z_dim) or (N, z_dim, 1, 1) -> image (N, channels, size, size) in [-1, 1].

    An optional MLP maps z first; a transposed convolution takes the code to
    4x4, then each level doubles the size and halves the width (batch norm +
    ReLU), as in Radford et al. (2016).
    """

    def __init__(self, z_dim: int, channels: int, image_size: int, base_channels: int,
                 mapping_layers: int = 0, mapping_width: int = 256) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.mapping = _mapping(z_dim, mapping_layers, mapping_width) if mapping_layers > 0 else None
        levels = _levels(image_size)
        width = base_channels * 2 ** (levels - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(width // 2), nn.ReLU(inplace=True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 4:
            z = z.flatten(1)
        if self.mapping is not None:
            z = self.mapping(z)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    """Strided convolutions down to 4x4, a minibatch-deviation feature, one logit.

    The minibatch standard deviation (Karras et al. 2018) lets the
    discriminator see a batch with too little variety, which pushes the
    generator toward every colour and shape. It is trained with an R1 penalty
    rather than spectral norm (see ``train_gan``).
    """

    def __init__(self, channels: int, image_size: int, base_channels: int) -> None:
        super().__init__()
        levels = _levels(image_size)
        layers: list[nn.Module] = []
        prev, width = channels, base_channels
        for _ in range(levels):
            layers += [nn.Conv2d(prev, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            prev, width = width, width * 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(prev + 1, 1, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        deviation = h.std(0).mean().expand(h.shape[0], 1, h.shape[2], h.shape[3])
        return self.head(torch.cat([h, deviation], 1)).flatten()


def build_generator(config: dict[str, Any]) -> Generator:
    """Build the generator a ``config.json`` describes (missing keys take the defaults)."""
    cfg = {**DEFAULT_CONFIG, **config}
    arch = str(cfg.get("architecture", ARCHITECTURE)).lower()
    if arch != ARCHITECTURE:
        raise ValueError(f"architecture {arch!r} is not {ARCHITECTURE!r}")
    # A config written before the mapping network existed has none.
    mapping_layers = int(config.get("mapping_layers", 0))
    return Generator(int(cfg["z_dim"]), int(cfg["channels"]), int(cfg["image_size"]),
                     int(cfg["base_channels"]), mapping_layers, int(cfg["mapping_width"]))


def build_discriminator(config: dict[str, Any]) -> Discriminator:
    cfg = {**DEFAULT_CONFIG, **config}
    return Discriminator(int(cfg["channels"]), int(cfg["image_size"]),
                         int(cfg.get("disc_channels", cfg["base_channels"])))
