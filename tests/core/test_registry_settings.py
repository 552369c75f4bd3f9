import json
import subprocess
import sys

import pytest

from studio.core.errors import UserError
from studio.core.registry import classify, discover, resolve_model
from studio.core.settings import SCHEMA_VERSION, Settings, load_settings, save_settings


def _write(path, data):
    path.mkdir(parents=True, exist_ok=True)
    (path / ("model_index.json" if "_diffusers_version" in data else "config.json")).write_text(
        json.dumps(data)
    )


@pytest.fixture
def model_tree(tmp_path, monkeypatch):
    bundled = tmp_path / "bundled"
    _write(
        bundled / "shapes-diffusion",
        {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30"},
    )
    _write(bundled / "prompt-writer", {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    _write(bundled / "shapes-vae", {"_class_name": "AutoencoderKL"})
    _write(bundled / "shapes-vae-2d", {"architecture": "vae2d", "latent_dim": 2})
    _write(bundled / "shapes-gan", {"architecture": "dcgan", "z_dim": 64})
    (bundled / "notes").mkdir()
    (bundled / "notes" / "readme.txt").write_text("not a model")
    user = tmp_path / "user"
    _write(user / "nested" / "my-llm", {"architectures": ["LlamaForCausalLM"]})
    monkeypatch.setenv("LATENT_STUDIO_MODELS", str(bundled))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return bundled, user


def test_discover_finds_every_kind_offline(model_tree):
    bundled, user = model_tree
    entries = discover(Settings(model_folders=[str(user)]))
    found = {e.name: (e.kind, e.source) for e in entries}
    assert found == {
        "shapes-diffusion": ("diffusers-pipeline", "bundled"),
        "prompt-writer": ("causal-lm", "bundled"),
        "shapes-vae": ("autoencoder-kl", "bundled"),
        "shapes-vae-2d": ("vae-2d", "bundled"),
        "shapes-gan": ("gan", "bundled"),
        "my-llm": ("causal-lm", "user"),
    }
    only = discover(Settings(model_folders=[str(user)]), kinds=["causal-lm"])
    assert [e.name for e in only] == ["prompt-writer", "my-llm"]


def test_hf_cache_snapshots_are_listed(model_tree, tmp_path):
    snap = tmp_path / "hf-cache" / "models--org--tiny-sd" / "snapshots" / "abc123"
    _write(snap, {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.30"})
    refs = tmp_path / "hf-cache" / "models--org--tiny-sd" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    (tmp_path / "hf-cache" / "models--org--tiny-sd" / "blobs").mkdir()
    entries = discover(Settings(), kinds=["diffusers-pipeline"])
    assert ("org/tiny-sd", "hf-cache") in {(e.name, e.source) for e in entries}
    assert resolve_model("org/tiny-sd", "diffusers-pipeline") == snap


def test_torchscript_files_are_told_from_plain_pickles(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("LATENT_STUDIO_MODELS", str(tmp_path / "no-bundled-models"))

    scripted = torch.jit.script(torch.nn.Linear(2, 3))
    torch.jit.save(scripted, str(tmp_path / "gen.pt"))
    torch.save({"w": torch.zeros(2)}, tmp_path / "state.pt")
    assert classify(tmp_path / "gen.pt") == "torchscript-gan"
    assert classify(tmp_path / "state.pt") is None
    assert [
        e.name for e in discover(Settings(model_folders=[str(tmp_path)], scan_hf_cache=False))
    ] == ["gen"]


def test_resolve_by_name_path_or_a_clear_error(model_tree, tmp_path):
    bundled, _ = model_tree
    assert resolve_model("shapes-gan", "gan") == bundled / "shapes-gan"
    assert resolve_model(str(tmp_path), "gan") == tmp_path
    with pytest.raises(
        UserError, match="No diffusers-pipeline model named 'nope'.*shapes-diffusion"
    ):
        resolve_model("nope", "diffusers-pipeline")
    (bundled / "shapes-diffusion" / "model_index.json").unlink()
    with pytest.raises(UserError, match="bundled .* 'shapes-diffusion' is missing"):
        resolve_model("shapes-diffusion", "diffusers-pipeline")


def test_registry_and_settings_import_no_torch():
    code = (
        "import sys, studio.core.registry, studio.core.settings, studio.core.metadata, "
        "studio.core.gallery, studio.core.diffusion, studio.core.previews, studio.cli.image; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_settings_round_trip_and_survive_bad_files(tmp_path):
    path = tmp_path / "settings.json"
    s = Settings(outputs_dir=str(tmp_path / "out"), model_folders=["/models"], vae_tiling=True)
    s.extra["from_a_newer_version"] = {"x": 1}
    save_settings(s, path)
    loaded = load_settings(path)
    assert loaded.outputs_dir == str(tmp_path / "out")
    assert loaded.model_folders == ["/models"]
    assert loaded.vae_tiling is True
    assert loaded.extra == {"from_a_newer_version": {"x": 1}}
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert loaded.engine_options()["vae_tiling"] is True
    assert loaded.resolved_outputs_dir() == tmp_path / "out"

    path.write_text('{"steps": "thirty", "guidance_scale": 5, "cpu_offload": 1}')
    odd = load_settings(path)
    assert (odd.steps, odd.guidance_scale, odd.cpu_offload) == (30, 5.0, False)
    path.write_text("{corrupt")
    assert load_settings(path) == Settings()
    assert load_settings(tmp_path / "missing.json") == Settings()


def test_default_outputs_live_in_the_user_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LATENT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    assert Settings().resolved_outputs_dir() == tmp_path / "data" / "outputs"
