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
    follows,
    make_example,
    make_idea,
    make_idea_with_constraints,
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
        assert world.is_world_prompt(target[: -len(END)]), text


def test_ideas_constrain_the_prompt():
    rng = np.random.default_rng(1)
    warm = tiny = 0
    for _ in range(3000):
        idea, prompt, want = make_idea_with_constraints(rng)
        parsed = world.parse_caption(prompt)
        assert follows(prompt, want), (idea, prompt)
        words = idea.lower().split()
        if want is not None and "warm" in words and parsed["colour"]:
            assert parsed["colour"] in ("red", "orange", "yellow"), (idea, prompt)
            warm += 1
        if want is not None and "tiny" in words:
            assert parsed["size"] == "small", (idea, prompt)
            tiny += 1
    assert warm and tiny
    assert len({make_idea(rng)[1] for _ in range(200)}) > 100


def test_follows_checks_named_attributes():
    from studio.training.train_prompt_writer import Want

    want = Want(colour={"red"}, size="small", named={"colour", "size"})
    assert follows("a small red star", want)
    assert not follows("a small blue star", want)
    assert not follows("a red star", want)  # the size is left out
    assert not follows("a small red star on a red background", want)
    assert not follows("not a prompt", want)
    assert follows("a red circle above a blue square", None)


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
