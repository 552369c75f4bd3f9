"""Tiny random causal LMs in the real folder format, built offline for tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "a red circle on a blue square, soft light, studio photo",
    "a small green triangle above a yellow star, watercolor, pastel colors",
    "portrait of a cat wearing a hat, oil painting, dramatic lighting",
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is a tiny language model for tests",
    "émojis and accents: café, naïve, 東京, 🙂",
]

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(chat_template: bool) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHATML
    return fast


def build_tiny_lm(
    folder: Path,
    arch: str = "gpt2",
    chat_template: bool = False,
    context: int = 128,
    hidden: int = 32,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a random `arch` ("gpt2" or "llama") causal LM with a tokenizer into `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer(chat_template)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab,
            n_positions=context,
            n_embd=hidden,
            n_layer=layers,
            n_head=2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config)
    elif arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=context,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(arch)
    # Random weights give near-uniform logits; scaling them up makes the tiny
    # model decisive, so greedy and beam search have clear winners.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
