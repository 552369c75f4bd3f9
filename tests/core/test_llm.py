import json
import threading

import pytest

from studio.core.engine import Engine
from studio.core.errors import UserError
from studio.core.jobs import ChatRequest, Decoding, Failed, Finished, Token
from studio.core.llm import TextAssembler, build_prompt, check_folder
from tests.core.tiny_llm import build_tiny_lm, build_tokenizer

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    return {
        "gpt2": build_tiny_lm(root / "gpt2", "gpt2", chat_template=False, context=64),
        "llama": build_tiny_lm(root / "llama", "llama", chat_template=True, context=256),
    }


@pytest.fixture(scope="module")
def engine():
    e = Engine(device="cpu")
    e.start()
    assert e.wait_ready(30)
    yield e
    e.stop()


def _chat(engine, model, text="a red circle", system="", **decoding):
    decoding.setdefault("max_new_tokens", 16)
    job = ChatRequest(
        model=str(model), system=system, messages=(("user", text),), decoding=Decoding(**decoding)
    )
    tokens = []
    unsubscribe = engine.subscribe(
        lambda ev: tokens.append(ev.text) if isinstance(ev, Token) and ev.job_id == job.job_id else None
    )
    try:
        result = engine.run(job, timeout=60)
    finally:
        unsubscribe()
    return result, tokens


def _loaded(engine, model):
    from studio.core.engine import run_on_thread
    from studio.core.llm import load_llm

    return run_on_thread(engine, lambda ctx: load_llm(ctx, str(model)))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_greedy_is_deterministic_and_matches_bare_generate(engine, models, arch):
    first, tokens = _chat(engine, models[arch], method="greedy")
    second, _ = _chat(engine, models[arch], method="greedy")
    assert first.text == second.text
    assert "".join(tokens) == first.text
    assert first.new_tokens > 0 and first.finish_reason in ("eos", "length")

    lm = _loaded(engine, models[arch])
    prompt = build_prompt(lm, "", [("user", "a red circle")], 16)
    with torch.inference_mode():
        out = lm.model.generate(
            torch.tensor([prompt.ids]), do_sample=False, max_new_tokens=16,
            repetition_penalty=1.1, eos_token_id=lm.eos_token_ids, pad_token_id=lm.pad_token_id,
        )
    bare = lm.tokenizer.decode(out[0, len(prompt.ids):], skip_special_tokens=True)
    assert first.text == bare


def test_chat_template_is_used_when_present(engine, models):
    lm = _loaded(engine, models["llama"])
    assert lm.has_chat_template
    prompt = build_prompt(lm, "be brief", [("user", "hello")], 8)
    expected = lm.tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert expected.endswith("<|im_start|>assistant\n")
    assert lm.tokenizer.decode(prompt.ids) == expected

    plain = _loaded(engine, models["gpt2"])
    assert not plain.has_chat_template
    ids = build_prompt(plain, "be brief", [("user", "hello")], 8).ids
    assert plain.tokenizer.decode(ids) == "be brief\n\nhello"


def test_beam_search_returns_the_best_scoring_beam(engine, models):
    result, tokens = _chat(engine, models["llama"], method="beam", num_beams=4, max_new_tokens=10)
    assert tokens == [result.text]  # one piece: beam search cannot stream

    lm = _loaded(engine, models["llama"])
    prompt = build_prompt(lm, "", [("user", "a red circle")], 10)
    with torch.inference_mode():
        out = lm.model.generate(
            torch.tensor([prompt.ids]), do_sample=False, num_beams=4, num_return_sequences=4,
            early_stopping=True, max_new_tokens=10, output_scores=True, repetition_penalty=1.1,
            return_dict_in_generate=True, eos_token_id=lm.eos_token_ids,
            pad_token_id=lm.pad_token_id,
        )
    best = int(torch.argmax(out.sequences_scores))
    texts = [
        lm.tokenizer.decode(seq[len(prompt.ids):], skip_special_tokens=True) for seq in out.sequences
    ]
    assert result.text == texts[best]
    # The tiny model is decisive enough that beams differ: the check means something.
    assert len(set(texts)) > 1


def test_seeded_sampling_is_reproducible(engine, models):
    a, _ = _chat(engine, models["gpt2"], method="sample", temperature=1.0, top_k=0, top_p=1.0, seed=7)
    b, _ = _chat(engine, models["gpt2"], method="sample", temperature=1.0, top_k=0, top_p=1.0, seed=7)
    c, _ = _chat(engine, models["gpt2"], method="sample", temperature=1.0, top_k=0, top_p=1.0, seed=8)
    assert a.text == b.text and a.seed == 7
    assert c.text != a.text
    fresh, _ = _chat(engine, models["gpt2"], method="sample", seed=-1)
    assert fresh.seed >= 0


def test_stop_keeps_partial_text_and_frees_the_thread(engine, models):
    full, _ = _chat(engine, models["llama"], method="greedy", max_new_tokens=40)
    assert full.new_tokens > 5  # long enough to be stopped part-way

    job = ChatRequest(
        model=str(models["llama"]), messages=(("user", "a red circle"),),
        decoding=Decoding(method="greedy", max_new_tokens=40),
    )
    pieces = []
    after_cancel = []
    cancelled = threading.Event()

    def listen(ev):
        if isinstance(ev, Token) and ev.job_id == job.job_id:
            (after_cancel if cancelled.is_set() else pieces).append(ev.text)
            if len(pieces) == 3 and not cancelled.is_set():
                cancelled.set()
                engine.cancel_running()

    unsubscribe = engine.subscribe(listen)
    try:
        end = engine.submit(job).wait(30)
    finally:
        unsubscribe()
    assert isinstance(end, Finished)
    result = end.result
    assert result.stopped and result.finish_reason == "stopped"
    assert len(after_cancel) == 0
    assert result.text == "".join(pieces) and full.text.startswith(result.text)
    assert result.new_tokens < full.new_tokens
    # The thread is free: the next request runs to the end.
    again, _ = _chat(engine, models["llama"], method="greedy", max_new_tokens=40)
    assert again.text == full.text and not again.stopped


def test_stop_strings_end_the_reply_before_the_string(engine, models):
    full, _ = _chat(engine, models["llama"], method="greedy", max_new_tokens=40)
    stop = full.text[6:9]
    assert len(stop) == 3 and full.text.find(stop) == 6
    cut, tokens = _chat(engine, models["llama"], method="greedy", max_new_tokens=40, stop=(stop,))
    assert cut.text == full.text[:6]
    assert cut.finish_reason == "stop-string"
    assert "".join(tokens) == cut.text


def test_text_assembler_holds_back_a_possible_stop_string():
    tokenizer = build_tokenizer(chat_template=False)
    ids = tokenizer("hello world, this is café", add_special_tokens=False)["input_ids"]
    assembler = TextAssembler(tokenizer, stop=["this is"])
    out = "".join(assembler.add([i]) for i in ids) + assembler.flush()
    assert out == "hello world, " and assembler.hit_stop
    plain = TextAssembler(tokenizer)
    streamed = "".join(plain.add([i]) for i in ids) + plain.flush()
    assert streamed == "hello world, this is café"


def test_context_overflow_drops_oldest_turns_with_a_notice(engine, models):
    turns = []
    for i in range(8):
        turns += [("user", f"question {i} about a red circle"), ("assistant", f"answer {i} blue square")]
    turns.append(("user", "last question"))
    job = ChatRequest(
        model=str(models["gpt2"]), messages=tuple(turns),
        decoding=Decoding(method="greedy", max_new_tokens=8),
    )
    result = engine.run(job, timeout=60)
    assert result.dropped_messages > 0 and result.dropped_messages % 2 == 0
    assert any("Dropped the" in n and "64 tokens" in n for n in result.notices)
    assert result.prompt_tokens + 8 <= 64

    too_long = ChatRequest(
        model=str(models["gpt2"]), messages=(("user", "a red circle " * 40),),
        decoding=Decoding(method="greedy", max_new_tokens=8),
    )
    end = engine.submit(too_long).wait(30)
    assert isinstance(end, Failed) and "context holds 64 tokens" in end.message


def test_bad_folders_get_clear_messages(engine, models, tmp_path):
    import shutil

    no_tok = tmp_path / "no-tokenizer"
    shutil.copytree(models["gpt2"], no_tok)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / name).unlink()
    with pytest.raises(UserError, match="has no tokenizer"):
        check_folder(no_tok)

    remote = tmp_path / "remote"
    shutil.copytree(models["gpt2"], remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="my-own-arch", auto_map={"AutoModelForCausalLM": "modeling.MyLM"})
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="trust_remote_code"):
        check_folder(remote)

    pickled = tmp_path / "pickled"
    shutil.copytree(models["gpt2"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(UserError, match="pickle weights"):
        check_folder(pickled)

    pipeline = tmp_path / "pipeline"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(UserError, match="diffusers pipeline"):
        check_folder(pipeline)

    from transformers import DistilBertConfig, DistilBertModel

    encoder = tmp_path / "encoder"
    DistilBertModel(
        DistilBertConfig(vocab_size=64, dim=16, hidden_dim=32, n_layers=1, n_heads=2)
    ).save_pretrained(encoder)
    build_tokenizer(False).save_pretrained(encoder)
    end = engine.submit(ChatRequest(model=str(encoder), messages=(("user", "hi"),))).wait(30)
    assert isinstance(end, Failed) and "not a causal language model" in end.message

    # Each failure leaves the thread ready for the next request.
    result, _ = _chat(engine, models["gpt2"], method="greedy", max_new_tokens=4)
    assert result.new_tokens > 0


def test_unknown_model_name_is_a_clear_failure(engine):
    end = engine.submit(ChatRequest(model="no-such-model-here", messages=(("user", "hi"),))).wait(30)
    assert isinstance(end, Failed) and "no-such-model-here" in end.message


def test_cli_streams_to_stdout_and_fails_with_exit_code_1(models, tmp_path, capsys, monkeypatch):
    from studio.cli import main

    monkeypatch.setenv("LATENT_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    code = main(["chat", "--model", str(models["llama"]), "--prompt", "a red circle", "--greedy",
                 "--max-new-tokens", "12", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 0 and out.endswith("\n") and len(out) > 1
    assert "tokens/s" in err and "first token" in err

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    assert main(["chat", "--model", str(broken), "--prompt", "hi", "--device", "cpu"]) == 1
    assert "error:" in capsys.readouterr().err
    assert main(["chat", "--model", str(models["llama"]), "--prompt", "hi", "--top-k", "many"]) == 1
    assert "Top-k must be a whole number" in capsys.readouterr().err


def test_remote_code_runs_only_when_trusted(engine, models, tmp_path, monkeypatch):
    import shutil

    import transformers.dynamic_module_utils as dynamic

    # The copied model code lands here, not in the user's HF cache.
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder = tmp_path / "custom-lm"
    shutil.copytree(models["gpt2"], folder)
    (folder / "configuration_mylm.py").write_text(
        "from transformers import GPT2Config\n\n"
        "class MyConfig(GPT2Config):\n    model_type = 'my-lm'\n"
    )
    (folder / "modeling_mylm.py").write_text(
        "from transformers import GPT2LMHeadModel\n"
        "from .configuration_mylm import MyConfig\n\n"
        "class MyLM(GPT2LMHeadModel):\n    config_class = MyConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="my-lm",
        architectures=["MyLM"],
        auto_map={"AutoConfig": "configuration_mylm.MyConfig", "AutoModelForCausalLM": "modeling_mylm.MyLM"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    request = dict(model=str(folder), messages=(("user", "hi"),), decoding=Decoding(method="greedy", max_new_tokens=4))
    end = engine.submit(ChatRequest(**request)).wait(30)
    assert isinstance(end, Failed) and "Trust remote code" in end.message
    result = engine.run(ChatRequest(**request, trust_remote_code=True), timeout=60)
    assert result.new_tokens > 0


def test_stop_during_beam_search_keeps_the_best_beam_so_far(engine, models):
    from dataclasses import dataclass
    from typing import ClassVar

    from studio.core.engine import CallJob
    from studio.core.jobs import Started

    @dataclass(frozen=True, kw_only=True)
    class StopFromLane(CallJob):
        lane: ClassVar[str] = "test-beam-stop"

    job = ChatRequest(
        model=str(models["llama"]), messages=(("user", "a red circle"),),
        decoding=Decoding(method="beam", num_beams=3, max_new_tokens=150),
    )
    started = threading.Event()
    unsubscribe = engine.subscribe(
        lambda ev: started.set() if isinstance(ev, Started) and ev.job_id == job.job_id else None
    )
    try:
        handle = engine.submit(job)
        assert started.wait(30)
        # Served between two beam steps (the interactive lane), it stops the search there.
        engine.request_interactive(StopFromLane(fn=lambda ctx: engine.cancel_running()))
        end = handle.wait(30)
    finally:
        unsubscribe()
    assert isinstance(end, Finished)
    assert end.result.stopped and end.result.finish_reason == "stopped"
    assert end.result.new_tokens < 150
