"""A discriminator that judges images through a frozen, pretrained encoder.

Projected GANs (Sauer et al. 2021) let small discriminator heads read the
multi-scale features of a fixed pretrained network instead of raw pixels, and
report that they learn much faster because the features already separate what
matters (on the shapes world it evened out the colours but did not sharpen the
objects: see models/shapes-gan/MODEL_CARD.md). Here
the feature network is the encoder of a shapes-world ``AutoencoderKL`` (such as
``models/shapes-vae``): it was trained only to reconstruct scenes, so its
features carry shape, colour and background without knowing any labels, and it
shares nothing with the attribute classifier that scores the GAN.

The image itself is tapped too, as the finest scale: an encoder trained to
reconstruct is nearly blind to pixel-level checkerboards and speckle, so without a
head on the pixels the generator is free to leave them in.

Each tapped scale gets its own head of spectrally normalised strided convolutions
down to a 4x4 map of patch logits; the logits of all heads are returned together,
so the GAN losses average over every patch of every scale.
"""

from __future__ import annotations

import torch
from torch import nn

HEAD_GRID = 4
MAX_WIDTH_FACTOR = 8


def _head(channels: int, size: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.utils.spectral_norm(nn.Conv2d(channels, width, 3, 1, 1)),
                               nn.LeakyReLU(0.2, inplace=True)]
    prev = width
    while size > HEAD_GRID:
        wider = min(prev * 2, MAX_WIDTH_FACTOR * width)
        layers += [nn.utils.spectral_norm(nn.Conv2d(prev, wider, 4, 2, 1)),
                   nn.LeakyReLU(0.2, inplace=True)]
        prev, size = wider, size // 2
    layers.append(nn.utils.spectral_norm(nn.Conv2d(prev, 1, 1)))
    return nn.Sequential(*layers)


class FeatureDiscriminator(nn.Module):
    """Patch-logit heads on the pixels and on the down-block and middle features of a
    frozen VAE encoder."""

    def __init__(self, encoder: nn.Module, image_size: int, channels: int = 3,
                 width: int = 32, reference: torch.Tensor | None = None) -> None:
        super().__init__()
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        if reference is None:
            reference = torch.zeros(2, channels, image_size, image_size)
        with torch.no_grad():
            feats = self._features(reference)
        self._used = [i for i, f in enumerate(feats) if f.shape[2] >= HEAD_GRID]
        # The encoder's activations run to the hundreds; dividing each channel by its
        # spread over real scenes gives every head unit-scale input and sane first logits.
        for i in self._used:
            self.register_buffer(f"scale{i}", 1.0 / (feats[i].std(dim=(0, 2, 3), keepdim=True) + 1e-3))
        # The pixel head only has to see local texture, so it is half as wide: at full
        # width it would cost as much as all the feature heads together.
        self.heads = nn.ModuleList(
            _head(feats[i].shape[1], feats[i].shape[2], max(1, width // 2) if i == 0 else width)
            for i in self._used
        )

    def train(self, mode: bool = True) -> FeatureDiscriminator:
        super().train(mode)
        self.encoder.eval()  # frozen: never in training mode
        return self

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        # The encoder's own blocks, stopping after the middle one: the layers that follow
        # only turn its features into latent moments, which no head reads.
        feats = [x]
        h = self.encoder.conv_in(x)
        for block in (*self.encoder.down_blocks, self.encoder.mid_block):
            h = block(h)
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self._features(x)
        logits = [head(feats[i] * getattr(self, f"scale{i}")).flatten(1)
                  for head, i in zip(self.heads, self._used, strict=True)]
        return torch.cat(logits, dim=1).flatten()
