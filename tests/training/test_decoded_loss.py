"""The loss on decoded clean estimates: zero at the target, graded by the object, and a
gradient that reaches the estimate through the frozen decoder."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def vae():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4,
                          norm_num_groups=4, sample_size=16)
    return model.requires_grad_(False).eval()


def test_clean_estimate_inverts_the_noising() -> None:
    from diffusers import DDPMScheduler

    from studio.training.train_diffusion import clean_estimate

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    x0 = torch.randn(3, 4, 8, 8)
    noise = torch.randn(3, 4, 8, 8)
    t = torch.tensor([5, 250, 900])
    noisy = scheduler.add_noise(x0, noise, t)
    assert torch.allclose(clean_estimate(scheduler, noisy, noise, t), x0, atol=1e-4)


def test_decoded_loss_is_zero_at_the_target_and_grows_with_the_error(vae) -> None:
    from studio.training.decoded_loss import decoded_loss

    target = torch.randn(4, 4, 8, 8)
    assert torch.allclose(decoded_loss(vae, target.clone(), target, 0.5), torch.zeros(4))
    small = decoded_loss(vae, target + 0.05 * torch.randn_like(target), target, 0.5)
    large = decoded_loss(vae, target + 0.5 * torch.randn_like(target), target, 0.5)
    assert small.shape == (4,) and torch.all(small > 0) and torch.all(large > small)


def test_decoded_loss_weights_object_pixels_and_passes_gradients(vae) -> None:
    from studio.training.decoded_loss import decoded_loss

    target = torch.randn(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[:, :, :4] = True
    # the same error, once on the object's half and once on the background's
    on_object, on_background = target.clone(), target.clone()
    on_object[:, :, :4] += 0.3
    on_background[:, :, 4:] += 0.3
    heavy = decoded_loss(vae, on_object, target, 0.5, mask, 9.0)
    light = decoded_loss(vae, on_background, target, 0.5, mask, 9.0)
    assert torch.all(heavy > light)
    estimate = on_object.clone().requires_grad_(True)
    decoded_loss(vae, estimate, target, 0.5, mask, 9.0).sum().backward()
    assert estimate.grad is not None and estimate.grad.abs().sum() > 0
    assert all(p.grad is None for p in vae.parameters())
