"""Growing a trained UNet deeper keeps what it computes and leaves the new layers trainable."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _unet(layers: int = 1):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    # unequal widths, so a layer put in the wrong place of an up block cannot fit
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16, 24), layers_per_block=layers, cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4)
    # trained weights are not the zero-initialised output layers of a fresh UNet
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def _predict(unet, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 8, 8, generator=gen)
    context = torch.randn(3, 5, 16, generator=gen)
    with torch.no_grad():
        return unet(x, torch.tensor([5, 400, 900]), encoder_hidden_states=context).sample


@pytest.mark.parametrize("old, new", [(1, 2), (1, 3), (2, 3)])
def test_grown_unet_predicts_what_the_old_one_did(old: int, new: int) -> None:
    from studio.training.unet_growth import deepen_unet

    unet = _unet(old)
    grown = deepen_unet(unet, new).eval()
    assert grown.config.layers_per_block == new
    assert len(grown.down_blocks[0].resnets) == new and len(grown.up_blocks[2].resnets) == new + 1
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in unet.parameters())
    assert torch.allclose(_predict(grown), _predict(unet), atol=1e-5)
    assert torch.allclose(_predict(grown, seed=2), _predict(unet, seed=2), atol=1e-5)


def test_the_new_layers_learn() -> None:
    from studio.training.unet_growth import deepen_unet

    grown = deepen_unet(_unet(1), 2).train()
    x = torch.randn(2, 4, 8, 8)
    loss = grown(x, torch.tensor([10, 500]), encoder_hidden_states=torch.randn(2, 5, 16)).sample
    loss.pow(2).mean().backward()
    inserted = [grown.down_blocks[1].resnets[1].conv2, grown.down_blocks[1].attentions[1].proj_out,
                grown.up_blocks[1].resnets[1].conv2, grown.up_blocks[2].attentions[1].proj_out]
    for layer in inserted:
        assert not torch.count_nonzero(layer.weight)  # an identity at first ...
        assert torch.count_nonzero(layer.weight.grad)  # ... that the first step moves


def test_a_unet_cannot_shrink() -> None:
    from studio.training.unet_growth import deepen_unet

    with pytest.raises(ValueError, match="cannot shrink"):
        deepen_unet(_unet(2), 1)


@pytest.mark.parametrize("factor", [2, 3])
def test_widened_unet_predicts_what_the_old_one_did(factor: int) -> None:
    from studio.training.unet_growth import widen_unet

    unet = _unet(2)
    wide = widen_unet(unet, factor).eval()
    assert list(wide.config.block_out_channels) == [8 * factor, 16 * factor, 24 * factor]
    assert wide.conv_in.weight.shape[0] == 8 * factor
    assert sum(p.numel() for p in wide.parameters()) > 2 * sum(p.numel() for p in unet.parameters())
    assert torch.allclose(_predict(wide), _predict(unet), atol=1e-4)
    assert torch.allclose(_predict(wide, seed=2), _predict(unet, seed=2), atol=1e-4)


def test_widened_copies_learn_apart() -> None:
    from studio.training.unet_growth import widen_unet

    wide = widen_unet(_unet(1), 2).train()
    conv = wide.conv_in
    # the two copies of each channel start with the same incoming weights ...
    assert torch.equal(conv.weight[0::2], conv.weight[1::2])
    x = torch.randn(2, 4, 8, 8)
    loss = wide(x, torch.tensor([10, 500]), encoder_hidden_states=torch.randn(2, 5, 16)).sample
    loss.pow(2).mean().backward()
    # ... but the next layer reads them with different weights, so their gradients differ
    assert not torch.allclose(conv.weight.grad[0::2], conv.weight.grad[1::2])


def test_a_unet_widens_by_a_whole_factor() -> None:
    from studio.training.unet_growth import widen_unet

    with pytest.raises(ValueError, match="whole factor"):
        widen_unet(_unet(1), 0)
    same = widen_unet(_unet(1), 1)
    assert list(same.config.block_out_channels) == [8, 16, 24]
