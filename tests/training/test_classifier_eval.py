"""The attribute classifier and the evaluation code, on a handful of samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studio.paths import models_dir
from studio.training import classifier, evaluate, world

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def quick_classifier() -> classifier.Classifier:
    """An (almost) untrained classifier: enough to exercise the code paths."""
    torch.set_num_threads(1)
    return classifier.train_classifier(steps=2, batch=8, heldout=16, verbose=False)


def test_classifier_predicts_every_head(quick_classifier: classifier.Classifier) -> None:
    images, _, _ = world.render_batch(range(6))
    pred = quick_classifier.predict(images)
    assert set(pred) == set(classifier.HEADS)
    for head, values in classifier.HEADS.items():
        assert pred[head]["probs"].shape == (6, len(values))
        assert set(pred[head]["label"]) <= set(values)
        assert np.allclose(pred[head]["probs"].sum(axis=1), 1.0, atol=1e-5)
    assert set(quick_classifier.heldout_accuracy) == set(classifier.HEADS)


def test_background_and_crops_from_renders() -> None:
    images, _, scenes = world.render_batch(range(50))
    bg = classifier.border_background(images)
    assert [world.COLOUR_NAMES[b] for b in bg] == [s.background for s in scenes]
    crops = classifier.object_crops(classifier.foreground(images, bg))
    assert tuple(crops.shape) == (50, 1, classifier.CROP, classifier.CROP)
    # the crop is centred on the object: its centre is foreground, its corners are not
    c = classifier.CROP // 2
    assert (crops[:, 0, c, c] > 0.5).float().mean() > 0.95
    assert (crops[:, 0, 0, 0] < 0).all()


def test_tier2_segmentation_finds_both_objects(quick_classifier: classifier.Classifier) -> None:
    images, _, scenes = world.render_batch(range(40), tier=2)
    backgrounds, readings = classifier.read_objects(quick_classifier, images)
    for s, bg, objs in zip(scenes, backgrounds, readings, strict=True):
        assert bg == s.background
        assert {o.colour for o in objs} == {o.colour for o in s.objects}
        for o in objs:
            truth = next(t for t in s.objects if t.colour == o.colour)
            assert abs(o.cx - truth.cx) < 2.5 and abs(o.cy - truth.cy) < 2.5


def test_tier2_scoring_of_ground_truth() -> None:
    scene = world.render_scene(3, tier=2)
    objs = [classifier.ObjectReading(o.colour, o.shape, 1.0, o.cx, o.cy, 100)
            for o in scene.objects]
    req = world.parse_caption(world.canonical_caption(
        objects=[{"shape": o.shape, "colour": o.colour} for o in scene.objects],
        relation=scene.relation))
    assert evaluate.score_tier2(objs, req) == {"two_object": True, "binding": True,
                                               "relation": True}
    swapped = [classifier.ObjectReading(a.colour, b.shape, 1.0, a.cx, a.cy, 100)
               for a, b in zip(objs, objs[::-1], strict=True)]
    if scene.objects[0].shape != scene.objects[1].shape:
        assert evaluate.score_tier2(swapped, req)["binding"] is False
    moved = [classifier.ObjectReading(o.colour, o.shape, 1.0, p.cx, p.cy, 100)
             for o, p in zip(objs, objs[::-1], strict=True)]
    assert evaluate.score_tier2(moved, req)["relation"] is False


def test_prompt_sets_cover_every_value() -> None:
    prompts = evaluate.diffusion_prompts(40)
    assert len(prompts) == 240
    for task, text, req in prompts:
        parsed = world.parse_caption(text)
        assert parsed is not None, text
        if task != "tier2":
            assert {k: v for k, v in parsed.items() if v and k != "tier"} == req
    colours = {r["colour"] for t, _, r in prompts if t == "colour"}
    positions = {r["position"] for t, _, r in prompts if t == "position"}
    assert colours == set(world.COLOURS) and positions == set(world.POSITIONS)


def test_evaluation_runs_on_tiny_models(tmp_path: Path,
                                        quick_classifier: classifier.Classifier) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from studio.training.__main__ import main
    from studio.training.gan_model import DEFAULT_CONFIG, build_generator

    pipe_dir = tmp_path / "shapes-diffusion"
    assert main(["shapes-diffusion", "--preset", "tiny", "--steps", "1", "--batch-size", "2",
                 "--cache-size", "4", "--out", str(pipe_dir), "--device", "cpu"]) == 0
    d = evaluate.evaluate_diffusion(pipe_dir, quick_classifier, n_per_task=1, steps=1,
                                    guidances=(1.0, 7.5), negative_n=2, batch=4,
                                    ceiling_n=8)
    assert set(d["by_guidance"]) == {"1.0", "7.5"}
    assert set(d["by_guidance"]["7.5"]) == set(
        evaluate.TIER1_TASKS + evaluate.TIER2_TASKS + ("clean_scene",))
    assert 0.0 <= d["by_guidance"]["7.5"]["clean_scene"] <= 1.0
    assert "one clean scene" in evaluate.markdown({"shapes-diffusion": d})
    assert "| circle |" in evaluate.markdown({"shapes-diffusion": d})
    assert set(d["attribute_by_guidance"]["7.5"]) == {"colour", "background", "size", "position"}
    assert "| background |" in evaluate.markdown({"shapes-diffusion": d}).split("alone")[1]
    assert 0.0 <= d["negative_avoidance"] <= 1.0 and d["seconds_per_image"]["7.5"] > 0
    for key in ("negative_avoidance", "avoidance_without_negative"):
        misses = d["negative_misses"][key]
        assert set(misses) == {"red", "blue"}
        assert sum(misses.values()) == round((1 - d[key]) * 2)
    assert set(d["autoencoder_ceiling"]) == {"shape", "colour", "size", "position", "background"}
    assert all(0.0 <= v <= 1.0 for v in d["autoencoder_ceiling"].values())
    assert d["scheduler"] == "DDIMScheduler" and "1 DDIM steps" in evaluate.markdown(
        {"shapes-diffusion": d})
    # the studio's own sampler keys swap the folder's scheduler, as the Image pane does
    e = evaluate.evaluate_diffusion(pipe_dir, quick_classifier, n_per_task=1, steps=2,
                                    guidances=(3.0,), negative_n=0, batch=4, ceiling_n=0,
                                    seed=1000, scheduler="euler")
    assert e["scheduler"] == "EulerDiscreteScheduler" and e["seed"] == 1000
    assert set(e["by_guidance"]) == {"3.0"} and "negative_avoidance" not in e
    assert "2 Euler steps" in evaluate.markdown({"shapes-diffusion": e})

    vae_dir = tmp_path / "shapes-vae"
    AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4,
                  latent_channels=4).save_pretrained(str(vae_dir))
    v = evaluate.evaluate_vae(vae_dir, quick_classifier, n=8, pairs=4)
    assert v["psnr_db"] > 0 and 0.0 <= v["midpoint_valid"] <= 1.0

    gan_dir = tmp_path / "shapes-gan"
    gan_dir.mkdir()
    config = dict(DEFAULT_CONFIG, z_dim=8, base_channels=4)
    gen = build_generator(config)
    save_file({k: v.contiguous() for k, v in gen.state_dict().items()},
              str(gan_dir / "model.safetensors"))
    (gan_dir / "config.json").write_text(json.dumps(config))
    g = evaluate.evaluate_gan(gan_dir, quick_classifier, n=16)
    assert g["classes"] == 32 and 0 <= g["coverage"] <= 32

    table = evaluate.markdown({"shapes-diffusion": d, "shapes-vae": v, "shapes-gan": g,
                               "classifier": quick_classifier.heldout_accuracy})
    assert "| single object |" in table and "PSNR" in table and "coverage" in table


def test_shape_accuracy_is_counted_per_asked_shape() -> None:
    prompts = [("single_object", "a circle", {"shape": "circle"}),
               ("colour", "a red circle", {"shape": "circle", "colour": "red"}),
               ("size", "a small star", {"shape": "star", "size": "small"}),
               ("position", "a star on the left", {"shape": "star", "position": "left"}),
               ("tier2", "a red circle above a blue star", {"objects": []})]
    read = np.array(["circle", "square", "star", "star", "circle"])
    by_shape = evaluate.shape_accuracy_by_shape({"shape": {"label": read}}, prompts)
    # the tier-2 image is not counted, and shapes no prompt asked for are left out
    assert by_shape == {"circle": 0.5, "star": 1.0}


def test_attribute_alone_ignores_the_shape() -> None:
    prompts = [("single_object", "a circle", {"shape": "circle"}),
               ("colour", "a red circle", {"shape": "circle", "colour": "red"}),
               ("colour", "a blue star", {"shape": "star", "colour": "blue"}),
               ("background", "a star on a red background",
                {"shape": "star", "background": "red"}),
               ("tier2", "a red circle above a blue star", {"objects": []})]
    pred = {"shape": {"label": np.array(["square", "square", "star", "circle", "circle"])},
            "colour": {"label": np.array(["red", "red", "green", "red", "red"])},
            "background": {"label": np.array(["white", "white", "white", "red", "red"])}}
    alone = evaluate.attribute_accuracy_alone(pred, prompts)
    # the red circle read as a red square counts; the blue star read as green does not
    assert alone == {"colour": 0.5, "background": 1.0}
    assert not evaluate.score_tier1(pred, 1, prompts[1][2])


def test_cli_rejects_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["nope"]) == 2
    assert "unknown model" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--scheduler", "heun"], "unknown scheduler 'heun'"),
    (["--guidance", "7.5", "0"], "--guidance"),
    (["--guidance-rescale", "1.5"], "--guidance-rescale"),
])
def test_cli_rejects_bad_diffusion_options(args: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main(["shapes-diffusion", *args]) == 2
    assert message in capsys.readouterr().err


def test_generate_hands_the_guidance_rescale_to_the_pipeline() -> None:
    from types import SimpleNamespace

    calls: list[dict] = []

    def pipe(prompts: list[str], **kwargs: object) -> SimpleNamespace:
        calls.append(kwargs)
        return SimpleNamespace(images=np.zeros((len(prompts), 64, 64, 3), np.float32))

    images, _ = evaluate.generate(pipe, ["a circle"] * 3, 7.5, 2, seed=0, batch=2,
                                  guidance_rescale=0.7)
    assert images.shape == (3, 64, 64, 3)
    assert [c["guidance_rescale"] for c in calls] == [0.7, 0.7]
    assert all(c["guidance_scale"] == 7.5 for c in calls)


@pytest.fixture(scope="module")
def cached_classifier() -> classifier.Classifier:
    weights = classifier.cache_dir() / (
        f"attribute-classifier-v{classifier.CLASSIFIER_VERSION}.safetensors")
    if not weights.is_file():
        pytest.skip("no cached classifier; `python -m studio.training.evaluate` trains one")
    return classifier.load_or_train(verbose=False)


def test_cached_classifier_is_accurate_on_held_out_renders(
        cached_classifier: classifier.Classifier) -> None:
    clf = cached_classifier
    images, _, scenes = world.render_batch(range(classifier.HELDOUT_SEED_BASE + 10_000,
                                                 classifier.HELDOUT_SEED_BASE + 10_200))
    pred = clf.predict(images)
    for head in ("shape", "colour", "background", "position"):
        truth = [getattr(s.objects[0], head) if head != "background" else s.background
                 for s in scenes]
        assert np.mean(pred[head]["label"] == np.array(truth, dtype=object)) >= 0.95, head


def test_valid_single_accepts_real_scenes_and_rejects_their_blurred_copies(
        cached_classifier: classifier.Classifier) -> None:
    from PIL import Image, ImageFilter

    clf = cached_classifier
    images, _, _ = world.render_batch(range(classifier.HELDOUT_SEED_BASE + 20_000,
                                            classifier.HELDOUT_SEED_BASE + 20_100))
    ok, _ = evaluate.valid_single(clf, images)
    assert ok.mean() >= 0.95
    # Blurred scenes keep their colours and layout, and over half of them still pass the
    # classifier's own checks; render-and-compare is what turns them down.
    blurred = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(4)))
                        for im in images])
    ok, _ = evaluate.valid_single(clf, blurred)
    assert ok.mean() <= 0.1


def test_bundled_prompt_writer_scores_if_present() -> None:
    path = models_dir() / "prompt-writer"
    if not (path / "config.json").is_file():
        pytest.skip("models/prompt-writer is not there yet")
    res = evaluate.evaluate_prompt_writer(path, n=4)
    assert res["samples"] == 4 and 0.0 <= res["validity"] <= 1.0


def test_autoencoder_ceiling_of_a_lossless_autoencoder_is_the_classifier_accuracy(quick_classifier):
    from types import SimpleNamespace

    lossless = SimpleNamespace(
        device=torch.device("cpu"), dtype=torch.float32,
        encode=lambda x: SimpleNamespace(latent_dist=SimpleNamespace(mean=x)),
        decode=lambda z: SimpleNamespace(sample=z))
    ceiling = evaluate.autoencoder_ceiling(lossless, quick_classifier, n=12)
    images, _, scenes = world.render_batch(
        range(evaluate.EVAL_SEED_BASE, evaluate.EVAL_SEED_BASE + 12), tier=1)
    pred = quick_classifier.predict(images)
    shapes = [s.objects[0].shape for s in scenes]
    assert ceiling["shape"] == float(np.mean(pred["shape"]["label"] == np.array(shapes)))
    backgrounds = [s.background for s in scenes]
    assert ceiling["background"] == float(np.mean(pred["background"]["label"] == np.array(backgrounds)))


def test_negative_prompt_row_does_not_round_a_miss_up_to_the_goal() -> None:
    d = {"prompts": 1, "steps": 1, "by_guidance": {"7.5": {"single_object": 1.0}},
         "seconds_per_image": {"7.5": 0.1}, "negative_avoidance": 0.946,
         "avoidance_without_negative": 0.68,
         "negative_prompt": {"prompt": "a circle", "negative": "red, blue", "guidance": 7.5}}
    table = evaluate.markdown({"shapes-diffusion": d})
    assert "0.946 (without the negative prompt: 0.680)" in table


def test_denoise_probe_runs_the_last_steps_on_real_latents(
        tmp_path: Path, quick_classifier: classifier.Classifier,
        capsys: pytest.CaptureFixture[str]) -> None:
    from diffusers import StableDiffusionPipeline

    from studio.training import denoise_probe
    from studio.training.__main__ import main

    pipe_dir = tmp_path / "shapes-diffusion"
    assert main(["shapes-diffusion", "--preset", "tiny", "--steps", "1", "--batch-size", "2",
                 "--cache-size", "4", "--out", str(pipe_dir), "--device", "cpu"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(str(pipe_dir))
    res = denoise_probe.probe(pipe, quick_classifier, n=6, last_steps=(0, 2, 4, 9), steps=4)
    # K is clipped to the schedule's length: 9 runs all four steps, from pure noise
    assert list(res["by_last_steps"]) == ["0", "2", "4"]
    assert res["by_last_steps"]["0"]["start_timestep"] == 0
    assert res["by_last_steps"]["2"]["start_timestep"] == res["timesteps"][2]
    for row in res["by_last_steps"].values():
        assert 0.0 <= row["shape"] <= 1.0 and set(row["by_shape"]) <= set(world.SHAPES)
    # K = 0 is the autoencoder alone: the classifier on the reconstructions of the same scenes
    images, _, scenes = world.render_batch(
        range(denoise_probe.PROBE_SEED_BASE, denoise_probe.PROBE_SEED_BASE + 6), tier=1,
        caption_style="canonical")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        rec = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
    pixels = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    read = quick_classifier.predict(pixels)["shape"]["label"]
    expected = np.mean(read == np.array([s.objects[0].shape for s in scenes]))
    assert res["by_last_steps"]["0"]["shape"] == pytest.approx(expected)

    assert denoise_probe.main([str(tmp_path / "nothing")]) == 2
    assert "no pipeline" in capsys.readouterr().err


def test_denoising_loss_is_the_held_out_noise_error_per_timestep(tiny_pipeline: Path) -> None:
    from diffusers import StableDiffusionPipeline

    from studio.training import denoise_probe

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_pipeline))
    res = denoise_probe.denoising_loss(pipe, n=6, timesteps=(50, 700), batch=6)
    assert set(res["by_timestep"]) == {"50", "700"}
    # each scene's noise is its own, so the batching does not change a figure
    again = denoise_probe.denoising_loss(pipe, n=6, timesteps=(50, 700), batch=4)
    for t, row in res["by_timestep"].items():
        for k in ("all", "object"):
            assert row[k] == pytest.approx(again["by_timestep"][t][k], rel=1e-5)

    class Oracle(torch.nn.Module):
        """Predicts zero noise: its error is the noise's own mean square, about 1."""

        def __init__(self, unet: torch.nn.Module) -> None:
            super().__init__()
            self.config, self.dtype, self.device = unet.config, unet.dtype, unet.device

        def forward(self, sample: torch.Tensor, *args: object, **kwargs: object) -> object:
            return type("Out", (), {"sample": torch.zeros_like(sample)})()

    pipe.unet = Oracle(pipe.unet)
    zero = denoise_probe.denoising_loss(pipe, n=6, timesteps=(50, 700), batch=6)
    for row in zero["by_timestep"].values():
        assert 0.8 < row["all"] < 1.2 and 0.5 < row["object"] < 1.5
    assert zero["by_timestep"]["50"] != res["by_timestep"]["50"]


def test_negative_prompt_row_names_the_colours_that_got_through() -> None:
    d = {"prompts": 1, "steps": 1, "by_guidance": {"7.5": {"single_object": 1.0}},
         "seconds_per_image": {"7.5": 0.1}, "negative_avoidance": 0.92,
         "avoidance_without_negative": 0.7,
         "negative_misses": {"negative_avoidance": {"red": 3, "blue": 21},
                             "avoidance_without_negative": {"red": 40, "blue": 50}},
         "negative_prompt": {"prompt": "a circle", "negative": "red, blue", "guidance": 7.5}}
    table = evaluate.markdown({"shapes-diffusion": d})
    assert ("0.920, misses: red 3, blue 21 (without the negative prompt: 0.700, "
            "misses: red 40, blue 50)") in table
