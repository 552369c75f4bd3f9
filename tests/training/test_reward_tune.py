"""Reward fine-tuning of the diffusion UNet (studio/training/reward_tune.py) at tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studio.training import reward_tune, world
from studio.training.__main__ import main
from tests.training.conftest import TINY

torch = pytest.importorskip("torch")


def test_prompt_targets_ask_for_what_the_caption_names() -> None:
    _, captions, scenes = world.render_batch(range(200), tier=1, name_probability=0.5)
    targets = reward_tune.prompt_targets(scenes)
    labels = reward_tune.scene_labels(scenes)
    assert (targets["shape"] == labels["shape"]).all()
    for head in ("colour", "background", "size", "position"):
        named = np.array([head in s.named for s in scenes])
        assert 0 < named.sum() < len(scenes)
        assert (targets[head][named] == labels[head][named]).all()
        assert (targets[head][~named] == -1).all()
    # the labels are the rendered truth
    s = scenes[0]
    assert world.COLOUR_NAMES[labels["background"][0]] == s.background
    assert world.SHAPES[labels["shape"][0]] == s.objects[0].shape


def test_prompt_batch_skips_empty_captions() -> None:
    captions, targets = reward_tune.prompt_batch(3, 16)
    assert len(captions) == 16 and all(captions)
    assert all(world.parse_caption(c) is not None for c in captions)
    assert targets["shape"].shape == (16,) and (targets["shape"] >= 0).all()


def test_disturb_keeps_the_size_and_passes_gradients() -> None:
    x = torch.rand(4, 3, 64, 64, requires_grad=True)
    y = reward_tune.disturb(x * 2 - 1, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_reward_loss_reads_only_the_named_heads() -> None:
    net = reward_tune.build_reward_net()
    images = torch.rand(6, 3, 64, 64) * 2 - 1
    targets = {k: torch.full((6,), -1) for k in reward_tune.REWARD_HEADS}
    targets["shape"] = torch.tensor([0, 1, 2, 3, 0, 1])
    targets["colour"][:3] = torch.tensor([0, 1, 2])
    loss = reward_tune.reward_loss(net, images, targets, torch.Generator().manual_seed(0))
    loss.backward()
    assert net.heads["shape"].weight.grad.abs().sum() > 0
    assert net.heads["colour"].weight.grad.abs().sum() > 0
    for head in ("background", "size", "position"):
        grad = net.heads[head].weight.grad
        assert grad is None or grad.abs().sum() == 0


def test_reward_net_learns_to_read_the_world() -> None:
    torch.set_num_threads(1)
    _, accuracy = reward_tune.train_reward_net(steps=30, batch=32, verbose=False)
    # chance is 1/8 for the background; it is the first head a few steps teach
    assert accuracy["background"] > 0.6
    assert set(accuracy) == set(reward_tune.REWARD_HEADS)


def test_reward_net_is_cached_and_a_damaged_cache_is_named(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def quick(**kwargs: object) -> tuple:
        calls.append(1)
        return reward_tune.build_reward_net().eval(), {"shape": 0.5}

    monkeypatch.setattr(reward_tune, "train_reward_net", quick)
    _, first = reward_tune.load_or_train_reward_net(tmp_path)
    _, again = reward_tune.load_or_train_reward_net(tmp_path)
    assert len(calls) == 1 and first == again == {"shape": 0.5}
    (tmp_path / reward_tune.REWARD_NET_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(reward_tune.TrainError, match=reward_tune.REWARD_NET_FILE):
        reward_tune.load_or_train_reward_net(tmp_path)


def test_guided_estimates_are_images_with_gradients_to_the_unet(tiny_trained_pipeline: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = tiny_trained_pipeline
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    sampler = reward_tune.GuidedSampler(
        unet, AutoencoderKL.from_pretrained(str(folder / "vae")),
        CLIPTextModel.from_pretrained(str(folder / "text_encoder")),
        CLIPTokenizer.from_pretrained(str(folder / "tokenizer")),
        DDIMScheduler.load_config(str(folder / "scheduler")), steps=5, grad_steps=2)
    images = sampler.decoded_estimates(["a red circle", "a star"], torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 64, 64)
    assert images.min() >= -1 and images.max() <= 1
    images.mean().backward()
    assert sum(p.grad.abs().sum() for p in unet.parameters() if p.grad is not None) > 0


@pytest.fixture
def untrained_reward_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """A random reward network instead of the cached one (training it takes minutes)."""
    monkeypatch.setattr(reward_tune, "load_or_train_reward_net",
                        lambda folder, verbose=True: (reward_tune.build_reward_net().eval()
                                                      .requires_grad_(False), {"shape": 0.0}))


REWARD = ["--reward-only", "--reward-batch", "2", "--reward-grad-steps", "2", "--ema", "0.9"]


def test_reward_only_tunes_the_unet_alone_and_saves_a_pipeline(
        tiny_trained_pipeline: Path, tmp_path: Path, untrained_reward_net: None) -> None:
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "tuned"
    assert main(["shapes-diffusion", *REWARD, "--init-from", str(tiny_trained_pipeline),
                 "--steps", "2", "--out", str(out), *TINY]) == 0
    before = StableDiffusionPipeline.from_pretrained(str(tiny_trained_pipeline))
    after = StableDiffusionPipeline.from_pretrained(str(out))
    for part in ("vae", "text_encoder"):
        assert all(torch.equal(a, b) for a, b in zip(
            getattr(before, part).parameters(), getattr(after, part).parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in
               zip(before.unet.parameters(), after.unet.parameters(), strict=True))
    state = json.loads((out / "training_state.json").read_text())
    assert state["reward_steps"] == 2
    assert state["reward_recipe"]["reward_batch"] == 2
    assert state["reward_init_from"] == str(tiny_trained_pipeline)
    assert not (out / "checkpoint").exists()
    image = after("a red circle", num_inference_steps=2, guidance_scale=7.5,
                  generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_reward_only_resumes_after_an_interruption(
        tiny_trained_pipeline: Path, tmp_path: Path, untrained_reward_net: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "tuned"
    original = reward_tune.save_checkpoint
    saved = []

    def interrupt(*args: object, **kwargs: object) -> None:
        original(*args, **kwargs)
        saved.append(args[1])
        raise KeyboardInterrupt

    monkeypatch.setattr(reward_tune, "CHECKPOINT_EVERY_S", 0.0)
    monkeypatch.setattr(reward_tune, "save_checkpoint", interrupt)
    argv = ["shapes-diffusion", *REWARD, "--init-from", str(tiny_trained_pipeline),
            "--steps", "3", "--out", str(out), *TINY]
    assert main(argv) == 130 and saved == [1]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["extra"]["phase"] == "reward"
    assert main([*argv, "--resume"]) == 130 and saved == [1, 2]
    monkeypatch.setattr(reward_tune, "save_checkpoint", original)
    assert main([*argv, "--resume"]) == 0
    state = json.loads((out / "training_state.json").read_text())
    assert state["reward_steps"] == 3


@pytest.mark.parametrize(("flags", "message"), [
    (["--reward-batch", "0"], "--reward-batch"),
    (["--reward-grad-steps", "21"], "--reward-grad-steps"),
    (["--reward-lr", "0"], "--reward-lr"),
    (["--reward-weight", "-1"], "--reward-weight"),
    (["--reward-guidance", "0"], "--reward-guidance"),
    (["--ema", "-0.5"], "--ema"),
    (["--low-noise-share", "0.5", "--low-noise-max", "0"], "--low-noise-max"),
    (["--name-probability", "2"], "--name-probability"),
])
def test_reward_only_bad_arguments(flags: list[str], message: str, tiny_trained_pipeline: Path,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   untrained_reward_net: None) -> None:
    # one step, so an option that slips through fails the test instead of training
    argv = ["shapes-diffusion", "--reward-only", "--init-from", str(tiny_trained_pipeline),
            "--steps", "1", *flags, "--out", str(tmp_path / "o"), *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_reward_only_needs_a_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shapes-diffusion", "--reward-only", "--out", str(tmp_path), *TINY]) == 2
    assert "no unet/ folder" in capsys.readouterr().err


def test_reward_only_resumes_only_its_own_checkpoint(tiny_trained_pipeline: Path, tmp_path: Path,
                                                     untrained_reward_net: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from studio.training.common import save_checkpoint

    out = tmp_path / "tuned"
    out.mkdir()
    save_checkpoint(out, 5, {}, None, {"phase": "unet"})  # a base-training run's checkpoint
    assert main(["shapes-diffusion", "--reward-only", "--init-from", str(tiny_trained_pipeline),
                 "--resume", "--out", str(out), *TINY]) == 2
    assert "not a --reward-only run's" in capsys.readouterr().err


def test_reward_only_refuses_an_output_inside_its_source(tiny_trained_pipeline: Path,
                                                         tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    source = tmp_path / "pipe"
    shutil.copytree(tiny_trained_pipeline, source)
    assert main(["shapes-diffusion", "--reward-only", "--init-from", str(source),
                 "--out", str(source / "tuned"), *TINY]) == 2
    assert "lies inside --init-from" in capsys.readouterr().err


def test_reward_only_names_the_device_it_runs_on() -> None:
    import argparse

    with pytest.raises(reward_tune.TrainError, match="CPU only"):
        reward_tune.reward_only(argparse.Namespace(device="cuda"))
