"""The VAE trainers run a few tiny steps and write folders the plain loaders read."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from studio.training.__main__ import main  # noqa: E402
from studio.training.train_vae import Budget, cosine_lr, psnr  # noqa: E402
from studio.training.vae2d_model import build_vae2d  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def test_shapes_vae_trains_and_reloads_as_autoencoder_kl(tmp_path):
    from diffusers import AutoencoderKL

    out = tmp_path / "vae"
    rc = main(["shapes-vae", "--tiny", "--steps", "2", "--batch-size", "2", "--out", str(out)])
    assert rc == 0
    assert not (out / "checkpoint").exists()
    assert (out / "samples.png").is_file()
    vae = AutoencoderKL.from_pretrained(str(out)).eval()
    assert vae.config.scaling_factor > 0
    with torch.no_grad():
        z = vae.encode(torch.zeros(2, 3, 64, 64)).latent_dist.mean
        y = vae.decode(z).sample
    assert z.shape == (2, 4, 32, 32)  # two blocks: one downsampling in the tiny config
    assert y.shape == (2, 3, 64, 64)
    log = json.loads((out / "training_log.json").read_text())
    assert log["steps"] == 2 and log["parameters"] > 0


def test_shapes_vae_2d_trains_and_reloads(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "vae2d"
    rc = main(["shapes-vae-2d", "--tiny", "--steps", "2", "--batch-size", "2", "--out", str(out)])
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "conv-vae" and config["latent_dim"] == 2
    vae = build_vae2d(config)
    vae.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    vae.eval()
    with torch.no_grad():
        mu, logvar = vae.encode(torch.zeros(3, 3, 64, 64))
        x = vae.decode(torch.randn(3, 2))
    assert mu.shape == logvar.shape == (3, 2)
    assert x.shape == (3, 3, 64, 64)
    assert float(x.abs().max()) <= 1.0


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    rc = main(["shapes-vae-2d", "--tiny", "--steps", "2", "--out", str(tmp_path), "--resume"])
    assert rc == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_build_vae2d_rejects_other_architectures():
    with pytest.raises(ValueError):
        build_vae2d({"architecture": "dcgan"})


def test_schedule_and_budget():
    assert cosine_lr(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert cosine_lr(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert cosine_lr(100, 100, 1.0, 10) == pytest.approx(0.02)
    # a time budget that is already spent ends the run and finishes the decay
    budget = Budget(1000, max_minutes=1e-9)
    assert budget.done(1)
    assert cosine_lr(50, 1000, 1.0, 10, budget.progress(50)) == pytest.approx(0.02)
    assert not Budget(10, None).done(9) and Budget(10, None).done(10)


def test_psnr_of_identical_and_different_images():
    import numpy as np

    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 255
    assert psnr(a, a) > 90
    assert psnr(a, b) == pytest.approx(10 * np.log10(3), abs=1e-6)


def test_resume_continues_from_a_checkpoint(tmp_path):
    from studio.training.common import save_checkpoint
    from studio.training.train_vae import TINY_2D_CONFIG

    vae = build_vae2d(TINY_2D_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3)
    vae(torch.zeros(1, 3, 64, 64))[0].mean().backward()
    opt.step()
    save_checkpoint(tmp_path, 3, {"vae": vae}, {"opt": opt})
    rc = main(["shapes-vae-2d", "--tiny", "--steps", "4", "--batch-size", "2",
               "--out", str(tmp_path), "--resume"])
    assert rc == 0
    assert json.loads((tmp_path / "training_log.json").read_text())["steps"] == 4


def test_resume_with_a_corrupt_checkpoint_names_the_file(tmp_path, capsys):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "state.json").write_text('{"step": 1}')
    (folder / "weights.safetensors").write_bytes(b"not safetensors")
    rc = main(["shapes-vae-2d", "--tiny", "--steps", "2", "--out", str(tmp_path), "--resume"])
    assert rc == 2
    assert "weights.safetensors" in capsys.readouterr().err
