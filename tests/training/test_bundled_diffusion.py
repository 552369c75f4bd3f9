"""The bundled shapes-diffusion folder loads with the plain diffusers loader and runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from studio.paths import models_dir

FOLDER = models_dir() / "shapes-diffusion"
pytestmark = pytest.mark.skipif(
    not (FOLDER / "model_index.json").is_file(),
    reason="models/shapes-diffusion is not there yet (train it with "
           "`python -m studio.training shapes-diffusion`)",
)


def test_folder_is_a_complete_pipeline() -> None:
    index = json.loads((FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (FOLDER / part).is_dir(), part
    assert index["safety_checker"] == [None, None]
    assert (FOLDER / "tokenizer" / "vocab.json").is_file()
    assert (FOLDER / "tokenizer" / "merges.txt").is_file()
    assert (FOLDER / "MODEL_CARD.md").is_file()
    assert not list(FOLDER.rglob("*.bin")) and not list(FOLDER.rglob("*.ckpt"))
    total = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert total < 30 * 1024 * 1024


def test_plain_loader_generates_a_64px_image() -> None:
    torch = pytest.importorskip("torch")
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(1)
    pipe = StableDiffusionPipeline.from_pretrained(str(FOLDER))
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle on a blue background", negative_prompt="green",
               num_inference_steps=2, guidance_scale=7.5,
               generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (1, 64, 64, 3)
    assert np.isfinite(out.images).all()
    assert pipe.tokenizer.tokenize("a red circle") == ["a</w>", "red</w>", "circle</w>"]
