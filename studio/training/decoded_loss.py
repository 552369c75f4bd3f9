"""A loss on what the decoder makes of the UNet's clean estimate (a latent perceptual loss).

The denoising loss weighs an error in every latent channel and pixel alike, but the
decoder does not: an error that rounds a square's corner or melts a small star's
points can be small in the latent and plain in the picture. Decoding the UNet's
clean estimate and the clean latent through the frozen decoder, and comparing the
decoder's feature maps and pixels, weighs each latent error by what it does to the
image (Berrada et al. 2025, "Boosting latent diffusion with perceptual objectives").
The target is the training scene itself, so unlike a learned reward there is nothing
to fool.
"""
from __future__ import annotations

from typing import Any

from studio.training.train_diffusion import weighted_image_mean

FEATURE_FLOOR = 1e-2  # a channel flat across the batch is compared on this scale, not 0


def decoder_features(vae: Any, latents: Any) -> list[Any]:
    """The decoder's mid-block and up-block outputs and its image, for unscaled ``latents``."""
    features: list[Any] = []
    blocks = [vae.decoder.mid_block, *vae.decoder.up_blocks]
    hooks = [b.register_forward_hook(lambda _m, _i, out: features.append(out)) for b in blocks]
    try:
        image = vae.decode(latents).sample
    finally:
        for hook in hooks:
            hook.remove()
    return [*features, image]


def decoded_loss(vae: Any, estimate: Any, target: Any, scaling_factor: float,
                 object_mask: Any | None = None, object_weight: float = 0.0) -> Any:
    """Per-sample mean squared difference of the decoder's features of ``estimate`` and
    ``target`` (scaled latents, as the UNet sees them), averaged over the feature levels.

    Each channel is divided by its spread over the target batch, so the few-channel
    image and the wide early features count alike. ``object_mask`` (N, 1, h, w), at latent
    resolution, counts object pixels 1 + ``object_weight`` times at every level.
    """
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        wanted = decoder_features(vae, target / scaling_factor)
    got = decoder_features(vae, estimate / scaling_factor)
    total = 0.0
    for g, w in zip(got, wanted, strict=True):
        scale = w.std(dim=(0, 2, 3), keepdim=True).clamp_min(FEATURE_FLOOR)
        error = ((g - w) / scale) ** 2
        if object_mask is not None and object_weight:
            mask = F.interpolate(object_mask.to(error.dtype), size=error.shape[-2:],
                                 mode="nearest")
            error = weighted_image_mean(error, 1.0 + object_weight * mask)
        else:
            error = error.mean(dim=(1, 2, 3))
        total = total + error
    return total / len(got)
