import json

import numpy as np
import pytest
import torch
from PIL import Image

from studio.core.engine import Engine
from studio.core.errors import UserError
from studio.core.jobs import (
    VaeDecodePoint,
    VaeInterpolate,
    VaeLatentMap,
    VaePriorGrid,
    VaeReconstruct,
    VaeScrub,
)
from studio.core.vae import load_image, load_vae, psnr

TINY_VAE2D = {"architecture": "conv-vae", "image_size": 16, "latent_dim": 2, "channels": [8, 8], "hidden": 16}


def make_vae2d(folder, **overrides):
    from safetensors.torch import save_file

    from studio.training.vae2d_model import build_vae2d

    config = {**TINY_VAE2D, **overrides}
    torch.manual_seed(0)
    module = build_vae2d(config)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "model.safetensors"))
    return folder


def make_autoencoder_kl(folder):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=16,
    )
    vae.save_pretrained(folder, safe_serialization=True)
    return folder


def make_images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {}
    for name in ("a", "b", "c"):
        arr = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        paths[name] = folder / f"{name}.png"
        Image.fromarray(arr).save(paths[name])
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(folder / "clear.png")
    Image.new("L", (16, 16), 128).save(folder / "grey.png")
    Image.new("RGB", (40, 20), (0, 0, 255)).save(folder / "wide.png")
    (folder / "notes.png").write_text("not an image")
    return paths


@pytest.fixture(scope="module")
def engine():
    torch.set_num_threads(1)
    e = Engine(device="cpu")
    e.start()
    assert e.wait_ready(30)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae")
    return {
        "kl": str(make_autoencoder_kl(root / "tiny-kl")),
        "2d": str(make_vae2d(root / "tiny-2d")),
        "images": make_images(root / "images"),
        "root": root,
    }


def test_image_normalisation_notices(models):
    d = models["root"] / "images"
    clear, notes = load_image(d / "clear.png", 16)
    assert clear.shape == (16, 16, 3) and (clear == 255).all() and "transparency" in notes[0]
    grey, notes = load_image(d / "grey.png", 16)
    assert grey.shape == (16, 16, 3) and "greyscale" in notes[0]
    wide, notes = load_image(d / "wide.png", 16)
    assert wide.shape == (16, 16, 3) and "40×20" in notes[0] and "centre-cropped" in notes[0]
    plain, notes = load_image(models["images"]["a"], 16)
    assert notes == ()
    with pytest.raises(UserError, match="not an image"):
        load_image(d / "notes.png", 16)
    with pytest.raises(UserError, match="does not exist"):
        load_image(d / "missing.png", 16)


@pytest.mark.parametrize("kind", ["kl", "2d"])
def test_interpolation_strip_endpoints_are_the_reconstructions(engine, models, kind):
    a, b = str(models["images"]["a"]), str(models["images"]["b"])
    for mode in ("lerp", "slerp"):
        strip = engine.run(VaeInterpolate(model=models[kind], a=a, b=b, steps=6, mode=mode))
        assert len(strip) == 6 and strip.frames[0].shape == (16, 16, 3)
        assert [p["t"] for p in strip.params] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    recon = engine.run(VaeReconstruct(model=models[kind], image=a))
    assert np.array_equal(strip.frames[0], recon.reconstruction)
    assert recon.psnr == pytest.approx(psnr(recon.original, recon.reconstruction))
    scrub = engine.run(VaeScrub(model=models[kind], a=a, b=b, t=1.0))
    assert np.array_equal(scrub.image, strip.frames[-1])


def test_encode_is_the_posterior_mean_and_deterministic(models):
    vae = load_vae(models["kl"])
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert vae.latent_shape == (4, 8, 8)
    assert torch.equal(vae.encode(x), vae.encode(x))
    assert torch.allclose(vae.encode(x), vae.module.encode(x).latent_dist.mean)


def test_pipeline_folder_vae_subfolder(models, tmp_path):
    import shutil

    pipe = tmp_path / "pipe"
    shutil.copytree(models["kl"], pipe / "vae")
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}))
    vae = load_vae(str(pipe))
    assert vae.kind == "autoencoder-kl" and vae.name == "pipe (VAE)"


def test_prior_grid_is_deterministic(engine, models):
    one = engine.run(VaePriorGrid(model=models["2d"], seed=3, count=4))
    two = engine.run(VaePriorGrid(model=models["2d"], seed=3, count=4))
    assert len(one) == 4
    assert all(np.array_equal(x, y) for x, y in zip(one.frames, two.frames, strict=True))
    strip = engine.run(VaeInterpolate(model=models["2d"], a="prior:3", b="prior:4", steps=3))
    assert np.array_equal(strip.frames[0], one.frames[0])


def test_latent_map_2d_marks_encodings_and_decodes_points(engine, models):
    imgs = tuple(str(models["images"][k]) for k in ("a", "b"))
    m = engine.run(VaeLatentMap(model=models["2d"], images=imgs, grid=4, extent=2.0))
    assert m.two_d and m.image.shape == (64, 64, 3) and len(m.markers) == 2
    vae = load_vae(models["2d"])
    z = vae.encode(torch.from_numpy(load_image(imgs[0], 16)[0]).permute(2, 0, 1)[None].float() / 127.5 - 1)[0]
    assert m.markers[0][:2] == pytest.approx(tuple(z.tolist()), abs=1e-5)
    # Tile (row 0, col 0) is the point (-2, 2): decoding it by click gives the same pixels.
    point = engine.run(VaeDecodePoint(model=models["2d"], x=-2.0, y=2.0))
    assert np.array_equal(point.image, m.image[:16, :16])


def test_latent_map_plane_through_three_encodings(engine, models):
    imgs = tuple(str(models["images"][k]) for k in ("a", "b", "c"))
    m = engine.run(VaeLatentMap(model=models["kl"], images=imgs, grid=5))
    assert not m.two_d and m.image.shape == (80, 80, 3) and len(m.markers) == 3
    x, y, _ = m.markers[0]
    at_a = engine.run(VaeDecodePoint(model=models["kl"], images=imgs, x=x, y=y))
    recon = engine.run(VaeReconstruct(model=models["kl"], image=imgs[0]))
    assert np.abs(at_a.image.astype(int) - recon.reconstruction.astype(int)).max() <= 1
    with pytest.raises(UserError, match="three images"):
        engine.run(VaeLatentMap(model=models["kl"], images=imgs[:2]))


def test_bad_vae_inputs_are_clear_and_the_engine_lives_on(engine, models, tmp_path):
    d = models["root"] / "images"
    with pytest.raises(UserError, match="not an image"):
        engine.run(VaeInterpolate(model=models["2d"], a=str(d / "notes.png"), b=str(d / "a.png")))
    strip = engine.run(VaeInterpolate(model=models["2d"], a=str(d / "clear.png"), b=str(d / "wide.png"), steps=3))
    assert len(strip.notices) == 2
    wrong = make_vae2d(tmp_path / "wrong")
    (wrong / "config.json").write_text(json.dumps({**TINY_VAE2D, "hidden": 32}))
    with pytest.raises(UserError, match="do not match"):
        engine.run(VaePriorGrid(model=str(wrong)))
    with pytest.raises(UserError, match="not a VAE"):
        engine.run(VaePriorGrid(model=str(tmp_path)))
    import shutil

    kl = tmp_path / "wrong-kl"
    shutil.copytree(models["kl"], kl)
    config = json.loads((kl / "config.json").read_text())
    (kl / "config.json").write_text(json.dumps({**config, "latent_channels": 8}))
    with pytest.raises(UserError, match="Cannot load the VAE"):
        engine.run(VaePriorGrid(model=str(kl)))
    assert len(engine.run(VaePriorGrid(model=models["2d"], count=2))) == 2


def test_cli_interpolate_strip_and_gif(models, tmp_path, capsys):
    from studio.cli import main

    a, b = str(models["images"]["a"]), str(models["images"]["b"])
    assert main(["interpolate", "--vae", models["2d"], a, b, "--steps", "16", "--mode", "slerp", "-o", str(tmp_path / "strip.png")]) == 0
    assert Image.open(tmp_path / "strip.png").size == (16 * 16, 16)
    assert main(["interpolate", "--vae", models["kl"], a, "prior:3", "--steps", "5", "--scale", "2", "-o", str(tmp_path / "walk.webp")]) == 0
    with Image.open(tmp_path / "walk.webp") as im:
        assert im.size == (32, 32) and im.n_frames <= 5
    assert "5 frames of 32×32" in capsys.readouterr().out
    d = models["root"] / "images"
    assert main(["interpolate", "--vae", models["2d"], str(d / "notes.png"), b, "-o", str(tmp_path / "x.png")]) == 1
    assert "not an image" in capsys.readouterr().err
    assert main(["interpolate", "--vae", models["2d"], a, b, "-o", str(tmp_path / "x.bmp")]) == 1
    assert ".gif" in capsys.readouterr().err


def test_2d_map_defaults_to_the_models_latent_range(engine, tmp_path):
    folder = make_vae2d(tmp_path / "ranged", latent_range=[[-1.0, 1.0], [0.0, 2.0]])
    m = engine.run(VaeLatentMap(model=str(folder), grid=3))
    assert m.extent == pytest.approx((-1.2, 1.2, -0.2, 2.2))
    assert engine.run(VaeLatentMap(model=str(folder), grid=3, extent=4.0)).extent == (-4.0, 4.0, -4.0, 4.0)
