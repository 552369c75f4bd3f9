"""Grow a trained ``UNet2DConditionModel`` deeper without changing what it computes.

A deeper UNet trained from scratch would throw away hours of training. Instead every
down and up block gets more resnet (and attention) layers that start as identities —
their last convolution and attention output projection are zero, as ControlNet's
"zero convolutions" are — so the grown UNet predicts exactly what the old one did and
training continues from there with the extra capacity.

The up path needs care: a down block with more layers emits more skip connections, and
the matching up block pops them first. The new skips are copies of the block's last
output (the identity layers pass it through), so the old first up layer still sees the
value it was trained on, and the inserted layers go right after it.
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
