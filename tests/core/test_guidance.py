import numpy as np
import pytest
import torch

from studio.core.errors import UserError
from studio.core.guidance import guidance_key, guidance_rule, project_update, split_update


def test_keys_and_display_names():
    assert guidance_key("apg") == "apg"
    assert guidance_key(" APG ") == "apg"
    assert guidance_key("CFG") == "cfg"
    assert guidance_key("fdg") == "fdg"
    with pytest.raises(UserError, match="Unknown guidance 'warp'"):
        guidance_key("warp")


def test_the_update_loses_its_component_along_the_conditional_estimate():
    gen = torch.Generator().manual_seed(0)
    cond = torch.randn(3, 4, 8, 8, generator=gen)
    uncond = torch.randn(3, 4, 8, 8, generator=gen)
    update = project_update(cond, uncond, eta=0.0)
    # Orthogonal to each image's own conditional estimate, not to the batch's.
    dots = (update * cond).flatten(1).sum(1) / cond.flatten(1).norm(dim=1)
    assert torch.allclose(dots, torch.zeros(3), atol=1e-4)
    assert not torch.allclose(update, cond - uncond)
    # eta = 1 keeps the whole difference: classifier-free guidance.
    assert torch.allclose(project_update(cond, uncond, eta=1.0), cond - uncond, atol=1e-6)
    # A difference along the conditional estimate (pure saturation) is removed entirely.
    assert torch.allclose(project_update(cond, cond * 0.25), torch.zeros_like(cond), atol=1e-5)


def test_the_split_update_scales_each_channels_mean_only():
    gen = torch.Generator().manual_seed(2)
    cond = torch.randn(2, 4, 8, 8, generator=gen)
    uncond = torch.randn(2, 4, 8, 8, generator=gen)
    diff = cond - uncond
    mean = diff.mean(dim=(2, 3), keepdim=True)
    update = split_update(cond, uncond, low=0.25)
    assert torch.allclose(update.mean(dim=(2, 3), keepdim=True), 0.25 * mean, atol=1e-6)
    assert torch.allclose(update - update.mean(dim=(2, 3), keepdim=True), diff - mean, atol=1e-6)
    assert torch.allclose(split_update(cond, uncond, low=1.0), diff, atol=1e-6)


def test_the_update_matches_diffusers_apg():
    apg = pytest.importorskip("diffusers.guiders.adaptive_projected_guidance")
    gen = torch.Generator().manual_seed(1)
    cond = torch.randn(2, 4, 8, 8, generator=gen)
    uncond = torch.randn(2, 4, 8, 8, generator=gen)
    theirs = apg.normalized_guidance(cond, uncond, 6.5, eta=0.0, use_original_formulation=True)
    assert torch.allclose(cond + 6.5 * project_update(cond, uncond), theirs, atol=1e-5)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    return StableDiffusionPipeline.from_pretrained(tiny_pipeline, safety_checker=None)


def _images(pipe, guidance, **kw):
    out = pipe(
        "a red circle", negative_prompt="blue", guidance_scale=guidance, num_inference_steps=4,
        height=32, width=32, generator=torch.Generator().manual_seed(3), output_type="latent", **kw,
    )
    return out.images.numpy()


@pytest.mark.parametrize("method, as_cfg", [("apg", {"eta": 1.0}), ("fdg", {"low": 1.0})])
@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_each_rule_at_its_cfg_setting_reproduces_the_pipelines_guidance(pipe, method, as_cfg,
                                                                       scheduler, prediction):
    # APG keeping the parallel part, or FDG guiding the mean fully, is CFG again, so this
    # checks the rewrite of the batch end to end: the clean-estimate conversions, Euler's
    # scaled input and the pipeline's own formula.
    from studio.core.diffusion import scheduler_from_config

    base = pipe.scheduler
    pipe.scheduler = scheduler_from_config(scheduler, {**base.config, "prediction_type": prediction})
    try:
        plain = _images(pipe, 7.5)
        with guidance_rule(pipe, method, **as_cfg):
            same = _images(pipe, 7.5)
        with guidance_rule(pipe, method):
            projected = _images(pipe, 7.5)
        unguided = _images(pipe, 1.0)
    finally:
        pipe.scheduler = base
    # Relative to what guidance does at all (the tiny random model's difference is
    # mostly along its conditional estimate, so projecting it changes a few percent).
    guidance_effect = np.abs(plain - unguided).max()
    assert np.abs(plain - same).max() < 1e-4 * guidance_effect
    assert np.abs(plain - projected).max() > 1e-2 * guidance_effect


def test_no_guidance_means_no_change_and_the_hook_goes_away(pipe):
    plain = _images(pipe, 1.0)
    with guidance_rule(pipe, "apg"):
        assert len(pipe.unet._forward_hooks) == 1
        unguided = _images(pipe, 1.0)
    assert np.array_equal(plain, unguided)
    assert len(pipe.unet._forward_hooks) == 0
    with guidance_rule(pipe, "cfg"):
        assert len(pipe.unet._forward_hooks) == 0
    with pytest.raises(RuntimeError), guidance_rule(pipe, "fdg"):
        raise RuntimeError("a failed step")
    assert len(pipe.unet._forward_hooks) == 0


def test_an_unknown_prediction_type_is_named(pipe):
    from diffusers import DDIMScheduler

    base = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config({**base.config, "prediction_type": "flow"})
    try:
        with pytest.raises(UserError, match="prediction type 'flow'"), guidance_rule(pipe, "fdg"):
            _images(pipe, 7.5)
    finally:
        pipe.scheduler = base
