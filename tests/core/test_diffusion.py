import json
import math
import shutil

import numpy as np
import pytest
import torch

from studio.core.diffusion import (
    SCHEDULERS,
    available_schedulers,
    check_pipeline_folder,
    validate_request,
)
from studio.core.engine import Engine
from studio.core.errors import UserError
from studio.core.gallery import Gallery
from studio.core.jobs import Cancelled, CountTokens, Failed, Progress, TextToImage
from studio.core.metadata import (
    parameters_to_request,
    parse_parameters,
    read_png_request,
    read_png_text,
)


@pytest.fixture(scope="module")
def module_engine():
    torch.set_num_threads(1)
    e = Engine(device="cpu")
    e.start()
    assert e.wait_ready(30)
    yield e
    e.stop()


@pytest.fixture
def engine(module_engine, tmp_path):
    module_engine.options.clear()
    module_engine.options["outputs_dir"] = str(tmp_path / "outputs")
    return module_engine


def _job(model, **kw):
    defaults = dict(prompt="a red circle", steps=3, seed=7, width=32, height=32)
    defaults.update(kw)
    return TextToImage(model=str(model), **defaults)


def _pixels(result):
    return [np.asarray(im) for im in result.images]


# ---- inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"width": 63}, "multiple of 8"),
        ({"height": 0}, "between 8 and"),
        ({"width": 8192}, "between 8 and"),
        ({"steps": 0}, "Steps must be"),
        ({"guidance_scale": math.nan}, "CFG scale"),
        ({"guidance_scale": -1.0}, "CFG scale"),
        ({"batch_size": 0}, "batch size"),
        ({"scheduler": "nonsense"}, "Unknown scheduler"),
        ({"guidance_method": "warp"}, "Unknown guidance"),
    ],
)
def test_bad_requests_get_clear_messages(change, message):
    with pytest.raises(UserError, match=message):
        validate_request(TextToImage(prompt="x", **change))


def test_scheduler_names_and_lcm_support(tiny_pipeline):
    assert list(SCHEDULERS.values()) == [
        "DDIM",
        "DDPM",
        "Euler",
        "Euler a",
        "DPM++ 2M",
        "LCM",
    ]
    assert "lcm" not in available_schedulers(tiny_pipeline)
    assert validate_request(TextToImage(prompt="x", scheduler="Euler a")) == "euler_a"


def test_missing_corrupt_and_foreign_folders_are_named(tmp_path, tiny_pipeline):
    with pytest.raises(UserError, match="does not exist"):
        check_pipeline_folder(tmp_path / "nowhere")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(UserError, match="model_index.json is missing"):
        check_pipeline_folder(foreign)

    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"unet/diffusion_pytorch_model\.safetensors is corrupt"):
        check_pipeline_folder(broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(UserError, match=r"model_index\.json is corrupt"):
        check_pipeline_folder(broken)

    gone = tmp_path / "gone"
    shutil.copytree(tiny_pipeline, gone)
    shutil.rmtree(gone / "vae")
    with pytest.raises(UserError, match=r"gone/vae is missing"):
        check_pipeline_folder(gone)


def test_bad_model_fails_and_the_thread_survives(engine, tmp_path, tiny_pipeline):
    with pytest.raises(UserError, match="model_index.json is missing"):
        engine.run(_job(tmp_path), timeout=60)
    with pytest.raises(UserError, match="No diffusers-pipeline model named 'no-such-model'"):
        engine.run(_job("no-such-model"), timeout=60)
    assert engine.run(_job(tiny_pipeline), timeout=60).paths


# ---- generation ------------------------------------------------------------------------


def test_same_seed_same_pixels_and_saved_with_metadata(engine, tiny_pipeline, tmp_path):
    events = []
    unsubscribe = engine.subscribe(events.append)
    try:
        first = engine.run(_job(tiny_pipeline, negative_prompt="blue", width=48), timeout=60)
    finally:
        unsubscribe()
    second = engine.run(_job(tiny_pipeline, negative_prompt="blue", width=48), timeout=60)
    other = engine.run(_job(tiny_pipeline, negative_prompt="blue", width=48, seed=8), timeout=60)
    assert np.array_equal(_pixels(first)[0], _pixels(second)[0])
    assert not np.array_equal(_pixels(first)[0], _pixels(other)[0])
    assert first.images[0].size == (48, 32)

    previews = [e.preview for e in events if isinstance(e, Progress) and e.preview is not None]
    assert len(previews) == 3
    assert all(p.shape == (32, 48, 3) and p.dtype == np.uint8 for p in previews)

    path = first.paths[0]
    assert path.parent == tmp_path / "outputs" and path.is_file()
    params = parse_parameters(read_png_text(path)["parameters"])
    assert params["Prompt"] == "a red circle"
    assert params["Negative prompt"] == "blue"
    assert (params["Steps"], params["Sampler"], params["Seed"]) == ("3", "Euler", "7")
    assert (params["Size-1"], params["Size-2"]) == ("48", "32")
    assert len(params["Model hash"]) == 10 and params["Model"] == tiny_pipeline.name
    assert read_png_request(path)["negative_prompt"] == "blue"
    assert Gallery(tmp_path / "outputs").count() == 3


def test_batch_seeds_count_up_and_each_image_reproduces_alone(engine, tiny_pipeline):
    batch = engine.run(_job(tiny_pipeline, seed=100, batch_size=2), timeout=60)
    assert batch.seeds == [100, 101]
    assert [read_png_request(p)["seed"] for p in batch.paths] == [100, 101]
    alone = engine.run(_job(tiny_pipeline, seed=101), timeout=60)
    assert np.abs(_pixels(batch)[1].astype(int) - _pixels(alone)[0].astype(int)).max() <= 1


def test_random_seed_is_recorded(engine, tiny_pipeline):
    result = engine.run(_job(tiny_pipeline, seed=-1), timeout=60)
    assert result.seeds[0] >= 0
    assert result.request.seed == result.seeds[0]
    assert read_png_request(result.paths[0])["seed"] == result.seeds[0]


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "euler", "euler_a", "dpmpp_2m"])
def test_every_scheduler_runs(engine, tiny_pipeline, scheduler):
    result = engine.run(_job(tiny_pipeline, steps=2, scheduler=scheduler), timeout=60)
    assert result.images[0].size == (32, 32)
    params = parse_parameters(read_png_text(result.paths[0])["parameters"])
    assert parameters_to_request(params)["scheduler"] == scheduler


@pytest.mark.parametrize("method", ["FDG", "APG"])
def test_other_guidance_rules_change_the_image_and_are_recorded(engine, tiny_pipeline, method):
    plain = engine.run(_job(tiny_pipeline, negative_prompt="blue"), timeout=60)
    projected = engine.run(_job(tiny_pipeline, negative_prompt="blue", guidance_method=method), timeout=60)
    assert not np.array_equal(_pixels(plain)[0], _pixels(projected)[0])
    assert projected.request.guidance_method == method.lower()
    params = parse_parameters(read_png_text(projected.paths[0])["parameters"])
    assert params["Guidance"] == method
    assert parameters_to_request(params)["guidance_method"] == method.lower()
    assert read_png_request(projected.paths[0])["guidance_method"] == method.lower()
    assert "Guidance" not in parse_parameters(read_png_text(plain.paths[0])["parameters"])
    # The pipeline is cached between jobs: the next CFG job is CFG again.
    again = engine.run(_job(tiny_pipeline, negative_prompt="blue"), timeout=60)
    assert np.array_equal(_pixels(plain)[0], _pixels(again)[0])


def test_lcm_only_where_the_model_supports_it(engine, tiny_pipeline, tmp_path):
    with pytest.raises(UserError, match="LCM-distilled"):
        engine.run(_job(tiny_pipeline, scheduler="lcm"), timeout=60)
    from tests.core.tiny_pipeline import make_tiny_pipeline

    lcm_model = make_tiny_pipeline(tmp_path / "tiny-lcm", lcm=True)
    assert "lcm" in available_schedulers(lcm_model)
    result = engine.run(_job(lcm_model, scheduler="lcm", steps=2, guidance_scale=1.5), timeout=60)
    assert result.images[0].size == (32, 32)


def test_long_prompt_is_truncated_with_a_notice(engine, tiny_pipeline):
    long_prompt = " ".join(["a red circle on the left"] * 20)
    result = engine.run(_job(tiny_pipeline, prompt=long_prompt), timeout=60)
    assert len(result.notices) == 1
    assert "text encoder takes 75" in result.notices[0]
    # The request keeps the whole prompt, as A1111 does.
    assert read_png_request(result.paths[0])["prompt"] == long_prompt


def test_count_tokens_on_the_interactive_lane(engine, tiny_pipeline):
    count, limit = engine.run(CountTokens(prompt="a red circle", model=str(tiny_pipeline)), 60)
    assert (count, limit) == (3, 75)


# ---- cancel, faults -------------------------------------------------------------------


def test_cancel_stops_within_a_step_and_saves_nothing(engine, tiny_pipeline, monkeypatch, tmp_path):
    engine.run(_job(tiny_pipeline, steps=1), timeout=60)  # loaded and warm
    outputs = tmp_path / "outputs"
    before = sorted(outputs.glob("*.png"))
    from diffusers import AutoencoderKL

    decodes = []
    real_decode = AutoencoderKL.decode

    def counting_decode(self, *a, **kw):
        decodes.append(1)
        return real_decode(self, *a, **kw)

    monkeypatch.setattr(AutoencoderKL, "decode", counting_decode)
    steps_seen = []

    def listener(event):
        if isinstance(event, Progress) and event.job_id == handle.job.job_id:
            steps_seen.append(event.step)
            if event.step == 2:
                engine.cancel_running()

    unsubscribe = engine.subscribe(listener)
    try:
        handle = engine.submit(_job(tiny_pipeline, steps=50))
        end = handle.wait(60)
    finally:
        unsubscribe()
    assert isinstance(end, Cancelled)
    assert max(steps_seen) == 2
    assert decodes == []
    assert sorted(outputs.glob("*.png")) == before
    assert Gallery(outputs).count() == len(before)


def test_out_of_memory_releases_models_and_the_next_job_runs(engine, tiny_pipeline, monkeypatch):
    engine.run(_job(tiny_pipeline, steps=1), timeout=60)
    assert engine.models.keys()
    from diffusers import UNet2DConditionModel

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(UNet2DConditionModel, "forward", oom)
    handle = engine.submit(_job(tiny_pipeline, width=64, height=64))
    end = handle.wait(60)
    assert isinstance(end, Failed)
    assert "Out of system memory at 64×64" in end.message
    assert "VAE tiling" in end.message
    assert engine.models.keys() == []
    monkeypatch.undo()
    assert engine.run(_job(tiny_pipeline), timeout=60).images


def test_unwritable_outputs_fail_clearly_and_the_next_job_works(engine, tiny_pipeline, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the outputs folder should be")
    engine.options["outputs_dir"] = str(blocker)
    with pytest.raises(UserError, match="outputs folder"):
        engine.run(_job(tiny_pipeline), timeout=60)
    assert blocker.read_text().startswith("a file")
    engine.options["outputs_dir"] = str(tmp_path / "fine")
    assert engine.run(_job(tiny_pipeline), timeout=60).paths[0].parent == tmp_path / "fine"


def test_preview_fit_tracks_the_vae(engine, tiny_pipeline):
    from studio.core.previews import fit_linear_preview

    pipe = engine.models.peek(engine.models.keys()[0]).pipe if engine.models.keys() else None
    if pipe is None:
        engine.run(_job(tiny_pipeline, steps=1), timeout=60)
        pipe = engine.models.peek(engine.models.keys()[0]).pipe
    preview = fit_linear_preview(pipe.vae, samples=4, seed=1)
    assert preview.matrix.shape == (5, 3)
    # On latents of fresh pictures, the fitted map beats predicting the mean colour.
    held_out = fit_linear_preview.__globals__["_smooth_images"](
        2, 32, torch.Generator().manual_seed(99)
    )
    with torch.no_grad():
        raw = pipe.vae.encode(held_out).latent_dist.mean
        decoded = pipe.vae.decode(raw).sample
    target = torch.nn.functional.avg_pool2d(decoded, 2).permute(0, 2, 3, 1).numpy()
    latents = (raw * pipe.vae.config.scaling_factor).numpy()
    approx = np.stack(
        [
            np.tensordot(lat, preview.matrix[:4], axes=([0], [0])) + preview.matrix[4]
            for lat in latents
        ]
    )
    err = np.mean((approx - target) ** 2)
    baseline = np.mean((target - target.mean(axis=(0, 1, 2))) ** 2)
    assert err < baseline


def test_result_request_round_trips_through_json(engine, tiny_pipeline):
    result = engine.run(_job(tiny_pipeline), timeout=60)
    stored = json.loads(read_png_text(result.paths[0])["latent-studio"])
    stored.pop("type")
    assert TextToImage(**stored) == result.request


def test_image_jobs_run_in_queue_order(engine, tiny_pipeline):
    from studio.core.jobs import Finished, Started

    events = []
    unsubscribe = engine.subscribe(events.append)
    try:
        handles = [engine.submit(_job(tiny_pipeline, steps=1, seed=s)) for s in (3, 1, 2)]
        results = [h.result(60) for h in handles]
    finally:
        unsubscribe()
    assert [r.seeds[0] for r in results] == [3, 1, 2]
    ids = [h.job.job_id for h in handles]
    order = [e.job_id for e in events if isinstance(e, Started) and e.job_id in ids]
    done = [e.job_id for e in events if isinstance(e, Finished) and e.job_id in ids]
    assert order == ids and done == ids


def test_negative_prompt_without_guidance_gets_a_notice(engine, tiny_pipeline):
    result = engine.run(_job(tiny_pipeline, negative_prompt="blue", guidance_scale=1.0), 60)
    assert any("no effect" in n for n in result.notices)


def test_sdxl_folders_load_as_sdxl(engine, tmp_path):
    from tests.core.tiny_pipeline import make_tiny_pipeline

    xl = make_tiny_pipeline(tmp_path / "tiny-xl", xl=True)
    events = []
    unsubscribe = engine.subscribe(events.append)
    try:
        result = engine.run(_job(xl, negative_prompt="blue", width=32, height=48), timeout=60)
    finally:
        unsubscribe()
    loaded = engine.models.peek(engine.models.keys()[-1])
    assert type(loaded.pipe).__name__ == "StableDiffusionXLPipeline" and loaded.is_xl
    assert result.images[0].size == (32, 48)
    assert any(isinstance(e, Progress) and e.preview is not None for e in events)
    assert parse_parameters(read_png_text(result.paths[0])["parameters"])["Model"] == "tiny-xl"


def test_full_disk_saves_nothing_and_keeps_earlier_outputs(
    engine, tiny_pipeline, tmp_path, monkeypatch
):
    import errno

    from studio.core import gallery as gallery_module

    earlier = engine.run(_job(tiny_pipeline), timeout=60).paths[0]
    earlier_bytes = earlier.read_bytes()

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gallery_module.os, "replace", full)
    with pytest.raises(UserError, match="is full"):
        engine.run(_job(tiny_pipeline, seed=99), timeout=60)
    monkeypatch.undo()
    outputs = tmp_path / "outputs"
    assert [p.name for p in outputs.iterdir() if not p.name.startswith(".latent-studio-index")] == [
        earlier.name
    ]
    assert earlier.read_bytes() == earlier_bytes
    assert Gallery(outputs).count() == 1
    assert engine.run(_job(tiny_pipeline, seed=99), timeout=60).paths


def test_a_configured_tiny_decoder_makes_the_previews(engine, tiny_pipeline, tmp_path):
    from diffusers import AutoencoderTiny

    from studio.core.previews import LinearPreview, TinyDecoderPreview

    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
        upsampling_scaling_factor=2,
    )
    tiny.save_pretrained(tmp_path / "taesd")
    engine.options["preview_decoder"] = str(tmp_path / "taesd")
    events = []
    unsubscribe = engine.subscribe(events.append)
    try:
        engine.run(_job(tiny_pipeline, width=48), timeout=60)
    finally:
        unsubscribe()
    loaded = engine.models.peek(engine.models.keys()[-1])
    assert isinstance(loaded.previewer, TinyDecoderPreview)
    previews = [e.preview for e in events if isinstance(e, Progress) and e.preview is not None]
    assert previews and all(p.shape == (32, 48, 3) for p in previews)
    engine.options["preview_decoder"] = str(tmp_path / "missing")
    engine.run(_job(tiny_pipeline), timeout=60)
    assert isinstance(loaded.previewer, LinearPreview)


def _bundled(name):
    from studio.paths import models_dir

    return models_dir() / name


@pytest.mark.skipif(
    not (_bundled("shapes-diffusion") / "model_index.json").is_file(),
    reason="the bundled shapes-diffusion model is not in models/",
)
def test_the_bundled_model_generates_by_name(engine):
    job = TextToImage(prompt="a red circle", steps=2, seed=1, width=64, height=64)
    result = engine.run(job, timeout=120)
    assert result.images[0].size == (64, 64)
    params = parse_parameters(read_png_text(result.paths[0])["parameters"])
    assert params["Model"] == "shapes-diffusion"


@pytest.mark.parametrize("name", ["EulerDiscreteScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"])
def test_previews_see_the_clean_estimate_not_the_noisy_latents(name):
    import diffusers
    import torch

    from studio.core.diffusion import capture_denoised

    scheduler = getattr(diffusers, name)(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    into: dict = {}
    capture_denoised(scheduler, into)
    clean = torch.zeros(1, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = scheduler.timesteps[0]
    sample = scheduler.add_noise(clean, noise, t.reshape(1))
    if hasattr(scheduler, "scale_model_input"):
        scheduler.scale_model_input(sample, t)
    # An oracle model predicts the exact noise, so the clean estimate is the clean image.
    scheduler.step(noise, t, sample)
    assert into["x0"] is not None
    assert torch.allclose(into["x0"], clean, atol=1e-3)
    assert sample.abs().mean() > 0.5
