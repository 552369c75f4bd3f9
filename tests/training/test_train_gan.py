"""The DCGAN trainer runs a few tiny steps; the generator module round-trips through config."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from studio.training import z_scenes  # noqa: E402
from studio.training.__main__ import main  # noqa: E402
from studio.training.gan_model import build_discriminator, build_generator  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_gan_trains_and_reloads(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "gan"
    rc = main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4", "--out", str(out)])
    assert rc == 0
    assert not (out / "checkpoint").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "dcgan"
    gen = build_generator(config)
    gen.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    gen.eval()
    z = torch.randn(3, config["z_dim"])
    with torch.no_grad():
        flat = gen(z)
        as_map = gen(z[:, :, None, None])
    assert flat.shape == (3, 3, 64, 64)
    assert torch.equal(flat, as_map)
    assert float(flat.abs().max()) <= 1.0


def test_non_saturating_loss_with_batch_norm_discriminator_and_wider_generator(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "gan"
    rc = main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4", "--loss", "ns",
               "--disc-norm", "batch", "--base-channels", "6", "--out", str(out)])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["base_channels"] == 6
    log = json.loads((out / "training_log.json").read_text())
    assert (log["loss"], log["disc_norm"]) == ("ns", "batch")
    build_generator(config).load_state_dict(load_file(str(out / "model.safetensors")), strict=True)


def test_bf16_autocast_trains_float32_weights(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "gan"
    rc = main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4",
               "--precision", "bf16", "--out", str(out)])
    assert rc == 0
    assert json.loads((out / "training_log.json").read_text())["precision"] == "bf16"
    weights = load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_coord_channels_train_reload_and_refuse_a_generator_without_them(tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "gan"
    assert main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4", "--anchor", "1",
                 "--adversarial", "0", "--coord-channels", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["coord_channels"] is True
    gen = build_generator(config)
    gen.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    # every up-sampling layer reads two more input channels than the plain generator's
    plain = build_generator({**config, "coord_channels": False})
    widths = [m.in_channels for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    plain_widths = [m.in_channels for m in plain.modules()
                    if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths[0] == plain_widths[0]
    assert [w - p for w, p in zip(widths[1:], plain_widths[1:], strict=True)] == [2] * 4
    plain_out = tmp_path / "plain"
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4",
                 "--out", str(plain_out)]) == 0
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4", "--coord-channels",
                 "--init-from", str(plain_out), "--out", str(tmp_path / "more")]) == 2
    assert "--coord-channels" in capsys.readouterr().err


def test_coord_concat_appends_the_pixel_grid():
    from studio.training.gan_model import CoordConcat

    x = torch.zeros(2, 3, 4, 5)
    y = CoordConcat()(x)
    assert y.shape == (2, 5, 4, 5)
    assert torch.equal(y[:, :3], x)
    # channel 3 runs left to right, channel 4 top to bottom, each from -1 to 1
    assert torch.allclose(y[0, 3, 0], torch.linspace(-1, 1, 5))
    assert torch.allclose(y[1, 4, :, 2], torch.linspace(-1, 1, 4))


@pytest.mark.parametrize("norm", ["spectral", "batch"])
def test_generator_and_discriminator_sizes(norm):
    gen = build_generator({"z_dim": 16, "base_channels": 4, "image_size": 32})
    disc = build_discriminator({"base_channels": 4, "image_size": 32, "disc_norm": norm})
    x = gen(torch.randn(2, 16))
    assert x.shape == (2, 3, 32, 32)
    assert disc(x).shape == (2,)
    has_bn = any(isinstance(m, torch.nn.BatchNorm2d) for m in disc.modules())
    assert has_bn == (norm == "batch")


def test_unknown_discriminator_norm_is_rejected():
    with pytest.raises(ValueError, match="norm"):
        build_discriminator({"disc_norm": "layer"})


@pytest.mark.parametrize("bad", [{"architecture": "stylegan"}, {"image_size": 48}])
def test_build_generator_rejects_bad_configs(bad):
    with pytest.raises(ValueError):
        build_generator(bad)


def test_bad_arguments_exit_non_zero(tmp_path, capsys):
    assert main(["shapes-gan", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--base-channels", "0",
                 "--out", str(tmp_path)]) == 2
    assert "--base-channels" in capsys.readouterr().err


def test_init_from_continues_a_finished_generator(tmp_path):
    from safetensors.torch import load_file

    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4",
                 "--base-channels", "6", "--out", str(first)]) == 0
    assert main(["shapes-gan", "--steps", "1", "--batch-size", "4", "--lr-g", "0",
                 "--init-from", str(first), "--out", str(second)]) == 0
    config = json.loads((second / "config.json").read_text())
    assert config == json.loads((first / "config.json").read_text())
    log = json.loads((second / "training_log.json").read_text())
    assert log["init_from"] == str(first) and log["init_steps"] == 2
    before, after = (load_file(str(d / "model.safetensors")) for d in (first, second))
    # With the generator's learning rate at zero, its weights come through unchanged
    # (batch-norm statistics are re-estimated, so only weights are compared).
    for key, value in before.items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(value, after[key]), key


def test_init_from_bad_folders_name_the_file(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4",
                 "--out", str(first)]) == 0
    out = str(tmp_path / "out")
    assert main(["shapes-gan", "--steps", "1", "--init-from", str(first),
                 "--base-channels", "64", "--out", out]) == 2
    assert "--base-channels" in capsys.readouterr().err
    (first / "model.safetensors").write_bytes(b"not safetensors")
    assert main(["shapes-gan", "--steps", "1", "--init-from", str(first), "--out", out]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert main(["shapes-gan", "--steps", "1", "--init-from", str(tmp_path / "none"),
                 "--out", out]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_discriminator_width_is_its_own(tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4",
                 "--base-channels", "6", "--out", str(out)]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["disc_channels"] == 4  # the tiny recipe's width, not the generator's
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4",
                 "--disc-channels", "5", "--out", str(out)]) == 0
    assert json.loads((out / "training_log.json").read_text())["disc_channels"] == 5
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--disc-channels", "0",
                 "--out", str(out)]) == 2
    assert "--disc-channels" in capsys.readouterr().err


def _tiny_autoencoder(folder, sample_size=64):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(4, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=4,
                  layers_per_block=1, latent_channels=4,
                  sample_size=sample_size).save_pretrained(str(folder))
    return folder


def test_feature_discriminator_trains_only_its_heads():
    from diffusers import AutoencoderKL

    from studio.training.projected_disc import FeatureDiscriminator

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(4, 8, 8), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=4,
                        layers_per_block=1, latent_channels=4)
    frozen = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    reference = torch.rand(8, 3, 64, 64) * 2 - 1
    disc = FeatureDiscriminator(vae.encoder, 64, width=4, reference=reference)
    # Taps: the 64x64 pixels, then 32x32, 16x16 and twice 16x16 (the last down block
    # and the middle one):
    # one 4x4 map of patch logits each.
    assert len(disc.heads) == 5
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    logits = disc(x)
    assert logits.shape == (2 * 5 * 16,)
    trainable = [p for p in disc.parameters() if p.requires_grad]
    assert trainable and all(any(p is q for q in disc.heads.parameters()) for p in trainable)
    opt = torch.optim.Adam(trainable, lr=1e-2)
    logits.mean().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0  # the generator gets a gradient
    opt.step()
    disc.train()
    assert not disc.encoder.training
    for key, value in disc.encoder.state_dict().items():
        assert torch.equal(value, frozen[key]), key


def test_disc_features_runs_and_rejects_a_wrong_folder(tmp_path, capsys):
    pytest.importorskip("diffusers")
    vae_dir = _tiny_autoencoder(tmp_path / "vae")
    out = tmp_path / "gan"
    assert main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4",
                 "--disc-features", str(vae_dir), "--out", str(out)]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["disc_features"] == str(vae_dir)
    assert log["discriminator_parameters"] < sum(
        p.numel() for p in build_discriminator({"base_channels": 32}).parameters())
    small = _tiny_autoencoder(tmp_path / "small", sample_size=32)
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--disc-features", str(small),
                 "--out", str(out)]) == 2
    assert "64x64" in capsys.readouterr().err
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--disc-features",
                 str(tmp_path / "none"), "--out", str(out)]) == 2
    assert "--disc-features" in capsys.readouterr().err


def test_anchored_run_logs_its_l1_term_and_rejects_bad_settings(tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4", "--anchor", "100",
                 "--anchor-angles", "1", "--anchor-outline", "8", "--out", str(out)]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["anchor"] == 100 and log["anchor_dims"] == z_scenes.ANCHOR_DIMS
    assert log["anchor_angles"] == 1 and log["anchor_outline"] == 8
    for option in ("--anchor", "--anchor-angles", "--anchor-outline"):
        assert main(["shapes-gan", "--tiny", "--steps", "1", "--anchor", "1", option, "-1",
                     "--out", str(tmp_path / "neg")]) == 2
        assert option in capsys.readouterr().err
    # Without the adversarial loss, the anchor is all there is to learn from.
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--adversarial", "0",
                 "--out", str(tmp_path / "nothing")]) == 2
    assert "--adversarial" in capsys.readouterr().err
    short = {"z_dim": 8, "base_channels": 4}
    (tmp_path / "short").mkdir()
    (tmp_path / "short" / "config.json").write_text(json.dumps(short))
    from safetensors.torch import save_file
    save_file(build_generator(short).state_dict(), str(tmp_path / "short" / "model.safetensors"))
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--anchor", "1",
                 "--init-from", str(tmp_path / "short"), "--out", str(tmp_path / "s")]) == 2
    assert f"at least {z_scenes.ANCHOR_DIMS} dimensions" in capsys.readouterr().err


def test_anchor_alone_trains_without_a_discriminator(tmp_path):
    out = tmp_path / "gan"
    assert main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4", "--anchor", "1",
                 "--adversarial", "0", "--out", str(out)]) == 0
    log = json.loads((out / "training_log.json").read_text())
    assert log["adversarial"] == 0 and log["steps"] == 2
    assert "disc_channels" not in log and "discriminator_parameters" not in log


def test_anchor_loss_weights_object_pixels_up():
    from studio.training import z_scenes
    from studio.training.train_gan import OBJECT_WEIGHT, anchor_loss
    from studio.training.train_vae import to_tensor

    z = torch.randn(4, 64)
    images = z_scenes.render(z.numpy())
    exact = to_tensor(images)
    assert float(anchor_loss(exact, z)) == 0.0
    # Background everywhere: only object pixels are wrong, and they count OBJECT_WEIGHT + 1 times.
    flat = to_tensor(np.broadcast_to(images[:, :1, :1], images.shape).copy())
    object_share = float((images != images[:, :1, :1]).any(-1).mean())
    plain = float((flat - exact).abs().mean())
    weighted = float(anchor_loss(flat, z))
    expected = plain * (1 + OBJECT_WEIGHT) / (1 + OBJECT_WEIGHT * object_share)
    assert weighted == pytest.approx(expected, rel=1e-4)
    assert weighted > plain


def test_anchor_outline_weights_the_pixels_near_the_outline_up():
    from studio.training import world, z_scenes
    from studio.training.train_gan import OBJECT_WEIGHT, anchor_loss, outline_band
    from studio.training.train_vae import to_tensor

    z = torch.randn(1, 64, generator=torch.Generator().manual_seed(3))
    z[0, z_scenes.SIZE] = 2.0  # a large object, with pixels far from its outline
    image = z_scenes.render(z.numpy())
    target = to_tensor(image)
    mask = torch.from_numpy((image != image[:, :1, :1]).any(-1)).float()[:, None]
    band = outline_band(mask)
    # Two pixels of the object's own colour (not anti-aliased): one near the outline, one far from it.
    (obj,), = z_scenes.scene_specs(z.numpy())[1]
    solid = torch.from_numpy((image[0] == world.COLOURS[obj.colour]).all(-1))
    edge = tuple(int(i) for i in (solid & (band[0, 0] > 0)).nonzero()[0])
    interior = tuple(int(i) for i in (solid & (band[0, 0] == 0)).nonzero()[0])
    wrong = {}
    for name, (y, x) in (("interior", interior), ("edge", edge)):
        fake = target.clone()
        fake[0, :, y, x] = target[0, :, 0, 0]  # the background's colour
        wrong[name] = fake
    for outline in (0.0, 8.0):
        assert float(anchor_loss(target, z, outline=outline)) == 0.0
    assert float(anchor_loss(wrong["edge"], z)) == pytest.approx(float(anchor_loss(wrong["interior"], z)))
    ratio = float(anchor_loss(wrong["edge"], z, outline=8.0)) / float(anchor_loss(wrong["interior"], z, outline=8.0))
    assert ratio == pytest.approx((1 + OBJECT_WEIGHT + 8.0) / (1 + OBJECT_WEIGHT), rel=1e-4)


def test_anchor_loss_pulls_the_generator_towards_the_named_scenes():
    from studio.training import z_scenes
    from studio.training.gan_model import DEFAULT_CONFIG
    from studio.training.train_vae import to_tensor

    torch.manual_seed(0)
    gen = build_generator(dict(DEFAULT_CONFIG, base_channels=4))
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    z = torch.randn(16, 64)
    target = to_tensor(z_scenes.render(z.numpy()))
    losses = []
    for _ in range(60):
        loss = (gen(z) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def _layered_config(**extra):
    from studio.training import world

    return dict({"z_dim": 32, "base_channels": 4, "layered": True, "mapping_width": 16,
                 "palette": [list(rgb) for rgb in world.COLOURS.values()]}, **extra)


def _true_layers(z):
    """The layers a perfect layered generator would give for z (z_scenes' targets)."""
    from studio.training.gan_model import Layers

    target = z_scenes.layer_targets(z.numpy())

    def sure(index, classes):
        return torch.nn.functional.one_hot(torch.from_numpy(index), classes) * 60.0 - 30.0

    template = torch.from_numpy(target.template)[:, None].clamp(1e-6, 1 - 1e-6)
    return Layers(sure(target.background, 8), sure(target.colour, 8), sure(target.shape, 4),
                  torch.from_numpy(target.pose), torch.logit(template))


def test_layered_generator_places_its_template_where_the_pose_says():
    gen = build_generator(_layered_config(z_dim=64)).eval()
    assert "palette" not in gen.state_dict()  # a fixed table from the config, not a weight
    z = torch.randn(5, 64)
    with torch.no_grad():
        layers = gen.layers(z)
        image = gen(z)
        assert torch.equal(image, gen(z[:, :, None, None]))
    assert layers.background.shape == layers.colour.shape == (5, 8)
    assert layers.shape.shape == (5, 4) and layers.pose.shape == (5, 4)
    assert layers.template.shape == (5, 1, 64, 64)
    # The template reads the shape head alone: two z with one shape draw one outline.
    with torch.no_grad():
        assert torch.equal(gen.template(layers.shape[:1].softmax(1)), layers.template[:1])
    assert image.shape == (5, 3, 64, 64) and float(image.abs().max()) <= 1.0
    # Perfect layers paint the rendered scene: the same pixels but for a rim of edge
    # pixels, where the transformer's 2x2 samples and the renderer's distance differ.
    z = torch.randn(40, 64)
    with torch.no_grad():
        painted = ((gen.compose(_true_layers(z)) + 1) * 127.5).round().permute(0, 2, 3, 1)
    rendered = torch.from_numpy(z_scenes.render(z.numpy())).float()
    diff = (painted - rendered).abs().amax(-1)
    assert float((diff <= 2).float().mean()) > 0.95
    assert float(diff.mean()) < 3.0


def test_choice_temperature_sharpens_the_painted_choices_but_not_the_scored_logits():
    from studio.training.gan_model import Layers

    warm = build_generator(_layered_config(z_dim=64)).eval()
    cold = build_generator(_layered_config(z_dim=64, choice_temperature=0.1)).eval()
    cold.load_state_dict(warm.state_dict())
    z = torch.randn(8, 64)
    # Logits two units apart: a blend at temperature 1, nearly one palette colour at 0.1.
    logits = torch.full((8, 8), -20.0)
    logits[:, 0], logits[:, 4] = 1.0, -1.0
    with torch.no_grad():
        layers, cold_layers = warm.layers(z), cold.layers(z)
        for name in ("background", "colour", "shape", "pose"):
            assert torch.equal(getattr(layers, name), getattr(cold_layers, name))
        assert torch.equal(cold_layers.template,
                           cold.template((layers.shape / 0.1).softmax(1)))
        # No object (the template transparent everywhere): each image is its background.
        empty = torch.full_like(layers.template, -30.0)
        flat = Layers(logits, logits.flip(1), layers.shape, layers.pose, empty)
        red = warm.palette[0]
        warm_bg = warm.compose(flat)[:, :, 0, 0]
        cold_bg = cold.compose(flat)[:, :, 0, 0]
    assert float((cold_bg - red).abs().max()) < 1e-3 < float((warm_bg - red).abs().max())
    # Every choice keeps its argmax, so no class is lost.
    assert torch.equal(warm_bg.argmax(1), cold_bg.argmax(1))


@pytest.mark.parametrize("bad", [{"palette": [[1, 2]]}, {"palette": [[1, 2, 3]]},
                                 {"palette": None}, {"channels": 1}, {"template_radius": 40},
                                 {"choice_temperature": 0}, {"choice_temperature": -1}])
def test_layered_generator_rejects_bad_configs(bad):
    config = _layered_config(**bad)
    if bad == {"palette": None}:
        del config["palette"]
    with pytest.raises(ValueError):
        build_generator(config)


def test_layered_anchor_loss_is_low_for_the_named_scene_and_trains_the_generator():
    from studio.training.gan_model import Layers
    from studio.training.train_gan import layered_anchor_loss

    gen = build_generator(_layered_config(z_dim=64))
    z = torch.randn(6, 64)
    right = _true_layers(z)
    wrong = Layers(right.colour, right.background, -right.shape, right.pose.flip(0),
                   -right.template)
    assert float(layered_anchor_loss(gen, right, z)) < 0.3 < float(layered_anchor_loss(gen, wrong, z))

    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    z = torch.randn(16, 64)
    losses = []
    for _ in range(30):
        loss = layered_anchor_loss(gen, gen.layers(z), z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_layered_run_trains_reloads_in_the_gan_pane_and_refuses_a_plain_init(tmp_path, capsys):
    from studio.core.gan import load_generator

    out = tmp_path / "gan"
    assert main(["shapes-gan", "--tiny", "--steps", "2", "--batch-size", "4", "--layered",
                 "--anchor", "1", "--adversarial", "0", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["layered"] is True and len(config["palette"]) == 8
    gen = load_generator(str(out))
    assert gen.z_dim == 32
    with torch.no_grad():
        assert gen.module(torch.randn(2, 32)).shape == (2, 3, 64, 64)
    # A second stage keeps the layers; a plain generator cannot become layered.
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4", "--anchor", "1",
                 "--init-from", str(out), "--out", str(tmp_path / "more")]) == 0
    assert json.loads((tmp_path / "more" / "config.json").read_text())["layered"] is True
    plain = tmp_path / "plain"
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4",
                 "--out", str(plain)]) == 0
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--layered", "--init-from", str(plain),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--layered" in capsys.readouterr().err
    # The sampling temperature is stored with the weights and read back by the loaders.
    assert main(["shapes-gan", "--tiny", "--steps", "1", "--batch-size", "4", "--anchor", "1",
                 "--adversarial", "0", "--init-from", str(out), "--choice-temperature", "0.1",
                 "--out", str(tmp_path / "cold")]) == 0
    assert json.loads((tmp_path / "cold" / "config.json").read_text())["choice_temperature"] == 0.1
    assert load_generator(str(tmp_path / "cold")).module.choice_temperature == 0.1
    for bad in (["--choice-temperature", "0", "--layered"], ["--choice-temperature", "0.5"]):
        assert main(["shapes-gan", "--tiny", "--steps", "1", *bad, "--anchor", "1",
                     "--out", str(tmp_path / "y")]) == 2
        assert "--choice-temperature" in capsys.readouterr().err
