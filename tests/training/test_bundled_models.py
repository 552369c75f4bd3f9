"""The bundled models under models/ load with the plain library loaders and run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

MODELS = Path(__file__).resolve().parents[2] / "models"


def _folder(name: str, *files: str) -> Path:
    folder = MODELS / name
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        pytest.skip(f"models/{name} is not trained yet (missing {', '.join(missing)}); "
                    f"train it with: python -m studio.training {name}")
    return folder


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def test_shapes_vae_is_an_autoencoder_kl():
    folder = _folder("shapes-vae", "config.json", "diffusion_pytorch_model.safetensors")
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(folder)).eval()
    from studio.training.world import render_batch

    images, _, _ = render_batch(range(2_000_000_000, 2_000_000_004))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
        y = vae.decode(z).sample
    assert z.shape == (4, 4, 8, 8)
    assert y.shape == x.shape
    # a trained autoencoder reconstructs the flat shapes closely
    assert float(((y - x) ** 2).mean()) < 0.02


def test_shapes_vae_2d_has_a_two_number_latent():
    from safetensors.torch import load_file

    from studio.training.vae2d_model import build_vae2d

    folder = _folder("shapes-vae-2d", "config.json", "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    vae = build_vae2d(config).eval()
    vae.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    with torch.no_grad():
        mu, logvar = vae.encode(torch.zeros(2, 3, 64, 64))
        x = vae.decode(torch.tensor([[0.0, 0.0], [1.5, -1.5]]))
    assert mu.shape == logvar.shape == (2, 2)
    assert x.shape == (2, 3, 64, 64)


def test_shapes_gan_generates_fast_on_cpu():
    from safetensors.torch import load_file

    from studio.training.gan_model import build_generator

    folder = _folder("shapes-gan", "config.json", "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "dcgan"
    gen = build_generator(config).eval()
    gen.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    z = torch.randn(1, config["z_dim"])
    with torch.no_grad():
        out = gen(torch.randn(8, config["z_dim"]))
        gen(z)
        start = time.perf_counter()
        for _ in range(10):
            gen(z)
        per_frame = (time.perf_counter() - start) / 10
    assert out.shape == (8, 3, 64, 64)
    assert float(out.abs().max()) <= 1.0
    # generous bound: the CPU is shared with other work while tests run
    assert per_frame < 0.05


def test_prompt_writer_loads_with_auto_classes_and_writes_a_prompt():
    folder = _folder("prompt-writer", "config.json", "model.safetensors", "tokenizer.json")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.training.world import parse_caption

    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert "chat_template" in config
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    assert model.config.model_type == "gpt2"
    text = tok.apply_chat_template([{"role": "user", "content": "a tiny red thing"}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, do_sample=False, max_new_tokens=30,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    prompt = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    parsed = parse_caption(prompt)
    assert parsed is not None, prompt
    assert parsed["colour"] in (None, "red")


def test_bundled_models_stay_small():
    # The limit: everything under models/ together under 60 MB.
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
             for p in MODELS.iterdir() if p.is_dir()}
    assert sum(sizes.values()) < 60 * 10**6, sizes
