"""The diffusion trainer at tiny size, and the training CLI's handling of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studio.training.__main__ import main
from tests.training.conftest import TINY


def run_interrupted(argv: list[str]) -> int:
    """Run the trainer with a checkpoint every step and stop it, as Ctrl+C would, at the
    first usable pipeline it saves; returns the exit status."""
    from studio.training import train_diffusion

    original, every = train_diffusion.save_pipeline, train_diffusion.CHECKPOINT_EVERY_S

    def interrupt(*args: object, **kwargs: object) -> None:
        original(*args, **kwargs)
        raise KeyboardInterrupt

    train_diffusion.save_pipeline, train_diffusion.CHECKPOINT_EVERY_S = interrupt, 0.0
    try:
        return main(argv)
    finally:
        train_diffusion.save_pipeline, train_diffusion.CHECKPOINT_EVERY_S = original, every


def run_recording(argv: list[str], names: tuple[str, ...]) -> dict[str, dict]:
    """Run the trainer to success and return the state dicts the named modules held
    when it last saved the pipeline (``"unet"`` is the trained weights, ``"unet_ema"`` their
    average, which the folder stores)."""
    from studio.training import train_diffusion

    original = train_diffusion.save_pipeline
    seen: dict[str, dict] = {}

    def record(out: Path, modules: dict, *args: object) -> None:
        seen.update({k: {n: t.clone() for n, t in modules[k].state_dict().items()} for k in names})
        original(out, modules, *args)

    train_diffusion.save_pipeline = record
    try:
        assert main(argv) == 0
    finally:
        train_diffusion.save_pipeline = original
    return seen


@pytest.fixture
def tiny_pipeline(tiny_trained_pipeline: Path) -> Path:
    """The trainer's own tiny pipeline (tests/training/conftest.py); tests copy it to change it."""
    return tiny_trained_pipeline


def test_tiny_training_writes_a_loadable_pipeline(tiny_pipeline: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    index = json.loads((tiny_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert not (tiny_pipeline / "checkpoint").exists()
    assert (tiny_pipeline / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_pipeline))
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle", negative_prompt="blue", num_inference_steps=2,
               guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 64, 64, 3)
    assert np.isfinite(out.images).all()
    # the project's own vocabulary: every world word is a single token
    tok = pipe.tokenizer
    assert tok.tokenize("a small red circle on the left") == [
        "a</w>", "small</w>", "red</w>", "circle</w>", "on</w>", "the</w>", "left</w>"]
    state = json.loads((tiny_pipeline / "training_state.json").read_text())
    assert state["unet_steps_done"] == 2 and state["scaling_factor"] > 0


def test_resume_continues_from_a_checkpoint(tmp_path: Path) -> None:
    import torch

    from studio.training.common import has_checkpoint

    torch.set_num_threads(1)
    out = tmp_path / "run"
    # a first run whose UNet phase is interrupted after its first checkpoint
    assert run_interrupted(["shapes-diffusion", "--steps", "3", "--out", str(out), *TINY]) == 130
    assert has_checkpoint(out)
    assert main(["shapes-diffusion", "--steps", "3", "--out", str(out), "--resume", *TINY]) == 0
    state = json.loads((out / "training_state.json").read_text())
    assert state["unet_steps_done"] == 3


@pytest.mark.parametrize("argv, message", [
    (["no-such-model"], "unknown model"),
    (["shapes-diffusion", "--steps", "0"], "--steps must be a positive integer"),
    (["shapes-diffusion", "--batch-size", "-1"], "--batch-size must be a positive integer"),
    (["shapes-diffusion", "--ema", "1.5"], "--ema must be in [0, 1)"),
    (["shapes-diffusion", "--list-captions", "-0.1"], "--list-captions must be in [0, 1]"),
    (["shapes-diffusion", "--layers-per-block", "0"],
     "--layers-per-block must be a positive integer"),
    (["shapes-diffusion", "--widen", "0"], "--widen must be a positive integer"),
    (["shapes-diffusion", "--fresh-unet", "--steps", "1"], "give it, or leave --fresh-unet out"),
    (["shapes-diffusion", "--snr-gamma", "-1"], "--snr-gamma must be zero or positive"),
    (["shapes-diffusion", "--low-noise-share", "1.5"], "--low-noise-share must be in [0, 1]"),
    (["shapes-diffusion", "--low-noise-max", "0"], "--low-noise-max must be in 1..1000"),
    (["shapes-diffusion", "--name-probability", "1.2"], "--name-probability must be in [0, 1]"),
    (["shapes-diffusion", "--text-lr", "-1"], "--text-lr must be zero or positive"),
    (["shapes-diffusion", "--text-lr", "1e-3", "--text-anchor", "-1"],
     "--text-anchor must be zero or positive"),
    (["shapes-diffusion", "--text-anchor", "10"], "give both"),
    (["shapes-diffusion", "--star-weight", "0"], "--star-weight must be positive"),
    (["shapes-diffusion", "--short-captions", "1.1"], "--short-captions must be in [0, 1]"),
    (["shapes-diffusion", "--empty-field-share", "-0.5"],
     "--empty-field-share must be in [0, 1]"),
    (["shapes-diffusion", "--empty-field-min-t", "1000"],
     "--empty-field-min-t must be in 0..999"),
    (["shapes-diffusion", "--empty-field-blend", "1.5"],
     "--empty-field-blend must be in [0, 1]"),
    (["shapes-diffusion", "--decoded-weight", "-1"], "--decoded-weight must be zero or positive"),
    (["shapes-diffusion", "--decoded-max-t", "1001"], "--decoded-max-t must be in 1..1000"),
    (["shapes-diffusion", "--decoder-only", "--decoder-small-stars", "1.5"],
     "--decoder-small-stars must be in [0, 1]"),
])
def test_bad_arguments_give_one_line_errors(argv: list[str], message: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["shapes-diffusion", "--steps", "1", "--out", str(blocker / "sub")]) == 2
    assert "not writable" in capsys.readouterr().err


def test_corrupt_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ck = tmp_path / "run" / "checkpoint"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text('{"step": 5, "extra": {"phase": "vae"}}')
    (ck / "weights.safetensors").write_bytes(b"\x00garbage")
    assert main(["shapes-diffusion", "--steps", "1", "--out", str(tmp_path / "run"),
                 "--resume", *TINY]) == 2
    err = capsys.readouterr().err
    assert "corrupt checkpoint file" in err and "weights.safetensors" in err
    (ck / "state.json").write_text("{not json")
    assert main(["shapes-diffusion", "--steps", "1", "--out", str(tmp_path / "run"),
                 "--resume", *TINY]) == 2
    assert "state.json" in capsys.readouterr().err


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shapes-diffusion", "--steps", "1", "--out", str(tmp_path / "empty"),
                 "--resume", *TINY]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def fine_tune_copy(tiny_pipeline: Path, tmp_path: Path, *flags: str) -> dict:
    """Run ``--decoder-only`` with ``flags`` on a copy of the tiny pipeline; check that the
    encoder (the UNet's latent space) is untouched and the decoder moved, and return the
    folder's training state."""
    import shutil

    import torch
    from diffusers import AutoencoderKL

    copy = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline, copy)
    before = AutoencoderKL.from_pretrained(str(copy / "vae"))
    assert main(["shapes-diffusion", "--decoder-only", *flags, "--out", str(copy), *TINY]) == 0
    after = AutoencoderKL.from_pretrained(str(copy / "vae"))
    assert all(torch.equal(a, b) for a, b in
               zip(before.encoder.parameters(), after.encoder.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in
               zip(before.decoder.parameters(), after.decoder.parameters(), strict=True))
    return json.loads((copy / "training_state.json").read_text())


def test_decoder_only_fine_tunes_in_place(tiny_pipeline: Path, tmp_path: Path) -> None:
    assert fine_tune_copy(tiny_pipeline, tmp_path, "--decoder-steps", "1")["decoder_steps"] == 1


def test_decoder_denoised_learns_from_the_unets_estimates(tiny_pipeline: Path,
                                                         tmp_path: Path) -> None:
    state = fine_tune_copy(tiny_pipeline, tmp_path, "--decoder-steps", "2",
                           "--decoder-denoised", "300")
    assert state["decoder_steps"] == 2 and state["decoder_denoised_max_t"] == 300


def test_denoiser_estimate_is_the_latent_at_the_lowest_noise(tiny_pipeline: Path) -> None:
    import torch

    from studio.training.train_diffusion import Denoiser

    low = Denoiser.load(tiny_pipeline, 1, "cpu", 0)
    high = Denoiser.load(tiny_pipeline, 1000, "cpu", 0)
    z = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        near = low.estimate(z, ["a red circle"] * 4, 0.5)
        far = high.estimate(z, ["a red circle"] * 4, 0.5)
    assert near.shape == z.shape
    # at timestep 0 almost no noise is added, so the estimate is the latent itself
    assert (near - z).abs().max() < 0.05
    assert (far - z).abs().max() > 0.05


def test_decoder_sampled_decodes_a_pool_of_guided_samples(tiny_pipeline: Path,
                                                          tmp_path: Path) -> None:
    state = fine_tune_copy(tiny_pipeline, tmp_path, "--decoder-steps", "2",
                           "--decoder-denoised", "300", "--decoder-sampled", "4",
                           "--decoder-guidance", "3")
    assert state["decoder_sampled"] == 4 and state["decoder_sampled_guidance"] == 3.0
    assert state["decoder_denoised_max_t"] == 300


def test_denoiser_sample_runs_the_schedule_from_below_max_t(tiny_pipeline: Path) -> None:
    import torch

    from studio.training.common import TrainError
    from studio.training.train_diffusion import Denoiser

    # the folder's schedule ends on timestep 1 (steps_offset 1); max_t 2 leaves only that
    # last step, where almost nothing is noised
    low = Denoiser.load(tiny_pipeline, 2, "cpu", 0)
    high = Denoiser.load(tiny_pipeline, 1000, "cpu", 0)
    z = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    captions = ["a red circle", "a blue star", "", "a small green square"]
    with torch.no_grad():
        near = low.sample(z, captions, 0.5, guidance=1.0)
        far = [high.sample(z, captions, 0.5, guidance=7.5) for _ in range(3)]
    assert near.shape == z.shape and all(f.shape == z.shape for f in far)
    # an untrained UNet's estimates are rough, so compare the mean change, not a bound
    change = float((near - z).abs().mean())
    assert change < 0.2
    assert max(float((f - z).abs().mean()) for f in far) > 3 * change
    with pytest.raises(TrainError, match="no step of the 20-step schedule"):
        Denoiser.load(tiny_pipeline, 1, "cpu", 0).sample(z, captions, 0.5, guidance=1.0)


def test_decoder_sampled_needs_a_start(tiny_pipeline: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline, copy)
    assert main(["shapes-diffusion", "--decoder-only", "--decoder-sampled", "4",
                 "--out", str(copy), *TINY]) == 2
    assert "--decoder-sampled needs --decoder-denoised" in capsys.readouterr().err
    assert main(["shapes-diffusion", "--decoder-only", "--decoder-sampled", "-3",
                 "--decoder-denoised", "300", "--out", str(copy), *TINY]) == 2
    assert "--decoder-sampled must be positive" in capsys.readouterr().err


def test_decoder_denoised_out_of_range(tiny_pipeline: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "pipe"
    shutil.copytree(tiny_pipeline, copy)
    for bad in ("-1", "5000"):
        assert main(["shapes-diffusion", "--decoder-only", "--decoder-denoised", bad,
                     "--out", str(copy), *TINY]) == 2
        assert "--decoder-denoised must be" in capsys.readouterr().err


def test_decoder_only_needs_a_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["shapes-diffusion", "--decoder-only", "--out", str(tmp_path), *TINY]) == 2
    assert "no pipeline" in capsys.readouterr().err


def test_init_from_reuses_autoencoder_and_vocabulary(tiny_pipeline: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "warm"
    assert main(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                 "--text-steps", "1", "--decoder-steps", "0", "--out", str(out), *TINY]) == 0
    for name in ("vocab.json", "merges.txt"):
        assert (out / "tokenizer" / name).read_text() == (
            tiny_pipeline / "tokenizer" / name).read_text()
    state = json.loads((out / "training_state.json").read_text())
    assert state["init_from"] == str(tiny_pipeline) and state["text_steps"] == 1
    assert "vae_seconds" not in state  # the autoencoder phase was skipped
    StableDiffusionPipeline.from_pretrained(str(out))


def test_init_from_keeps_the_text_encoder_the_unet_reads(tiny_pipeline: Path, tmp_path: Path) -> None:
    import torch
    from transformers import CLIPTextModel

    out = tmp_path / "continued"
    assert main(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                 "--decoder-steps", "0", "--out", str(out), *TINY]) == 0
    before = CLIPTextModel.from_pretrained(str(tiny_pipeline / "text_encoder"))
    after = CLIPTextModel.from_pretrained(str(out / "text_encoder"))
    for a, b in zip(before.parameters(), after.parameters(), strict=True):
        assert torch.equal(a, b)
    assert "text_steps" not in json.loads((out / "training_state.json").read_text())


def test_text_lr_trains_the_text_encoder_and_saves_its_average(tiny_pipeline: Path,
                                                               tmp_path: Path) -> None:
    import torch
    from transformers import CLIPTextModel

    torch.set_num_threads(1)
    start = CLIPTextModel.from_pretrained(str(tiny_pipeline / "text_encoder")).state_dict()
    out = tmp_path / "joint"
    seen = run_recording(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                          "--decoder-steps", "0", "--ema", "0.9", "--text-lr", "1e-3",
                          "--out", str(out), *TINY], ("text_encoder",))["text_encoder"]
    saved = CLIPTextModel.from_pretrained(str(out / "text_encoder")).state_dict()
    name = next(k for k in saved if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert not torch.equal(seen[name], start[name])  # the encoder was trained
    # and the folder holds its average: one warm-up step moves it 90% of the way
    assert torch.allclose(saved[name], start[name] + 0.9 * (seen[name] - start[name]), atol=1e-6)
    assert json.loads((out / "training_state.json").read_text())["text_lr"] == 1e-3

    # an interrupted run keeps the encoder's optimiser group, average and anchor, and resumes them
    run = tmp_path / "run"
    joint = ["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "3",
             "--decoder-steps", "0", "--ema", "0.9", "--text-lr", "1e-3", "--text-anchor", "1",
             "--out", str(run), *TINY]
    assert run_interrupted(joint) == 130
    assert main([*joint, "--resume"]) == 0
    assert json.loads((run / "training_state.json").read_text())["unet_steps_done"] == 3


def test_text_anchor_holds_the_empty_and_list_states(tiny_pipeline: Path, tmp_path: Path) -> None:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    from studio.training.train_diffusion import anchor_captions

    torch.set_num_threads(1)
    assert {"", "red", "red, blue", "blue, red", "star, circle"} <= set(anchor_captions())
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_pipeline / "tokenizer"))
    ids = tokenizer(["", "red, blue"], padding="max_length", truncation=True,
                    max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
    start = CLIPTextModel.from_pretrained(str(tiny_pipeline / "text_encoder"))
    with torch.no_grad():
        before = start(ids)[0]

    def drift(weight: str) -> float:
        out = tmp_path / f"anchor-{weight}"
        seen = run_recording(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "4",
                              "--decoder-steps", "0", "--text-lr", "3e-2", "--text-anchor", weight,
                              "--seed", "3", "--out", str(out), *TINY], ("text_encoder",))
        moved = CLIPTextModel.from_pretrained(str(tiny_pipeline / "text_encoder"))
        moved.load_state_dict(seen["text_encoder"])
        with torch.no_grad():
            return float(((moved(ids)[0] - before) ** 2).mean())

    free, held = drift("0"), drift("1000")
    assert free > 0 and held < 0.5 * free
    state = json.loads((tmp_path / "anchor-1000" / "training_state.json").read_text())
    assert state["text_anchor"] == 1000
    assert "text_encoder_anchor" not in state["parameters"]


def test_init_from_grows_the_unet_and_resumes_it(tiny_pipeline: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from diffusers import StableDiffusionPipeline

    from studio.training.common import has_checkpoint

    out = tmp_path / "deeper"
    grow = ["shapes-diffusion", "--init-from", str(tiny_pipeline), "--layers-per-block", "2",
            "--steps", "3", "--decoder-steps", "0", "--out", str(out), *TINY]
    assert run_interrupted(grow) == 130
    assert has_checkpoint(out)
    # the checkpoint holds the grown UNet, which --resume must rebuild at its depth
    assert main([*grow, "--resume"]) == 0
    state = json.loads((out / "training_state.json").read_text())
    assert state["layers_per_block"] == 2 and state["unet_steps_done"] == 3
    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    assert pipe.unet.config.layers_per_block == 2
    assert len(pipe.unet.up_blocks[0].resnets) == 3

    assert main(["shapes-diffusion", "--init-from", str(out), "--layers-per-block", "1",
                 "--steps", "1", "--out", str(tmp_path / "shallower"), *TINY]) == 2
    assert "already has 2" in capsys.readouterr().err


def test_init_from_widens_the_unet_and_resumes_it(tiny_pipeline: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    narrow = UNet2DConditionModel.from_pretrained(str(tiny_pipeline / "unet"))
    out = tmp_path / "wider"
    grow = ["shapes-diffusion", "--init-from", str(tiny_pipeline), "--widen", "2",
            "--steps", "3", "--decoder-steps", "0", "--out", str(out), *TINY]
    assert run_interrupted(grow) == 130
    # the checkpoint holds the widened UNet, which --resume must rebuild at its width
    assert main([*grow, "--resume"]) == 0
    state = json.loads((out / "training_state.json").read_text())
    wide = [2 * c for c in narrow.config.block_out_channels]
    assert state["block_out_channels"] == wide and state["unet_steps_done"] == 3
    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    assert list(pipe.unet.config.block_out_channels) == wide
    # the timestep embedding keeps its width; only the layers reading it grow
    assert pipe.unet.time_embedding.linear_1.out_features == narrow.time_embedding.linear_1.out_features


def test_fresh_unet_keeps_the_autoencoder_and_text_encoder_and_resumes(
        tiny_pipeline: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import StableDiffusionPipeline

    from studio.training.train_diffusion import PRESETS

    start = StableDiffusionPipeline.from_pretrained(str(tiny_pipeline))
    out = tmp_path / "fresh"
    argv = ["shapes-diffusion", "--init-from", str(tiny_pipeline), "--fresh-unet", "--widen", "2",
            "--steps", "3", "--decoder-steps", "0", "--out", str(out), *TINY]
    assert run_interrupted(argv) == 130
    # a fresh wide UNet is built at its width, so --resume rebuilds the same shapes
    assert main([*argv, "--resume"]) == 0
    state = json.loads((out / "training_state.json").read_text())
    wide = [2 * c for c in PRESETS["tiny"]["unet_channels"]]
    assert state["fresh_unet"] is True and state["block_out_channels"] == wide
    assert state["unet_steps_done"] == 3
    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    assert list(pipe.unet.config.block_out_channels) == wide
    # built, not grown: the timestep embedding is as wide as a new UNet of that width has
    assert pipe.unet.time_embedding.linear_1.out_features == 4 * wide[0]
    for name in ("vae", "text_encoder"):
        kept, before = getattr(pipe, name).state_dict(), getattr(start, name).state_dict()
        assert all(torch.equal(kept[k], before[k]) for k in before), name


def test_ema_weights_are_the_ones_saved_and_resume(tiny_pipeline: Path, tmp_path: Path) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from studio.training.common import has_checkpoint

    torch.set_num_threads(1)
    start = UNet2DConditionModel.from_pretrained(str(tiny_pipeline / "unet")).state_dict()
    out = tmp_path / "ema"
    seen = run_recording(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                          "--decoder-steps", "0", "--ema", "0.9", "--out", str(out), *TINY],
                         ("unet", "unet_ema"))
    saved = UNet2DConditionModel.from_pretrained(str(out / "unet")).state_dict()
    name = "conv_in.weight"
    # one step with the warm-up rate 0.9: the average moved 90% of the way to the weights
    expected = start[name] + 0.9 * (seen["unet"][name] - start[name])
    assert torch.allclose(saved[name], expected, atol=1e-6)
    assert not torch.allclose(saved[name], seen["unet"][name])
    assert json.loads((out / "training_state.json").read_text())["ema"] == 0.9

    # an interrupted --ema run keeps the average in its checkpoint and resumes it
    run = tmp_path / "run"
    averaged = ["shapes-diffusion", "--steps", "3", "--ema", "0.99", "--out", str(run), *TINY]
    assert run_interrupted(averaged) == 130
    assert has_checkpoint(run)
    keys = load_file(str(run / "checkpoint" / "weights.safetensors")).keys()
    assert any(k.startswith("model.unet_ema.") for k in keys)
    assert main([*averaged, "--resume"]) == 0
    assert json.loads((run / "training_state.json").read_text())["unet_steps_done"] == 3


def test_list_caption_share_sets_how_many_captions_are_lists() -> None:
    from studio.training import world
    from studio.training.train_diffusion import training_batch

    words = set(world.COLOUR_NAMES) | set(world.SHAPES)

    def is_list(caption: str) -> bool:
        return bool(caption) and set(caption.replace(",", " ").split()) <= words

    rng = np.random.default_rng(0)
    _, none = training_batch(10**9, 100, rng, list_share=0.0)
    _, every = training_batch(10**9, 100, rng, list_share=1.0)
    assert not any(is_list(c) for c in none)
    assert all(is_list(c) for c in every if c) and any(every)


def test_object_mask_marks_the_latent_pixels_over_the_object() -> None:
    from studio.training import world
    from studio.training.train_diffusion import object_mask

    images, _, scenes = world.render_batch(range(40), tier=1)
    mask = object_mask(images, 16)
    assert mask.shape == (40, 1, 16, 16) and mask.dtype == bool
    for image, m, scene in zip(images, mask[:, 0], scenes, strict=True):
        obj = scene.objects[0]
        assert m[int(obj.cy) // 4, int(obj.cx) // 4]  # the object's centre
        pixels = (image != image[0, 0]).any(-1)
        patches = pixels.reshape(16, 4, 16, 4).sum(axis=(1, 3))
        # marked exactly where a 4x4 patch holds at least one object pixel
        assert np.array_equal(m, patches > 0)
        assert 0 < m.sum() < 256


def one_step_against_plain(tiny_pipeline: Path, tmp_path: Path, extra: list[str]
                           ) -> tuple[dict, dict]:
    """One training step from the same pipeline, batches and noise (same seed) without and
    with ``extra``; asserts the UNets differ and returns both runs' training states."""
    import torch
    from diffusers import UNet2DConditionModel

    unets, states = [], []
    for name, flags in (("plain", []), ("changed", extra)):
        out = tmp_path / name
        assert main(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                     "--decoder-steps", "0", "--seed", "3", "--out", str(out), *flags,
                     *TINY]) == 0
        unets.append(UNet2DConditionModel.from_pretrained(str(out / "unet")))
        states.append(json.loads((out / "training_state.json").read_text()))
    assert any(not torch.equal(a, b) for a, b in
               zip(unets[0].parameters(), unets[1].parameters(), strict=True))
    return states[0], states[1]


def test_object_weight_changes_the_unet_update_and_is_recorded(tiny_pipeline: Path,
                                                               tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    states = one_step_against_plain(tiny_pipeline, tmp_path, ["--object-weight", "9"])
    assert states[0].get("object_weight", 0.0) == 0.0 and states[1]["object_weight"] == 9.0
    assert main(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                 "--object-weight", "-1", "--out", str(tmp_path / "bad"), *TINY]) == 2
    assert "--object-weight" in capsys.readouterr().err


def test_min_snr_weights_damp_low_noise_and_gamma_zero_turns_them_off() -> None:
    import torch
    from diffusers import DDPMScheduler

    from studio.training.train_diffusion import min_snr_weights

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    t = torch.tensor([10, 50, 150, 500, 900])
    w5 = min_snr_weights(scheduler, t)
    w50 = min_snr_weights(scheduler, t, 50.0)
    assert w5[0] < w5[1] < w5[2] < 1.0 and torch.allclose(w5[3:], torch.ones(2))
    assert torch.all(w50 >= w5) and w50[1] > 5 * w5[1]
    assert torch.equal(min_snr_weights(scheduler, t, 0.0), torch.ones(5))


def test_low_noise_share_changes_the_update_and_is_recorded(tiny_pipeline: Path,
                                                            tmp_path: Path) -> None:
    states = one_step_against_plain(tiny_pipeline, tmp_path, [
        "--low-noise-share", "1", "--low-noise-max", "50", "--snr-gamma", "0"])
    assert (states[1]["low_noise_share"], states[1]["low_noise_max"], states[1]["snr_gamma"]) == \
        (1.0, 50, 0.0)
    assert "low_noise_share" not in states[0] and "snr_gamma" not in states[0]


def test_low_noise_share_draws_that_share_below_the_bound() -> None:
    import torch

    from studio.training.train_diffusion import draw_timesteps

    plain = draw_timesteps(20000, torch.Generator().manual_seed(0))
    low = draw_timesteps(20000, torch.Generator().manual_seed(0), (0.5, 300))
    assert 0 <= int(plain.min()) and int(plain.max()) < 1000
    assert abs(float((plain < 300).float().mean()) - 0.30) < 0.02
    # half drawn below 300, the other half uniform: 0.5 + 0.5 * 0.3 below 300
    assert abs(float((low < 300).float().mean()) - 0.65) < 0.02
    assert int(low.max()) >= 900


def test_object_neighbourhood_covers_the_object_and_a_two_pixel_ring() -> None:
    from studio.training import world
    from studio.training.train_diffusion import object_neighbourhood

    images, _, scenes = world.render_batch(range(20), tier=1)
    near = object_neighbourhood(images)
    assert near.shape == (20, 1, 64, 64)
    for image, m in zip(images, near[:, 0], strict=True):
        pixels = (image != image[0, 0]).any(-1)
        padded = np.pad(pixels, 2)
        # every pixel with an object pixel within two rows and two columns of it
        ring = np.zeros_like(pixels)
        for dy in range(5):
            for dx in range(5):
                ring |= padded[dy:dy + 64, dx:dx + 64]
        assert np.array_equal(m == 1.0, ring) and set(np.unique(m)) == {0.0, 1.0}
        assert ring.sum() > pixels.sum()


def decoder_flag_runs(tiny_pipeline: Path, tmp_path: Path, flag: str, values: tuple[str, str],
                      state_key: str, steps: str = "1") -> None:
    """Fine-tune a copy of the tiny decoder once per value of ``flag`` (same seed and scenes):
    the two decoders must differ and each run's state must record its value."""
    import shutil

    import torch
    from diffusers import AutoencoderKL

    decoders = []
    for value in values:
        copy = tmp_path / f"{flag.strip('-')}-{value}"
        shutil.copytree(tiny_pipeline, copy)
        assert main(["shapes-diffusion", "--decoder-only", "--decoder-steps", steps, "--seed", "2",
                     flag, value, "--out", str(copy), *TINY]) == 0
        decoders.append(AutoencoderKL.from_pretrained(str(copy / "vae")).decoder)
        state = json.loads((copy / "training_state.json").read_text())
        assert state.get(state_key, 0.0) == float(value)
    assert any(not torch.equal(a, b) for a, b in
               zip(decoders[0].parameters(), decoders[1].parameters(), strict=True))


def test_decoder_object_weight_changes_the_decoder_and_is_recorded(tiny_pipeline: Path,
                                                                   tmp_path: Path) -> None:
    decoder_flag_runs(tiny_pipeline, tmp_path, "--object-weight", ("0", "9"),
                      "decoder_object_weight")


def test_name_probability_reaches_the_training_captions() -> None:
    from studio.training import world
    from studio.training.train_diffusion import training_batch

    usual, usual_caps = training_batch(0, 300, np.random.default_rng(1), list_share=0.0)
    bare, bare_caps = training_batch(0, 300, np.random.default_rng(1), list_share=0.0,
                                     name_probability=0.0)
    assert np.array_equal(usual, bare)
    one_object = [c for c in bare_caps if c and world.parse_caption(c).get("shape")]
    assert len(one_object) > 150
    assert all(c in {f"a {s}" for s in world.SHAPES} for c in one_object)
    assert sum(c in one_object for c in usual_caps) < 10


def test_short_captions_name_only_colour_and_shape_of_one_object_scenes() -> None:
    from studio.training import world
    from studio.training.train_diffusion import training_batch

    images, usual = training_batch(0, 300, np.random.default_rng(1), list_share=0.0)
    again, short = training_batch(0, 300, np.random.default_rng(1), list_share=0.0,
                                  short_share=1.0)
    assert np.array_equal(images, again)
    for before, after in zip(usual, short, strict=True):
        parsed = world.parse_caption(before) if before else None
        if parsed is None or parsed["tier"] == 2:
            assert after == before  # empty and two-object captions are kept
        else:
            # the scene's own colour, which the original caption may not have named
            assert after.split()[-1] == parsed["shape"]
            assert world.parse_caption(after) == {**world.parse_caption(after),
                                                 "size": None, "position": None,
                                                 "background": None}
            assert world.parse_caption(after)["colour"] is not None
    top_left = images[:, 0, 0]
    for image, bg, caption in zip(images, top_left, short, strict=True):
        parsed = world.parse_caption(caption) if caption else None
        if parsed and parsed["tier"] == 1:
            named = np.array(world.COLOURS[parsed["colour"]])
            assert (image == named).all(-1).any() and not (bg == named).all()
    _, some = training_batch(0, 300, np.random.default_rng(1), list_share=0.0, short_share=0.3)
    changed = sum(a != b for a, b in zip(usual, some, strict=True))
    assert 30 < changed < 110


def test_short_captions_share_is_recorded(tiny_pipeline: Path, tmp_path: Path) -> None:
    out = tmp_path / "short"
    assert main(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                 "--decoder-steps", "0", "--short-captions", "0.4",
                 "--out", str(out), *TINY[:2], "--batch-size", "8", *TINY[4:]]) == 0
    assert json.loads((out / "training_state.json").read_text())["short_captions"] == 0.4


def test_named_object_colours_reads_one_object_captions() -> None:
    from studio.training import world
    from studio.training.train_diffusion import named_object_colours

    captions = ["a black circle", "a small red star on a blue background",
                "a blue background with a large white square", "green triangle, red background",
                "a circle", "", "red, blue", "a red circle above a blue star",
                "a square on a black background"]
    assert named_object_colours(captions).tolist() == [7, 0, 6, 3, -1, -1, -1, -1, -1]
    no_black = np.array([c != "black" for c in world.COLOUR_NAMES])
    assert named_object_colours(captions, no_black).tolist()[:4] == [-1, 0, 6, 3]
    layouts = ["a small red star on the left", "a large blue circle at the top on a red background",
               "a red star on the left", "a small red star", "a small circle on the left"]
    assert named_object_colours(layouts, None, ("size", "position")).tolist() == [0, 4, -1, -1, -1]


def test_empty_field_latents_decode_to_empty_fields_of_each_colour() -> None:
    import torch
    from diffusers import AutoencoderKL

    from studio.training import world
    from studio.training.train_diffusion import empty_field_latents

    folder = Path(__file__).resolve().parents[2] / "models" / "shapes-diffusion" / "vae"
    vae = AutoencoderKL.from_pretrained(str(folder))
    fields, clean = empty_field_latents(vae, "cpu")
    assert fields.shape == (len(world.COLOUR_NAMES), 4, 16, 16)
    with torch.no_grad():
        images = (vae.decode(fields).sample.clamp(-1, 1) + 1) * 127.5
    palette = torch.tensor([world.COLOURS[c] for c in world.COLOUR_NAMES], dtype=torch.float32)
    # nearly every pixel of a clean field is the colour, within a few levels
    error = (images - palette[:, :, None, None]).abs().flatten(1).quantile(0.9, dim=1)
    # the autoencoder never saw an empty image; the ones it draws a shape into are not clean
    assert clean.sum() >= 6
    assert (error[torch.from_numpy(clean)] < 4).all()
    assert (error[torch.from_numpy(~clean)] > 16).all()


def test_empty_field_inputs_swap_only_colour_named_rows_at_high_noise() -> None:
    import torch

    from studio.training.train_diffusion import EMPTY_FIELD_MIN_T, empty_field_inputs

    latents = torch.randn(64, 4, 16, 16)
    fields = torch.arange(8.0)[:, None, None, None].expand(8, 4, 16, 16)
    colours = torch.tensor([-1, 0, 3, 7] * 16)
    t = torch.full((64,), 5)
    gen = torch.Generator().manual_seed(0)
    inputs, t_all = empty_field_inputs(latents, colours, fields, t, 1.0, gen)
    named = colours >= 0
    assert torch.equal(inputs[~named], latents[~named]) and (t_all[~named] == 5).all()
    assert torch.equal(inputs[named], fields[colours[named]])
    assert (t_all[named] >= EMPTY_FIELD_MIN_T).all()
    none, t_none = empty_field_inputs(latents, colours, fields, t, 0.0, gen)
    assert torch.equal(none, latents) and torch.equal(t_none, t)
    half, _ = empty_field_inputs(latents, colours, fields, t, 0.5, gen)
    swapped = (half != latents).flatten(1).any(1)
    assert not swapped[~named].any() and 8 < int(swapped.sum()) < 40
    late, t_late = empty_field_inputs(latents, colours, fields, t, 1.0, gen, min_t=950)
    assert torch.equal(late, inputs) and (t_late[named] >= 950).all()


def test_empty_field_blend_keeps_a_share_of_the_scene() -> None:
    import torch

    from studio.training.train_diffusion import empty_field_inputs

    latents = torch.randn(64, 4, 16, 16)
    fields = torch.arange(8.0)[:, None, None, None].expand(8, 4, 16, 16)
    colours = torch.tensor([-1, 0, 3, 7] * 16)
    t = torch.full((64,), 5)
    inputs, _ = empty_field_inputs(latents, colours, fields, t, 1.0,
                                   torch.Generator().manual_seed(0), blend_low=0.4)
    named = colours >= 0
    assert torch.equal(inputs[~named], latents[~named])
    # each swapped row is w * field + (1 - w) * scene, one w per row, 0.4 <= w <= 1
    field, scene = fields[colours[named]], latents[named]
    w = ((inputs[named] - scene) * (field - scene)).flatten(1).sum(1) / \
        ((field - scene) ** 2).flatten(1).sum(1)
    rebuilt = w.view(-1, 1, 1, 1) * field + (1 - w.view(-1, 1, 1, 1)) * scene
    assert torch.allclose(rebuilt, inputs[named], atol=1e-5)
    assert (w >= 0.4 - 1e-5).all() and (w <= 1 + 1e-5).all() and w.std() > 0.1


def unet_flag_runs(tiny_pipeline: Path, tmp_path: Path, flag: str, values: tuple[str, str],
                   state_key: str, default: float, extra: tuple[str, ...] = ()) -> None:
    """One UNet step from the tiny pipeline per value of ``flag`` (same seed and batch):
    the two UNets must differ and each run's state must record its value."""
    import torch
    from diffusers import UNet2DConditionModel

    unets = []
    for value in values:
        out = tmp_path / f"{flag.strip('-')}-{value}"
        assert main(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                     "--decoder-steps", "0", flag, value, "--seed", "3", *extra,
                     "--out", str(out), *TINY[:2], "--batch-size", "8", *TINY[4:]]) == 0
        unets.append(UNet2DConditionModel.from_pretrained(str(out / "unet")))
        state = json.loads((out / "training_state.json").read_text())
        assert state.get(state_key, default) == float(value)
    assert any(not torch.equal(a, b) for a, b in
               zip(unets[0].parameters(), unets[1].parameters(), strict=True))


@pytest.fixture
def every_field_clean(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tiny test autoencoder is untrained, so no empty field would pass as clean and
    nothing would be swapped; let every colour through."""
    from studio.training import train_diffusion

    monkeypatch.setattr(train_diffusion, "EMPTY_FIELD_TOLERANCE", float("inf"))


def test_empty_field_share_changes_the_update_and_is_recorded(tiny_pipeline: Path,
                                                              tmp_path: Path,
                                                              every_field_clean: None) -> None:
    # --short-captions 1 makes every one-object caption name its colour
    unet_flag_runs(tiny_pipeline, tmp_path, "--empty-field-share", ("0", "1"),
                   "empty_field_share", 0.0, ("--short-captions", "1"))


def test_empty_field_blend_changes_the_update_and_is_recorded(tiny_pipeline: Path,
                                                              tmp_path: Path,
                                                              every_field_clean: None) -> None:
    unet_flag_runs(tiny_pipeline, tmp_path, "--empty-field-blend", ("1", "0"),
                   "empty_field_blend_low", 1.0,
                   ("--short-captions", "1", "--empty-field-share", "1"))


def test_empty_field_layout_swaps_only_whole_layouts_and_is_recorded(
        tiny_pipeline: Path, tmp_path: Path, every_field_clean: None) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    # short captions name no size or position: with --empty-field-layout none is swapped
    runs = {"none": (), "layout": ("--empty-field-share", "1", "--empty-field-layout"),
            "all": ("--empty-field-share", "1")}
    unets = {}
    for name, extra in runs.items():
        out = tmp_path / name
        assert main(["shapes-diffusion", "--init-from", str(tiny_pipeline), "--steps", "1",
                     "--decoder-steps", "0", "--short-captions", "1", "--seed", "3", *extra,
                     "--out", str(out), *TINY[:2], "--batch-size", "8", *TINY[4:]]) == 0
        unets[name] = torch.cat([p.flatten() for p in UNet2DConditionModel.from_pretrained(
            str(out / "unet")).parameters()])
    state = json.loads((tmp_path / "layout" / "training_state.json").read_text())
    assert state["empty_field_layout"] is True and state["empty_field_share"] == 1.0
    moved = {name: float((unets[name] - unets["none"]).abs().max()) for name in ("layout", "all")}
    assert moved["layout"] < 0.1 * moved["all"]


def test_star_scene_weights_weigh_captions_that_name_a_star() -> None:
    from studio.training.train_diffusion import star_scene_weights

    captions = ["a star", "a small red star on the left", "a red star to the left of a blue circle",
                "a blue background with a small red star at the top",
                "large white star, purple background", "a circle above a star",
                "", "a circle", "star, circle", "circle, star", "red, blue",
                "a blue circle on a star background"]
    weights = star_scene_weights(captions, 3.0)
    assert weights.tolist() == [3.0] * 6 + [1.0] * 6
    assert star_scene_weights(captions, 1.0).tolist() == [1.0] * len(captions)


def test_star_weight_changes_the_unet_update_and_is_recorded(tiny_pipeline: Path,
                                                             tmp_path: Path) -> None:
    from studio.training import train_diffusion

    # the tiny cache and first batch these arguments draw hold a star next to other scenes
    unet_flag_runs(tiny_pipeline, tmp_path, "--star-weight", ("1", "5"), "star_weight", 1.0)
    assert train_diffusion.star_scene_weights(["a star", "a circle"], 5.0).sum() == 6.0


def test_as_small_stars_repaints_the_first_share_as_small_stars() -> None:
    from studio.training import world
    from studio.training.train_diffusion import as_small_stars

    images, _, scenes = world.render_batch(range(100, 116), tier=1, caption_style="empty")
    stars = as_small_stars(scenes, 0.25, np.random.default_rng(0))
    assert stars is not None and stars.shape == images.shape
    assert np.array_equal(stars[4:], images[4:])
    palette = {k: np.array(v, np.uint8) for k, v in world.COLOURS.items()}
    for i in range(4):
        scene = scenes[i]
        background = np.all(stars[i] == palette[scene.background], axis=-1)
        obj = np.all(stars[i] == palette[scene.objects[0].colour], axis=-1)
        # the same colours on the same background, the object now a small one
        assert background.mean() > 0.85 and 0 < obj.sum() < np.pi * 12 ** 2
        assert background[0, 0] and background[-1, -1]
    assert as_small_stars(scenes, 0.0, np.random.default_rng(0)) is None
    _, _, pairs = world.render_batch(range(4), tier=2, caption_style="empty")
    assert as_small_stars(pairs, 0.5, np.random.default_rng(0)) is None


def test_decoder_small_stars_changes_the_decoder_and_is_recorded(tiny_pipeline: Path,
                                                                 tmp_path: Path) -> None:
    # step 1 of 2 is a one-object batch (step 0 is tier 2, which stays as rendered)
    decoder_flag_runs(tiny_pipeline, tmp_path, "--decoder-small-stars", ("0", "1"),
                      "decoder_small_stars", steps="2")


def test_decoded_weight_changes_the_unet_update_and_is_recorded(tiny_pipeline: Path,
                                                                tmp_path: Path) -> None:
    states = one_step_against_plain(tiny_pipeline, tmp_path, [
        "--decoded-weight", "50", "--decoded-max-t", "1000"])
    assert (states[1]["decoded_weight"], states[1]["decoded_max_t"]) == (50.0, 1000)
    assert "decoded_weight" not in states[0]
