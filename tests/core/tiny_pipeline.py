"""A tiny random StableDiffusionPipeline saved with `save_pretrained`, the way
diffusers' fast tests build theirs, so the real loaders are exercised in seconds."""

from __future__ import annotations

import json
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    # The byte → printable character table of GPT-2/CLIP byte-level BPE.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


WORDS = (
    "a red green blue yellow circle square triangle star small large on the left right "
    "top bottom of background dark light"
).split()


def write_tokenizer(folder: Path, max_length: int = 77) -> Path:
    """A CLIPTokenizer folder from a vocabulary made here: every byte, plus whole
    words of the shapes world so prompts tokenise into few tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in sorted(set(WORDS)):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            merged = parts[0] + parts[1]
            if merged not in vocab_list:
                vocab_list.append(merged)
            parts = [merged] + parts[2:]
    merges = list(dict.fromkeys(merges))
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_pipeline(
    path: str | Path, lcm: bool = False, seed: int = 0, xl: bool = False
) -> Path:
    """Build and save a tiny random StableDiffusionPipeline into `path` (64×64 output
    is 32×32 latents; a step takes milliseconds on CPU). `lcm=True` gives the UNet a
    guidance embedding, as LCM-distilled models have; `xl=True` builds an SDXL one
    (two text encoders, size and crop conditioning)."""
    import torch
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    tok_dir = write_tokenizer(path.parent / f".{path.name}-tokenizer")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)

    torch.manual_seed(seed)
    if xl:
        return _make_tiny_xl(path, tokenizer)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
        time_cond_proj_dim=8 if lcm else None,
    )
    vae = _tiny_vae()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=16,
            intermediate_size=32,
            layer_norm_eps=1e-05,
            num_attention_heads=2,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            projection_dim=16,
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def _tiny_vae() -> object:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )


def _make_tiny_xl(path: Path, tokenizer: object) -> Path:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hidden, time_dim = 16, 8
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 1),
        # Six size/crop numbers, each embedded, plus the pooled text embedding.
        projection_class_embeddings_input_dim=6 * time_dim + hidden,
        cross_attention_dim=2 * hidden,
        norm_num_groups=4,
    )
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden,
        intermediate_size=32,
        layer_norm_eps=1e-05,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        projection_dim=hidden,
        hidden_act="gelu",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(),
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            steps_offset=1,
        ),
        add_watermarker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path
