"""The prompt-writer trainer: synthetic data is valid, a tiny run reloads with AutoClasses."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from studio.training import world  # noqa: E402
from studio.training.__main__ import main  # noqa: E402
from studio.training.train_prompt_writer import (  # noqa: E402
    ASSISTANT,
    END,
    USER,
    make_example,
    make_idea,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)


def test_every_training_target_is_a_valid_prompt():
    rng = np.random.default_rng(0)
    for _ in range(500):
        text, prefix = make_example(rng)
        target = text[len(prefix):] if prefix else text
        assert target.endswith(END)
        assert world.parse_caption(target[: -len(END)]) is not None, text


def test_ideas_constrain_the_prompt():
    rng = np.random.default_rng(1)
    seen = 0
    for _ in range(400):
        idea, prompt = make_idea(rng)
        parsed = world.parse_caption(prompt)
        if idea.startswith("something") and "warm" in idea.split() and parsed["colour"]:
            assert parsed["colour"] in ("red", "orange", "yellow"), (idea, prompt)
            seen += 1
    assert len({make_idea(rng)[1] for _ in range(200)}) > 100


def test_tiny_training_reloads_and_chats(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "pw"
    rc = main(["prompt-writer", "--tiny", "--steps", "2", "--batch-size", "4", "--out", str(out)])
    assert rc == 0
    assert not (out / "checkpoint").exists()
    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    text = tok.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a lonely star"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text == f"{USER}a lonely star{END}{ASSISTANT}"
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tok))
    # the tokenizer round-trips arbitrary text (byte-level BPE has no unknown token)
    sample = "a small red circle, blue background — 🙂"
    assert tok.decode(tok(sample, add_special_tokens=False)["input_ids"]) == sample
