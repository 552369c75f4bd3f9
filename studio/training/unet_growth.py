"""Grow a trained ``UNet2DConditionModel`` deeper or wider without changing what it computes.

A deeper UNet trained from scratch would throw away hours of training. Instead every
down and up block gets more resnet (and attention) layers that start as identities —
their last convolution and attention output projection are zero, as ControlNet's
"zero convolutions" are — so the grown UNet predicts exactly what the old one did and
training continues from there with the extra capacity.

The up path needs care: a down block with more layers emits more skip connections, and
the matching up block pops them first. The new skips are copies of the block's last
output (the identity layers pass it through), so the old first up layer still sees the
value it was trained on, and the inserted layers go right after it.

Widening is Net2Net's (Chen et al. 2016): every channel becomes F copies of itself, and every
layer that reads a copied channel reads each copy with 1/F of the old weight, so sums come out
as before. Copies sit next to each other (old channel c becomes F·c … F·c + F − 1), which keeps
each GroupNorm group's channels inside one group and survives the up path's concatenation of
hidden state and skip. The read weights are split unevenly (1/F plus noise that sums to zero
over the copies) so the copies get different gradients and learn different things.
"""

from __future__ import annotations

import re
from typing import Any


def _layer_maps(old_layers: int, new_layers: int) -> tuple[dict[int, int], dict[int, int]]:
    """Old → new layer index in a down block and in an up block."""
    extra = new_layers - old_layers
    down = {i: i for i in range(old_layers)}
    up = {0: 0, **{i: i + extra for i in range(1, old_layers + 1)}}
    return down, up


def deepen_unet(unet: Any, layers_per_block: int) -> Any:
    """A copy of ``unet`` with ``layers_per_block`` layers per block, computing the same function.

    The inserted layers keep their random initialisation except for the parts that make
    them identities, so gradient reaches them from the first step.
    """
    import torch
    from diffusers import UNet2DConditionModel

    old_layers = int(unet.config.layers_per_block)
    if isinstance(unet.config.layers_per_block, (list, tuple)):
        raise ValueError("UNets with a different depth per block are not supported")
    if layers_per_block < old_layers:
        raise ValueError(f"cannot shrink a UNet from {old_layers} to {layers_per_block} "
                         "layers per block")
    config = dict(unet.config)
    config["layers_per_block"] = layers_per_block
    grown = UNet2DConditionModel.from_config(config).to(unet.device)
    if grown.dtype != unet.dtype:
        grown.to(dtype=unet.dtype)
    if layers_per_block == old_layers:
        grown.load_state_dict(unet.state_dict())
        return grown
    down_map, up_map = _layer_maps(old_layers, layers_per_block)
    pattern = re.compile(r"^(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)$")
    state = grown.state_dict()
    for key, value in unet.state_dict().items():
        match = pattern.match(key)
        if match:
            path, block, kind, layer, rest = match.groups()
            new_layer = (down_map if path == "down" else up_map)[int(layer)]
            key = f"{path}_blocks.{block}.{kind}.{new_layer}.{rest}"
        if state[key].shape != value.shape:
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit "
                             f"{tuple(state[key].shape)}")
        state[key] = value.clone()
    grown.load_state_dict(state)

    inserted_down = range(old_layers, layers_per_block)
    inserted_up = range(1, 1 + layers_per_block - old_layers)
    with torch.no_grad():
        for blocks, inserted in ((grown.down_blocks, inserted_down),
                                 (grown.up_blocks, inserted_up)):
            for block in blocks:
                for i in inserted:
                    _make_identity_resnet(block.resnets[i])
                    attentions = getattr(block, "attentions", None)
                    if attentions is not None:
                        # the transformer adds its output projection to its input
                        attentions[i].proj_out.weight.zero_()
                        attentions[i].proj_out.bias.zero_()
    return grown


def _make_identity_resnet(resnet: Any) -> None:
    """Zero the residual branch; an up layer's shortcut keeps the hidden state, drops the skip."""
    import torch

    resnet.conv2.weight.zero_()
    resnet.conv2.bias.zero_()
    shortcut = getattr(resnet, "conv_shortcut", None)
    if shortcut is not None:
        out_channels = shortcut.weight.shape[0]
        weight = torch.zeros_like(shortcut.weight)
        # torch.cat([hidden, skip]) puts the hidden state's channels first
        weight[:, :out_channels, 0, 0] = torch.eye(out_channels, dtype=weight.dtype)
        shortcut.weight.copy_(weight)
        shortcut.bias.zero_()


def _timestep_columns(old_dim: int, factor: int) -> list[int]:
    """Where each old sinusoidal timestep feature sits among the widened UNet's.

    ``Timesteps(d)`` uses frequencies 10000^(-i / (d/2)) for sin and cos halves; the widened
    one's frequency F·i is the old frequency i, so the old features are a subset of the new.
    """
    half = old_dim // 2
    return ([factor * i for i in range(half)]
            + [factor * half + factor * i for i in range(half)])


def widen_unet(unet: Any, factor: int, noise: float = 0.25, seed: int = 0) -> Any:
    """A copy of ``unet`` with every block ``factor`` times as wide, computing the same function.

    ``noise`` sets the spread of the uneven split, relative to each weight's standard
    deviation; the split always sums to the old weight, so it never changes the output.
    """
    import torch
    from diffusers import UNet2DConditionModel

    if factor < 1:
        raise ValueError(f"a UNet can only be widened by a whole factor of 1 or more, got {factor}")
    # diffusers resets keys named in "_use_default_values" to their defaults on from_config
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    if config.get("time_embedding_type", "positional") != "positional":
        raise ValueError("only UNets with positional (sinusoidal) timestep embeddings widen")
    if config.get("class_embed_type") or config.get("addition_embed_type"):
        raise ValueError("UNets with class or added embeddings are not supported")
    old_channels = list(config["block_out_channels"])
    config["block_out_channels"] = [c * factor for c in old_channels]
    # the timestep embedding keeps its width: only what reads it is widened
    config["time_embedding_dim"] = config.get("time_embedding_dim") or old_channels[0] * 4
    wide = UNet2DConditionModel.from_config(config).to(unet.device)
    if wide.dtype != unet.dtype:
        wide.to(dtype=unet.dtype)

    gen = torch.Generator().manual_seed(seed)
    new_state = wide.state_dict()
    columns = _timestep_columns(old_channels[0], factor)
    for key, old in unet.state_dict().items():
        target = new_state[key]
        value = old.detach().to("cpu", torch.float32)
        if key == "time_embedding.linear_1.weight":
            widened = torch.zeros(target.shape, dtype=torch.float32)
            widened[:, columns] = value
        else:
            widened = _widen_tensor(value, tuple(target.shape), factor, noise, gen)
            if key.endswith(".to_q.weight"):
                # heads keep their number and double their width: q·k over the copies would
                # grow F-fold while the softmax's 1/sqrt(head width) shrinks only sqrt(F)-fold
                widened = widened / factor ** 0.5
        if widened.shape != target.shape:
            raise ValueError(f"{key}: cannot widen {tuple(old.shape)} to {tuple(target.shape)}")
        new_state[key] = widened.to(target.dtype)
    wide.load_state_dict(new_state)
    return wide


def _widen_tensor(value: Any, shape: tuple[int, ...], factor: int, noise: float,
                  gen: Any) -> Any:
    """Copy written channels (dim 0, or a 1-D tensor), split read channels (dim 1)."""
    import torch

    if value.shape == shape:
        return value.clone()
    out = value
    if out.shape[0] * factor == shape[0]:
        out = out.repeat_interleave(factor, dim=0)
    if out.dim() > 1 and out.shape[1] * factor == shape[1]:
        spread = noise * float(out.std()) if out.numel() > 1 else 0.0
        pieces = out.unsqueeze(2).expand(*out.shape[:2], factor, *out.shape[2:]) / factor
        offsets = torch.randn(pieces.shape, generator=gen) * spread
        # offsets sum to zero over the copies of each channel, so the layer's output is unchanged
        offsets = offsets - offsets.mean(dim=2, keepdim=True)
        out = (pieces + offsets).flatten(1, 2)
    return out
