"""Train ``shapes-diffusion``: a complete Stable Diffusion pipeline from scratch.

Four phases, all on shapes-world scenes rendered on the fly:

1. an ``AutoencoderKL`` (downsample factor 4, 4 latent channels) on images,
   with a small KL term; its ``scaling_factor`` is then set from the latent std;
2. a small ``CLIPTextModel`` learns to name every attribute a caption asks for
   (linear heads on its states; see ``pretrain_text_encoder``);
3. a ``UNet2DConditionModel`` on cached latents, reading the frozen text
   encoder through cross-attention; epsilon prediction with min-SNR weighting.
   The world's captions are empty about one time in ten, which trains the
   unconditional prediction that classifier-free guidance and negative prompts
   use; a few captions are bare attribute lists ("red, blue") so that negative
   prompts written that way mean something;
4. the decoder is fine-tuned with the encoder frozen, sharpening the output
   without moving the latent space the UNet learned.

The result is written with ``save_pretrained`` as a ``StableDiffusionPipeline``
folder with the project's own CLIP-format BPE tokenizer.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from studio.training import world
from studio.training.common import (
    CHECKPOINT_DIR,
    Progress,
    TrainError,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    update_average,
    write_json,
)

DEFAULT_STEPS = 3600
DEFAULT_BATCH_SIZE = 64
MAX_LENGTH = 32
TIER2_SHARE = 0.2
ATTRIBUTE_LIST_SHARE = 0.05
CHECKPOINT_EVERY_S = 300.0
MIN_SNR_GAMMA = 5.0
DECODED_MAX_T = 300  # the last six of twenty DDIM steps (t = 251 … 1), where corners and points form
TRAIN_TIMESTEPS = 1000
# --decoder-sampled follows the pipeline's own sampling: its scheduler at 20 steps, guidance 7.5
SAMPLED_STEPS = 20
DEFAULT_SAMPLED_GUIDANCE = 7.5
# --empty-field-share draws its timesteps from here up: where the sampler settles the background
EMPTY_FIELD_MIN_T = 800
# the other --empty-field-* options; these defaults swap in the whole field for any colour caption
EMPTY_FIELD_DEFAULTS: dict[str, Any] = {"min_t": EMPTY_FIELD_MIN_T, "blend_low": 1.0,
                                        "layout": False}
EMPTY_FIELD_TOLERANCE = 16.0  # largest colour error (of 255) in 99% of a decoded empty field

# Architecture presets; "tiny" exists for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "vae_channels": (16, 32, 64),
        "unet_channels": (32, 64, 64),
        "text_hidden": 128,
        "text_layers": 3,
        "text_heads": 4,
        "vae_batch": 16,
    },
    "tiny": {
        "vae_channels": (8, 8, 8),
        "unet_channels": (16, 16, 16),
        "text_hidden": 16,
        "text_layers": 1,
        "text_heads": 2,
        "vae_batch": 2,
    },
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae-steps", type=int, default=None,
                        help="autoencoder steps before the UNet phase (default: min(1200, steps))")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full",
                        help="model size; 'tiny' is for tests")
    parser.add_argument("--lr", type=float, default=6e-4, help="UNet learning rate")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="wall-time budget of the UNet phase; the learning-rate schedule "
                             "follows whichever of steps or time runs out first")
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="steps of the final decoder fine-tuning (default: min(1200, steps))")
    parser.add_argument("--decoder-only", action="store_true",
                        help="only fine-tune the decoder of the pipeline already in --out")
    parser.add_argument("--decoder-denoised", type=int, default=0, metavar="T",
                        help="with --decoder-only: half the decoder's inputs are the UNet's own "
                             "one-step estimates of the latent from noise levels up to timestep "
                             "T, so the decoder learns the latents the UNet makes (default 0: off)")
    parser.add_argument("--decoder-sampled", type=int, default=0, metavar="N",
                        help="with --decoder-denoised T: instead of one-step estimates, sample "
                             "N scenes once from their noised latents, from a step of the "
                             f"{SAMPLED_STEPS}-step DDIM schedule below T to the end with "
                             "classifier-free guidance, and decode those (default 0: off)")
    parser.add_argument("--decoder-guidance", type=float, default=DEFAULT_SAMPLED_GUIDANCE,
                        metavar="G",
                        help=f"guidance scale of --decoder-sampled (default "
                             f"{DEFAULT_SAMPLED_GUIDANCE:g}, the pipeline's usual scale)")
    parser.add_argument("--text-steps", type=int, default=None,
                        help="text-encoder pre-training steps (batch 128) before the UNet phase "
                             "(default: 400; 0 with --init-from, whose text encoder the UNet "
                             "already reads)")
    parser.add_argument("--init-from", default=None,
                        help="continue from the autoencoder, tokenizer, text encoder and UNet "
                             "of an earlier pipeline folder; skips the autoencoder phase")
    parser.add_argument("--cache-size", type=int, default=None,
                        help="number of pre-encoded training latents (default: from steps)")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="decay of an exponential moving average of the UNet's weights, "
                             "saved in place of the last weights (e.g. 0.9995; default 0: off)")
    parser.add_argument("--list-captions", type=float, default=ATTRIBUTE_LIST_SHARE,
                        help="share of captions replaced by a bare attribute list such as "
                             "'red, blue', the form negative prompts take "
                             f"(default {ATTRIBUTE_LIST_SHARE})")
    parser.add_argument("--name-probability", type=float, default=world.NAME_PROBABILITY,
                        metavar="P",
                        help="chance that a one-object caption names each of colour, size, "
                             "position and background; lower values give more short prompts "
                             f"such as 'a red circle' (default {world.NAME_PROBABILITY})")
    parser.add_argument("--short-captions", type=float, default=0.0, metavar="P",
                        help="caption this share of the captioned one-object scenes by colour "
                             "and shape alone ('a black circle'), so the model learns that the "
                             "named colour is the object's and never the background's "
                             "(default 0)")
    parser.add_argument("--empty-field-share", type=float, default=0.0, metavar="P",
                        help="noise this share of the scenes whose caption names the object's "
                             f"colour from an empty field of that colour instead, at timesteps "
                             f"from {EMPTY_FIELD_MIN_T} up, with the real scene as the target, so "
                             "the sampler turns away from painting the named colour over the "
                             "whole image (default 0)")
    parser.add_argument("--empty-field-min-t", type=int, default=EMPTY_FIELD_DEFAULTS["min_t"],
                        metavar="T",
                        help="draw the --empty-field-share timesteps from T up "
                             f"(default {EMPTY_FIELD_MIN_T})")
    parser.add_argument("--empty-field-blend", type=float,
                        default=EMPTY_FIELD_DEFAULTS["blend_low"], metavar="LO",
                        help="noise the swapped scenes from a blend of the scene and the empty "
                             "field, the field's weight drawn from [LO, 1]; below 1 the object "
                             "is still faintly there, so the target scene can be read from the "
                             "input (default 1: the field alone)")
    parser.add_argument("--empty-field-layout", action="store_true",
                        help="swap only captions that name the size and position as well, so "
                             "the scene the empty field is led back to is one layout")
    parser.add_argument("--object-weight", type=float, default=0.0, metavar="W",
                        help="count the UNet's loss on latent pixels that cover an object "
                             "1 + W times; with --decoder-only, the decoder's loss on image "
                             "pixels within two of an object (default 0: every pixel alike)")
    parser.add_argument("--snr-gamma", type=float, default=MIN_SNR_GAMMA, metavar="G",
                        help="min-SNR weighting: timesteps whose signal-to-noise ratio is above "
                             f"G count G/SNR (default {MIN_SNR_GAMMA:g}; 0: every timestep alike)")
    parser.add_argument("--low-noise-share", type=float, default=0.0, metavar="P",
                        help="draw this share of each batch's timesteps from the low-noise end, "
                             "below --low-noise-max, where a shape's corners and points are "
                             "settled (default 0: all uniform)")
    parser.add_argument("--low-noise-max", type=int, default=300, metavar="T",
                        help="upper end (exclusive) of --low-noise-share's timesteps (default 300)")
    parser.add_argument("--text-lr", type=float, default=0.0, metavar="LR",
                        help="also train the text encoder during the UNet phase, at this "
                             "learning rate (e.g. a tenth of --lr; default 0: frozen)")
    parser.add_argument("--text-anchor", type=float, default=0.0, metavar="W",
                        help="with --text-lr: add W times the mean squared drift of the text "
                             "encoder's states for the empty caption and every one- or two-word "
                             "attribute list from those it started with, so the unconditional "
                             "branch and negative prompts keep what they mean (default 0)")
    parser.add_argument("--star-weight", type=float, default=1.0, metavar="W",
                        help="count the UNet's loss on scenes whose caption names a star W times, "
                             "normalised over the batch; stars are the shape the model draws "
                             "worst (default 1: every scene alike)")
    parser.add_argument("--decoder-small-stars", type=float, default=0.0, metavar="P",
                        help="with --decoder-only: redraw this share of each one-object decoder "
                             "batch as a small star of the same colour, place and background, "
                             "the scene the autoencoder loses most often (default 0)")
    parser.add_argument("--layers-per-block", type=int, default=None,
                        help="resnet (and attention) layers in each UNet block (default 1); with "
                             "--init-from, a shallower UNet grows to this depth, its new layers "
                             "starting as identities")
    parser.add_argument("--reward-only", action="store_true",
                        help="fine-tune the UNet of --init-from (or of --out) on the reward "
                             "network's reading of its own guided samples (reward_tune.py)")
    parser.add_argument("--reward-weight", type=float, default=0.2, metavar="W",
                        help="--reward-only: weight of the reward loss beside the denoising loss")
    parser.add_argument("--reward-batch", type=int, default=8, metavar="N",
                        help="--reward-only: prompts sampled per step")
    parser.add_argument("--reward-lr", type=float, default=5e-5, metavar="LR",
                        help="--reward-only: UNet learning rate")
    parser.add_argument("--reward-grad-steps", type=int, default=4, metavar="K",
                        help="--reward-only: the loss reads one of the last K sampling steps")
    parser.add_argument("--reward-guidance", type=float, default=DEFAULT_SAMPLED_GUIDANCE,
                        help="--reward-only: guidance scale of the sampled prompts")
    parser.add_argument("--decoded-weight", type=float, default=0.0, metavar="W",
                        help="add W times a loss on the decoder's features and pixels of the "
                             "UNet's clean estimate, for scenes noised below --decoded-max-t")
    parser.add_argument("--decoded-max-t", type=int, default=DECODED_MAX_T, metavar="T",
                        help="timesteps below which --decoded-weight applies")
    parser.add_argument("--widen", type=int, default=1, metavar="F",
                        help="make every UNet block F times as wide (with --init-from, the grown "
                             "UNet first computes exactly what the old one did; default 1)")
    parser.add_argument("--fresh-unet", action="store_true",
                        help="with --init-from: keep its autoencoder and text encoder but train "
                             "a new UNet from scratch (sized by --layers-per-block and --widen)")


# --------------------------------------------------------------------------- tokenizer


def tokenizer_corpus() -> list[str]:
    """Text the BPE is trained on: every caption form of the world, many times over."""
    captions = [world.sample_scene_spec(i, 1)[2] for i in range(1500)]
    captions2 = [world.sample_scene_spec(i, 2)[2] for i in range(300)]
    words = list(world.VOCABULARY)
    return [c for c in captions + captions2 if c] + words * 20


def build_tokenizer(folder: Path) -> Any:
    """Train the project's own byte-level BPE in CLIP's format and load it as CLIPTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = list("abcdefghijklmnopqrstuvwxyz0123456789,.-'!?")
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        min_frequency=1,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    # Single characters at the end of a word (e.g. "x</w>") keep unseen words tokenisable.
    for ch in alphabet:
        for piece in (ch, ch + "</w>"):
            if piece not in vocab:
                vocab[piece] = len(vocab)
    merges = data["model"]["merges"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=MAX_LENGTH,
        pad_token="<|endoftext|>",
    )
    return tokenizer


# --------------------------------------------------------------------------- models


def build_models(preset: str, tokenizer: Any, layers_per_block: int = 1,
                 widen: int = 1) -> tuple[Any, Any, Any, Any]:
    """Fresh ``(vae, unet, text_encoder, noise_scheduler)`` for ``preset``, the UNet's blocks
    ``widen`` times as wide as the preset's."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    p = PRESETS[preset]
    vc = p["vae_channels"]
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(vc),
        up_block_types=("UpDecoderBlock2D",) * len(vc),
        block_out_channels=vc,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=min(8, vc[0]),
        sample_size=world.IMAGE_SIZE,
        scaling_factor=1.0,
        mid_block_add_attention=False,
    )
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=p["text_hidden"],
        intermediate_size=p["text_hidden"] * 4,
        num_hidden_layers=p["text_layers"],
        num_attention_heads=p["text_heads"],
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu",
        projection_dim=p["text_hidden"],
    )
    text_encoder = CLIPTextModel(text_config)
    uc = tuple(int(c) * widen for c in p["unet_channels"])
    latent = world.IMAGE_SIZE // 2 ** (len(vc) - 1)
    unet = UNet2DConditionModel(
        sample_size=latent,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=uc,
        layers_per_block=layers_per_block,
        cross_attention_dim=p["text_hidden"],
        attention_head_dim=4,
        norm_num_groups=min(8, uc[0]),
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=TRAIN_TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=False,
    )
    return vae, unet, text_encoder, scheduler


def to_tensor(images: np.ndarray, device: str) -> Any:
    import torch

    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def anchor_captions() -> list[str]:
    """The captions whose states ``--text-anchor`` holds: the empty one (the unconditional
    branch of guidance) and every attribute list of one or two colours or shapes (what
    negative prompts look like, e.g. "red, blue")."""
    captions = [""]
    for words in (world.COLOUR_NAMES, world.SHAPES):
        captions += list(words)
        captions += [f"{a}, {b}" for a in words for b in words if a != b]
    return captions


def attribute_list_caption(rng: np.random.Generator, scene: world.Scene) -> str:
    """A bare list of colour or shape words that includes one the image shows."""
    obj = scene.objects[int(rng.integers(0, len(scene.objects)))]
    if rng.random() < 0.7:
        true, pool = obj.colour, [c for c in world.COLOUR_NAMES if c != scene.background]
    else:
        true, pool = obj.shape, list(world.SHAPES)
    words = [true]
    if rng.random() < 0.6:
        other = [w for w in pool if w != true]
        words.append(other[int(rng.integers(0, len(other)))])
        rng.shuffle(words)
    return ", ".join(words)


def training_batch(start_seed: int, n: int, rng: np.random.Generator,
                   list_share: float = ATTRIBUTE_LIST_SHARE,
                   name_probability: float = world.NAME_PROBABILITY,
                   short_share: float = 0.0) -> tuple[np.ndarray, list[str]]:
    """Render ``n`` scenes (a tier mix) and their training captions.

    ``short_share`` of the captioned one-object scenes are captioned by colour and shape
    alone ("a black circle"), the form in which the model most often paints the named
    colour as the background and loses the object.
    """
    tiers = np.where(rng.random(n) < TIER2_SHARE, 2, 1)
    images, captions, scenes = world.render_batch(range(start_seed, start_seed + n), tier=tiers,
                                                  name_probability=name_probability)
    for i, scene in enumerate(scenes):
        # drawn only when asked for, so earlier recipes keep their captions
        if short_share and scene.caption and scene.tier == 1 and rng.random() < short_share:
            obj = scene.objects[0]
            captions[i] = world.canonical_caption(obj.shape, obj.colour)
        elif scene.caption and rng.random() < list_share:
            captions[i] = attribute_list_caption(rng, scene)
    return images, captions


# --------------------------------------------------------------------------- phases


def train_vae(vae: Any, steps: int, batch: int, device: str, out: Path, start: int,
              state: dict, seed: int) -> None:
    import torch

    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    if start > 0:
        load_checkpoint(out, {"vae": vae}, {"vae": opt})
    bar = Progress(steps, start, desc="autoencoder")
    last_save = time.monotonic()
    vae.train()
    for step in range(start, steps):
        lr = 1e-3 * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        images, _, _ = world.render_batch(range(seed * 10**8 + step * batch, seed * 10**8 + (step + 1) * batch),
                                          tier=1 if step % 4 else 2, caption_style="empty")
        x = to_tensor(images, device)
        posterior = vae.encode(x).latent_dist
        z = posterior.sample()
        recon = vae.decode(z).sample
        rec = (recon - x).abs().mean() + ((recon - x) ** 2).mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.update(rec.item())
        if time.monotonic() - last_save > CHECKPOINT_EVERY_S and step + 1 < steps:
            save_checkpoint(out, step + 1, {"vae": vae}, {"vae": opt}, {**state, "phase": "vae"})
            last_save = time.monotonic()
    state["vae_seconds"] = state.get("vae_seconds", 0.0) + bar.close()
    state["vae_loss"] = bar.loss


AUX_HEADS: dict[str, tuple[str, ...]] = {
    "shape1": world.SHAPES, "colour1": world.COLOUR_NAMES, "size": world.SIZES,
    "position": world.POSITIONS, "background": world.COLOUR_NAMES,
    "shape2": world.SHAPES, "colour2": world.COLOUR_NAMES, "relation": world.RELATIONS,
}


def caption_targets(caption: str) -> dict[str, int]:
    """What a caption asks for, as one class per head; ``len(values)`` means "not named"."""
    t = {k: len(v) for k, v in AUX_HEADS.items()}
    parsed = world.parse_caption(caption)
    if parsed is None:
        # bare attribute lists: "red, blue" / "circle, star"
        words = [w.strip() for w in caption.split(",") if w.strip()]
        for i, w in enumerate(words[:2]):
            if w in world.COLOURS:
                t[f"colour{i + 1}"] = world.COLOUR_NAMES.index(w)
            elif w in world.SHAPES:
                t[f"shape{i + 1}"] = world.SHAPES.index(w)
        return t
    if parsed["tier"] == 2:
        for i, obj in enumerate(parsed["objects"]):
            t[f"shape{i + 1}"] = world.SHAPES.index(obj["shape"])
            if obj["colour"]:
                t[f"colour{i + 1}"] = world.COLOUR_NAMES.index(obj["colour"])
        t["relation"] = world.RELATIONS.index(parsed["relation"])
    else:
        t["shape1"] = world.SHAPES.index(parsed["shape"])
        for head, key in (("colour1", "colour"), ("size", "size"), ("position", "position")):
            if parsed[key]:
                t[head] = AUX_HEADS[head].index(parsed[key])
    if parsed["background"]:
        t["background"] = world.COLOUR_NAMES.index(parsed["background"])
    return t


def pretrain_text_encoder(text_encoder: Any, tokenizer: Any, steps: int, batch: int,
                          device: str, seed: int) -> dict:
    """Teach the text encoder to spell out what a caption asks for.

    Jointly trained from scratch with the UNet, a tiny text encoder gives nearly
    identical states for every caption and the UNet learns to ignore it. So it
    first learns, through small linear heads on every state from the end-of-
    text token on, to name each requested attribute (or "not named"); the UNet
    then reads these states through cross-attention with the encoder frozen.
    """
    import torch
    from torch import nn

    hidden = text_encoder.config.hidden_size
    heads = nn.ModuleDict({k: nn.Linear(hidden, len(v) + 1) for k, v in AUX_HEADS.items()})
    heads.to(device)
    params = list(text_encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    rng = np.random.default_rng(seed + 17)
    eos = tokenizer.eos_token_id
    bar = Progress(steps, 0, desc="text encoder")
    text_encoder.train()
    base = 4 * 10**9 + seed * 10**8
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        captions = []
        for i in range(batch):
            tier = 2 if rng.random() < TIER2_SHARE else 1
            _, objects, caption, _, _ = world.sample_scene_spec(base + step * batch + i, tier)
            if caption and rng.random() < ATTRIBUTE_LIST_SHARE:
                fake = world.Scene(np.zeros(0), caption, "", objects, tier, frozenset())
                caption = attribute_list_caption(rng, fake)
            captions.append(caption)
        ids = tokenize(tokenizer, captions, device)
        states = text_encoder(ids)[0]
        # positions from the first end-of-text token on have seen the whole caption
        after = (ids == eos).long().cumsum(dim=1) > 0
        targets = [caption_targets(c) for c in captions]
        loss = 0.0
        for k, head in heads.items():
            logits = head(states[after])
            per_caption = torch.tensor([t[k] for t in targets], device=device)
            tgt = per_caption[:, None].expand(-1, ids.shape[1])[after]
            loss = loss + nn.functional.cross_entropy(logits, tgt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(float(loss.item()))
    seconds = bar.close()
    text_encoder.eval()
    return {"text_steps": steps, "text_seconds": seconds, "text_loss": bar.loss}


def encode_cache(vae: Any, n: int, device: str, seed: int, rng_seed: int,
                 list_share: float = ATTRIBUTE_LIST_SHARE,
                 name_probability: float = world.NAME_PROBABILITY,
                 short_share: float = 0.0) -> tuple[Any, list[str]]:
    """Pre-encode ``n`` training scenes to latent (mean, std, object mask) triples.

    The mask marks, at latent resolution, every latent pixel whose patch of the
    image holds part of an object (for ``--object-weight``).
    """
    import torch

    rng = np.random.default_rng(rng_seed)
    means, stds, masks, captions = [], [], [], []
    vae.eval()
    chunk = 256
    base = 10**9 + seed * 10**8
    with torch.no_grad():
        for i in range(0, n, chunk):
            k = min(chunk, n - i)
            images, caps = training_batch(base + i, k, rng, list_share, name_probability,
                                          short_share)
            dist = vae.encode(to_tensor(images, device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
            masks.append(torch.from_numpy(object_mask(images, dist.mean.shape[-1])))
            captions.extend(caps)
    return (torch.cat(means), torch.cat(stds), torch.cat(masks)), captions


def object_pixels(images: np.ndarray) -> np.ndarray:
    """(N, H, W) bool: the pixels of ``images`` that belong to an object.

    Every scene's top-left pixel is background (no object reaches a corner).
    """
    return (images != images[:, :1, :1, :]).any(-1)


def object_mask(images: np.ndarray, size: int) -> np.ndarray:
    """(N, 1, size, size) bool: which size x size patches of ``images`` hold an object pixel."""
    n, h, w, _ = images.shape
    pixels = object_pixels(images)
    f = h // size
    return pixels.reshape(n, size, f, size, w // size).any(axis=(2, 4))[:, None]


class Denoiser:
    """The pipeline's UNet as a one-step estimator of clean latents, for decoder fine-tuning.

    A sampled image ends on the UNet's estimate of a latent, not on an encoder's
    latent; decoding those estimates back to the real scene teaches the decoder
    the UNet's kind of error (soft corners, faint points) rather than the encoder's.
    """

    def __init__(self, unet: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                 max_t: int, device: str, seed: int) -> None:
        import torch

        self.unet, self.text_encoder, self.tokenizer = unet, text_encoder, tokenizer
        self.scheduler = scheduler
        self.max_t, self.device = max_t, device
        self.gen = torch.Generator().manual_seed(seed)

    @classmethod
    def load(cls, folder: Path, max_t: int, device: str, seed: int) -> Denoiser:
        from diffusers import DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
            if not (folder / sub).is_dir():
                raise TrainError(f"--decoder-denoised: no {sub}/ folder in {folder}")
        scheduler = DDPMScheduler.from_pretrained(str(folder / "scheduler"))
        # Checked before the UNet loads, against the timesteps the UNet was trained on.
        if not 0 < max_t <= scheduler.config.num_train_timesteps:
            raise TrainError(f"--decoder-denoised must be in 1..{scheduler.config.num_train_timesteps}"
                             f", got {max_t}")
        unet = UNet2DConditionModel.from_pretrained(str(folder / "unet")).to(device).eval()
        text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder")).to(device).eval()
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        return cls(unet, text_encoder, tokenizer, scheduler, max_t, device, seed)

    def estimate(self, z: Any, captions: list[str], scaling_factor: float) -> Any:
        """The UNet's one-step estimate of ``z`` (unscaled latents) from a noised copy."""
        import torch

        latents = z * scaling_factor
        t = torch.randint(0, self.max_t, (len(z),), generator=self.gen).to(self.device)
        noise = torch.randn(latents.shape, generator=self.gen).to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        cond = self.text_encoder(tokenize(self.tokenizer, captions, self.device))[0]
        eps = self.unet(noisy, t, encoder_hidden_states=cond).sample
        return clean_estimate(self.scheduler, noisy, eps, t) / scaling_factor

    def sample(self, z: Any, captions: list[str], scaling_factor: float, guidance: float,
               steps: int = SAMPLED_STEPS) -> Any:
        """``z`` (unscaled latents) noised to one timestep of the folder's own ``steps``-step
        DDIM schedule below ``max_t`` and sampled from there to the end with classifier-free
        guidance, as the pipeline samples: the decoder then sees what guidance does to a
        shape in the last steps (bowed sides, soft points), not only a one-step estimate."""
        import torch
        from diffusers import DDIMScheduler

        sampler = DDIMScheduler.from_config(self.scheduler.config)
        sampler.set_timesteps(steps)
        timesteps = [t for t in sampler.timesteps if int(t) < self.max_t]
        if not timesteps:
            raise TrainError(f"--decoder-denoised {self.max_t}: no step of the {steps}-step "
                             f"schedule lies below it (its last is {int(sampler.timesteps[-1])})")
        first = int(torch.randint(len(timesteps), (1,), generator=self.gen))
        noise = torch.randn(z.shape, generator=self.gen).to(self.device)
        latents = sampler.add_noise(z * scaling_factor, noise, timesteps[first].reshape(1))
        cond = self.text_encoder(tokenize(self.tokenizer, captions, self.device))[0]
        uncond = self.text_encoder(tokenize(self.tokenizer, [""] * len(captions), self.device))[0]
        states = torch.cat([uncond, cond])
        for t in timesteps[first:]:
            eps_u, eps_c = self.unet(torch.cat([latents] * 2), t,
                                     encoder_hidden_states=states).sample.chunk(2)
            latents = sampler.step(eps_u + guidance * (eps_c - eps_u), t, latents).prev_sample
        return latents / scaling_factor


class SampledLatents:
    """A pool of rendered scenes and the latents the UNet samples for them (``Denoiser.sample``),
    drawn once and decoded many times: sampling costs several guided UNet passes per image,
    a decoder step one pass."""

    def __init__(self, vae: Any, denoiser: Denoiser, size: int, batch: int, guidance: float,
                 seed: int, device: str) -> None:
        import torch

        images_parts: list[np.ndarray] = []
        latent_parts: list[Any] = []
        base = 4 * 10**9 + seed * 10**8
        bar = Progress(-(-size // batch), 0, desc="sampling")
        with torch.no_grad():
            for i, start in enumerate(range(0, size, batch)):
                seeds = range(base + start, base + min(size, start + batch))
                images, captions, _ = world.render_batch(seeds, tier=1 if i % 4 else 2,
                                                         caption_style="random")
                z = vae.encode(to_tensor(images, device)).latent_dist.sample()
                latent_parts.append(denoiser.sample(z, captions, vae.config.scaling_factor,
                                                    guidance))
                images_parts.append(images)
                bar.update()
        self.seconds = bar.close()
        self.images = np.concatenate(images_parts)
        self.latents = torch.cat(latent_parts)
        self.rng = np.random.default_rng((seed, 91))

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, n: int) -> tuple[np.ndarray, Any]:
        """``n`` pairs (real images, sampled latents) drawn at random from the pool."""
        index = self.rng.choice(len(self), size=n, replace=False)
        return self.images[index], self.latents[index]


def weighted_image_mean(error: Any, weight: Any) -> Any:
    """Per-image weighted mean of ``error`` (N, C, H, W), normalised by the weights, so a
    weighted loss keeps the unweighted one's scale and the learning rate its meaning."""
    return (error * weight).mean(dim=(1, 2, 3)) / weight.mean(dim=(1, 2, 3))


def object_neighbourhood(images: np.ndarray, reach: int = 2) -> np.ndarray:
    """(N, 1, H, W) float: 1 on object pixels and on background within ``reach`` of one."""
    import torch

    pixels = torch.from_numpy(object_pixels(images)[:, None]).float()
    return torch.nn.functional.max_pool2d(pixels, 2 * reach + 1, stride=1, padding=reach).numpy()


def as_small_stars(scenes: list[world.Scene], share: float,
                   rng: np.random.Generator) -> np.ndarray | None:
    """The scenes' images with the first ``share`` of them (one-object scenes) repainted as
    small stars (same colour, place and background, new radius and angle); None when there
    is nothing to do."""
    k = int(round(share * len(scenes)))
    if k == 0 or any(s.tier != 1 for s in scenes):
        return None
    lo, hi = world.SIZE_RADII["small"]
    stars = [[dataclasses.replace(s.objects[0], shape="star", size="small",
                                  radius=float(rng.uniform(lo, hi)),
                                  angle=float(rng.uniform(0, 2 * np.pi)))] for s in scenes[:k]]
    images = np.stack([s.image for s in scenes])
    images[:k] = world.render_from_specs([s.background for s in scenes[:k]], stars)
    return images


def finetune_decoder(vae: Any, steps: int, batch: int, device: str, seed: int,
                     denoiser: Denoiser | None = None, object_weight: float = 0.0,
                     small_stars: float = 0.0, sampled: SampledLatents | None = None) -> dict:
    """Sharpen the decoder with the encoder frozen, as Stable Diffusion's ft-MSE decoder.

    The latent space the UNet learned stays exactly the same; only the map back
    to pixels improves. Latents are sampled from the posterior, like the UNet's
    training targets, so the decoder also cleans up slightly-off latents. With a
    ``denoiser``, every other batch is decoded from the UNet's estimate of the
    latent instead, and still has to give back the real scene; with ``sampled``, every
    other batch is drawn from that pool of guided samples instead. ``small_stars`` P redraws
    that share of each one-object batch as small stars: the decoder reconstructs and draws
    no samples, so extra stars teach it the hardest scene without shifting what is generated.
    """
    import torch

    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.0)
    bar = Progress(steps, 0, desc="decoder")
    vae.encoder.eval()
    vae.decoder.train()
    base = 3 * 10**9 + seed * 10**8
    star_rng = np.random.default_rng((seed, 77))
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 5e-4 * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        denoised = (denoiser is not None or sampled is not None) and step % 2 == 1
        if denoised and sampled is not None:
            images, z = sampled.draw(batch)
            x, z = to_tensor(images, device), z.to(device)
        else:
            images, captions, scenes = world.render_batch(
                range(base + step * batch, base + (step + 1) * batch),
                tier=1 if step % 4 else 2, caption_style="random" if denoised else "empty")
            if small_stars and not denoised:
                stars = as_small_stars(scenes, small_stars, star_rng)
                images = images if stars is None else stars
            x = to_tensor(images, device)
            with torch.no_grad():
                z = vae.encode(x).latent_dist.sample()
                if denoised:
                    z = denoiser.estimate(z, captions, vae.config.scaling_factor)
        recon = vae.decode(z).sample
        diff = recon - x
        error = diff.abs() + diff ** 2
        if object_weight:
            # A small star is a few dozen of 4,096 pixels: without this the loss is the background's.
            weight = 1.0 + object_weight * torch.from_numpy(object_neighbourhood(images)).to(device)
            loss = weighted_image_mean(error, weight).mean()
        else:
            loss = error.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.update(loss.item())
    seconds = bar.close()
    vae.requires_grad_(False)
    vae.eval()
    return {"decoder_steps": steps, "decoder_seconds": seconds, "decoder_loss": bar.loss}


def decoder_only(args: argparse.Namespace) -> None:
    """Fine-tune the decoder of the finished pipeline in ``args.out`` and save it in place."""
    from diffusers import AutoencoderKL

    small_stars = float(getattr(args, "decoder_small_stars", 0.0) or 0.0)
    if not 0.0 <= small_stars <= 1.0:
        raise TrainError(f"--decoder-small-stars must be in [0, 1], got {small_stars}")
    out = Path(args.out)
    if not (out / "vae" / "config.json").is_file():
        raise TrainError(f"--decoder-only: no pipeline with a vae/ folder in {out}")
    device = args.device or "cpu"
    vae = AutoencoderKL.from_pretrained(str(out / "vae")).to(device)
    steps = int(args.decoder_steps or min(1200, int(args.steps)))
    object_weight = float(getattr(args, "object_weight", 0.0) or 0.0)
    max_t = int(getattr(args, "decoder_denoised", 0) or 0)
    pool_size = int(getattr(args, "decoder_sampled", 0) or 0)
    guidance = float(getattr(args, "decoder_guidance", DEFAULT_SAMPLED_GUIDANCE))
    if pool_size < 0:
        raise TrainError(f"--decoder-sampled must be positive, got {pool_size}")
    if pool_size and not max_t:
        raise TrainError("--decoder-sampled needs --decoder-denoised T, the highest timestep "
                         "sampling starts from")
    batch = state_batch(getattr(args, "preset", "full"), int(args.batch_size))
    seed = int(args.seed or 0)
    denoiser = Denoiser.load(out, max_t, device, seed) if max_t else None
    sampled = None
    if pool_size:
        vae.eval()
        sampled = SampledLatents(vae, denoiser, max(pool_size, batch), batch, guidance, seed, device)
        denoiser = None
    info = finetune_decoder(vae, steps, batch, device, seed, denoiser, object_weight,
                            small_stars, sampled)
    if max_t:
        info["decoder_denoised_max_t"] = max_t
    if sampled is not None:
        info.update({"decoder_sampled": len(sampled), "decoder_sampled_guidance": guidance,
                     "decoder_sampling_seconds": sampled.seconds})
    if object_weight:
        info["decoder_object_weight"] = object_weight
    if small_stars:
        info["decoder_small_stars"] = small_stars
    vae.save_pretrained(str(out / "vae"), safe_serialization=True)
    merge_training_state(out, info)
    print(f"saved {out / 'vae'}")


def merge_training_state(out: Path, info: dict) -> None:
    """Add a later phase's ``info`` to the ``training_state.json`` of the pipeline in ``out``."""
    state_file = out / "training_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    state.update(info)
    write_json(state_file, state)


def star_scene_weights(captions: list[str], star_weight: float) -> np.ndarray:
    """Per-scene loss weights (float32): ``star_weight`` for a caption the world's grammar
    reads as asking for a star, 1 for every other caption, the empty one and colour or
    shape lists such as "star, circle" (negative prompts' form, which draw nothing)."""
    def names_star(caption: str) -> bool:
        parsed = world.parse_caption(caption) if caption else None
        objects = (parsed.get("objects") or [parsed]) if parsed else []
        return any(o.get("shape") == "star" for o in objects)
    return np.array([star_weight if names_star(c) else 1.0 for c in captions], np.float32)


def named_object_colours(captions: list[str], usable: np.ndarray | None = None,
                         require: tuple[str, ...] = ()) -> np.ndarray:
    """Per caption, the index of the object colour a one-object caption names, else -1;
    also -1 where ``usable`` (a bool per palette colour) rules that colour out, or where
    the caption leaves out one of the attributes in ``require`` (e.g. "size")."""
    def colour(caption: str) -> int:
        parsed = world.parse_caption(caption) if caption else None
        if parsed is None or parsed["tier"] != 1 or not parsed["colour"]:
            return -1
        if any(not parsed[key] for key in require):
            return -1
        index = world.COLOUR_NAMES.index(parsed["colour"])
        return index if usable is None or usable[index] else -1
    return np.array([colour(c) for c in captions], np.int64)


def empty_field_latents(vae: Any, device: str) -> tuple[Any, np.ndarray]:
    """(8, 4, h, w) posterior means of an empty image of each palette colour, unscaled, and
    which of them decode back to that empty field.

    The autoencoder never saw an empty image, and it may encode one as a scene with a
    shape in it; such a latent is no empty field and teaches nothing about one.
    """
    import torch

    fields = np.stack([np.broadcast_to(np.array(world.COLOURS[c], np.uint8),
                                       (world.IMAGE_SIZE, world.IMAGE_SIZE, 3))
                       for c in world.COLOUR_NAMES])
    with torch.no_grad():
        latents = vae.encode(to_tensor(fields, device)).latent_dist.mean
        decoded = (vae.decode(latents).sample.clamp(-1, 1) + 1) * 127.5
    error = (decoded.cpu() - torch.from_numpy(fields).permute(0, 3, 1, 2).float()).abs()
    clean = (error.flatten(1).quantile(0.99, dim=1) < EMPTY_FIELD_TOLERANCE).numpy()
    return latents.cpu(), clean


def scaled_empty_fields(vae: Any, device: str, state: dict) -> tuple[Any, np.ndarray]:
    """:func:`empty_field_latents` at the UNet's latent scale; the clean colours are recorded
    in ``state``."""
    latents, clean = empty_field_latents(vae, device)
    state["empty_field_colours"] = [c for c, ok in zip(world.COLOUR_NAMES, clean, strict=True)
                                    if ok]
    return latents * state["scaling_factor"], clean


def empty_field_inputs(latents: Any, colours: Any, fields: Any, t: Any, share: float,
                       gen: Any, min_t: int = EMPTY_FIELD_MIN_T,
                       blend_low: float = 1.0) -> tuple[Any, Any]:
    """Swap a ``share`` of the rows whose caption names a colour (``colours`` >= 0) for the
    empty field of that colour, at a timestep drawn from ``min_t`` up. With ``blend_low``
    below 1 a swapped row is a blend of its scene and the field, the field's weight drawn
    uniformly from [``blend_low``, 1]: the object fading into a field of its own colour,
    as the sampler's failing images do, while its layout can still be read.

    Returns ``(inputs, t)``: the clean latents to noise, and the timesteps. The caller
    keeps ``latents`` as the target, so the UNet learns to lead a field of the named colour
    back to a scene with the object on another background. No real scene is such a field
    with such a caption, so this teaches only what the data leaves open.
    """
    import torch

    swap = (colours >= 0) & (torch.rand(len(colours), generator=gen) < share)
    high = torch.randint(min_t, TRAIN_TIMESTEPS, (len(colours),), generator=gen)
    # drawn only for blends, so that whole-field runs keep their random stream
    weight = (blend_low + (1.0 - blend_low) * torch.rand(len(colours), generator=gen)
              if blend_low < 1.0 else torch.ones(len(colours)))
    inputs = latents.clone()
    if swap.any():
        w = weight[swap].view(-1, 1, 1, 1).to(latents)
        inputs[swap] = w * fields[colours[swap]].to(latents) + (1 - w) * latents[swap]
    return inputs, torch.where(swap.to(t.device), high.to(t.device), t)


def tokenize(tokenizer: Any, captions: list[str], device: str) -> Any:
    # Padded to the full length, as StableDiffusionPipeline does at inference.
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids.to(device)


def clean_estimate(scheduler: Any, noisy: Any, noise_pred: Any, t: Any) -> Any:
    """x0 from an epsilon prediction: (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    a = scheduler.alphas_cumprod.to(noisy.device)[t].view(-1, 1, 1, 1)
    return (noisy - (1 - a).sqrt() * noise_pred) / a.sqrt()


def min_snr_weights(scheduler: Any, timesteps: Any, gamma: float = MIN_SNR_GAMMA) -> Any:
    import torch

    if gamma <= 0:
        return torch.ones(timesteps.shape, device=timesteps.device)
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


def draw_timesteps(batch: int, gen: Any, low_noise: tuple[float, int] = (0.0, 300)) -> Any:
    """Uniform training timesteps, with share P of them below T for ``low_noise`` (P, T)."""
    import torch

    t = torch.randint(0, TRAIN_TIMESTEPS, (batch,), generator=gen)
    share, bound = low_noise
    if share > 0:
        low = torch.rand(batch, generator=gen) < share
        t = torch.where(low, torch.randint(0, bound, (batch,), generator=gen), t)
    return t


def train_unet(unet: Any, text_encoder: Any, tokenizer: Any, scheduler: Any, cache: tuple,
               captions: list[str], steps: int, batch: int, lr: float, device: str, out: Path,
               start: int, state: dict, modules: dict, seed: int,
               max_seconds: float | None = None, object_weight: float = 0.0,
               snr_gamma: float = MIN_SNR_GAMMA, low_noise: tuple[float, int] = (0.0, 300),
               text_lr: float = 0.0, text_anchor: float = 0.0, star_weight: float = 1.0,
               empty_field: tuple[float, Any, Any] = (0.0, None, None),
               empty_field_options: dict | None = None,
               decoded: tuple[float, int] = (0.0, DECODED_MAX_T)) -> None:
    """Epsilon MSE with min-SNR weighting; ``object_weight`` W counts the latent pixels
    that cover an object 1 + W times, so that the few that carry a corner or a point
    are not outweighed by the flat background.

    ``low_noise`` (share P, bound T) draws P of the timesteps below T. Min-SNR weighting
    all but ignores those steps (a twentieth of the weight at t = 50), yet they are where
    the last DDIM steps decide a square's corners and a star's points, and where guidance
    at 7.5 magnifies any gap between the conditional and unconditional estimates.

    ``text_lr`` > 0 trains the (pre-trained) text encoder as well, so the UNet's loss
    can shape the states it reads; its weight average is kept beside the UNet's.
    ``text_anchor`` W > 0 adds W times the drift of the :func:`anchor_captions` states from
    the encoder the phase began with (``modules["text_encoder_anchor"]``).
    ``star_weight`` W counts scenes whose caption names a star W times, normalised over the
    batch; empty captions and attribute lists keep weight 1, so the unconditional branch
    and negative prompts still learn the world's own mix of shapes.

    ``empty_field`` (share P, scaled field latents, which are clean) noises P of the
    scenes whose caption names the object's colour from an empty field of it
    (:func:`empty_field_inputs`), for the colours whose field is clean;
    ``empty_field_options`` holds ``min_t``, ``blend_low`` and ``layout`` (swap only
    captions that name size and position too).

    ``decoded`` (weight W, bound T) adds W times :func:`decoded_loss.decoded_loss` for the
    scenes noised below T: the decoder's reading of the UNet's clean estimate against its
    reading of the scene, object pixels weighted as in the latent loss."""
    import torch

    from studio.training.decoded_loss import decoded_loss

    ema = modules.get("unet_ema")
    text_ema = modules.get("text_encoder_ema")
    anchor = modules.get("text_encoder_anchor")
    ema_decay = float(state.get("ema", 0.0))
    text_encoder.requires_grad_(text_lr > 0)
    groups = [{"params": list(unet.parameters()), "base_lr": lr}]
    if text_lr > 0:
        groups.append({"params": list(text_encoder.parameters()), "base_lr": text_lr})
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-2)
    if start > 0:
        load_checkpoint(out, modules, {"unet": opt})
    else:
        # the average and the anchor start from the encoder the UNet phase begins with
        for copy_ in (text_ema, anchor):
            if copy_ is not None:
                copy_.load_state_dict(text_encoder.state_dict())
    if anchor is not None:
        anchor_ids = tokenize(tokenizer, anchor_captions(), device)
        with torch.no_grad():
            anchor_states = anchor(anchor_ids)[0]
    means, stds, masks = cache
    n = means.shape[0]
    scene_weight = torch.from_numpy(star_scene_weights(captions, star_weight))
    field_share, fields, clean = empty_field
    field_options = {**EMPTY_FIELD_DEFAULTS, **(empty_field_options or {})}
    # colours whose empty field the autoencoder cannot hold are left alone
    named_colour = (torch.from_numpy(named_object_colours(
        captions, clean, ("size", "position") if field_options["layout"] else ()))
        if field_share else None)
    gen = torch.Generator().manual_seed(seed * 7919 + start)
    bar = Progress(steps, start, desc="unet+text")
    last_save = time.monotonic()
    unet.train()
    text_encoder.train(text_lr > 0)
    sf = state["scaling_factor"]
    warmup = max(1, min(200, steps // 10))
    decoded_weight, decoded_max_t = decoded
    vae = modules["vae"]
    spent = float(state.get("unet_seconds", 0.0))  # time of earlier, interrupted runs
    phase_start = time.monotonic()
    for step in range(start, steps):
        elapsed = spent + time.monotonic() - phase_start
        progress = step / steps
        if max_seconds:
            progress = max(progress, elapsed / max_seconds)
            if progress >= 1.0:
                bar.write(f"time budget reached after {step} steps")
                break
        state["unet_seconds"] = elapsed
        state["unet_steps_done"] = step
        factor = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        idx = torch.randint(0, n, (batch,), generator=gen)
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=gen)) * sf
        latents = latents.to(device)
        noise = torch.randn(latents.shape, generator=gen).to(device)
        t = draw_timesteps(batch, gen, low_noise).to(device)
        if field_share:
            inputs, t = empty_field_inputs(latents, named_colour[idx], fields, t, field_share, gen,
                                           field_options["min_t"], field_options["blend_low"])
            noisy = scheduler.add_noise(inputs, noise, t)
            # the noise that would lead this input to the real scene
            a = scheduler.alphas_cumprod.to(device)[t].view(-1, 1, 1, 1)
            noise = (noisy - a.sqrt() * latents) / (1 - a).sqrt()
        else:
            noisy = scheduler.add_noise(latents, noise, t)
        ids = tokenize(tokenizer, [captions[i] for i in idx.tolist()], device)
        with torch.set_grad_enabled(text_lr > 0):
            cond = text_encoder(ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        error = (pred - noise) ** 2
        per_sample = error.mean(dim=(1, 2, 3))
        if object_weight:
            weight = 1.0 + object_weight * masks[idx].to(device, error.dtype)
            weighted = weighted_image_mean(error, weight)
        else:
            weighted = per_sample
        w = scene_weight[idx].to(device, error.dtype)
        loss = (weighted * min_snr_weights(scheduler, t, snr_gamma) * w).sum() / w.sum()
        low = (t < decoded_max_t).nonzero().flatten() if decoded_weight else t[:0]
        shown = {}
        if len(low):
            # the target is the clean latent, so the loss measures the UNet, not the autoencoder
            estimate = clean_estimate(scheduler, noisy[low], pred[low], t[low])
            per_image = decoded_loss(vae, estimate, latents[low], sf,
                                     masks[idx[low.cpu()]].to(device), object_weight)
            loss = loss + decoded_weight * (per_image * w[low]).sum() / w.sum()
            shown["decoded"] = per_image.mean().item()
        if anchor is not None and text_anchor > 0:
            loss = loss + text_anchor * ((text_encoder(anchor_ids)[0] - anchor_states) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            update_average(ema, unet, ema_decay, step)
        if text_ema is not None:
            update_average(text_ema, text_encoder, ema_decay, step)
        bar.update(per_sample.mean().item(), **shown)
        state["unet_steps_done"] = step + 1
        if time.monotonic() - last_save > CHECKPOINT_EVERY_S and step + 1 < steps:
            save_checkpoint(out, step + 1, modules, {"unet": opt}, {**state, "phase": "unet"})
            # A usable pipeline at every checkpoint, so an interrupted run still leaves a model.
            save_pipeline(out, modules, tokenizer, state)
            last_save = time.monotonic()
    bar.close()
    text_encoder.requires_grad_(False).eval()
    state["unet_seconds"] = spent + time.monotonic() - phase_start
    state["unet_loss"] = bar.loss


def save_pipeline(out: Path, modules: dict, tokenizer: Any, state: dict) -> None:
    """Write the StableDiffusionPipeline folder (fp32 safetensors) into ``out``."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    vae = modules["vae"]
    text_encoder = modules.get("text_encoder_ema", modules["text_encoder"])
    unet = modules.get("unet_ema", modules["unet"])
    vae.register_to_config(scaling_factor=float(state["scaling_factor"]))
    scheduler = DDIMScheduler(
        num_train_timesteps=TRAIN_TIMESTEPS,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        # "leading" starts sampling at t=951 of 1000 for 20 steps: the cosine schedule's
        # last timesteps have almost no signal left, where an epsilon model's x0 estimate
        # (and so the first DDIM step) blows up.
        timestep_spacing="leading",
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out), safe_serialization=True)
    write_json(out / "training_state.json", {k: v for k, v in state.items() if k != "phase"})


def train(args: argparse.Namespace) -> None:
    import torch

    object_weight = float(getattr(args, "object_weight", 0.0) or 0.0)
    if object_weight < 0:
        raise TrainError(f"--object-weight must be zero or positive, got {object_weight}")
    if getattr(args, "decoder_only", False):
        decoder_only(args)
        return
    out = Path(args.out)
    device = args.device or "cpu"
    preset = getattr(args, "preset", "full")
    steps = int(args.steps)
    batch = int(args.batch_size)
    vae_steps = getattr(args, "vae_steps", None)
    vae_steps = int(vae_steps) if vae_steps is not None else min(1200, steps)
    if vae_steps <= 0:
        raise TrainError(f"--vae-steps must be a positive integer, got {vae_steps}")
    seed = int(getattr(args, "seed", 0) or 0)
    ema = float(getattr(args, "ema", 0.0) or 0.0)
    if not 0.0 <= ema < 1.0:
        raise TrainError(f"--ema must be in [0, 1), got {ema}")
    list_share = float(getattr(args, "list_captions", ATTRIBUTE_LIST_SHARE))
    if not 0.0 <= list_share <= 1.0:
        raise TrainError(f"--list-captions must be in [0, 1], got {list_share}")
    name_probability = float(getattr(args, "name_probability", world.NAME_PROBABILITY))
    if not 0.0 <= name_probability <= 1.0:
        raise TrainError(f"--name-probability must be in [0, 1], got {name_probability}")
    snr_gamma = float(getattr(args, "snr_gamma", MIN_SNR_GAMMA))
    if snr_gamma < 0:
        raise TrainError(f"--snr-gamma must be zero or positive, got {snr_gamma}")
    low_share = float(getattr(args, "low_noise_share", 0.0) or 0.0)
    low_max = int(getattr(args, "low_noise_max", 300))
    if not 0.0 <= low_share <= 1.0:
        raise TrainError(f"--low-noise-share must be in [0, 1], got {low_share}")
    if not 0 < low_max <= TRAIN_TIMESTEPS:
        raise TrainError(f"--low-noise-max must be in 1..{TRAIN_TIMESTEPS}, got {low_max}")
    text_lr = float(getattr(args, "text_lr", 0.0) or 0.0)
    if text_lr < 0:
        raise TrainError(f"--text-lr must be zero or positive, got {text_lr}")
    text_anchor = float(getattr(args, "text_anchor", 0.0) or 0.0)
    if text_anchor < 0:
        raise TrainError(f"--text-anchor must be zero or positive, got {text_anchor}")
    short_share = float(getattr(args, "short_captions", 0.0) or 0.0)
    if not 0.0 <= short_share <= 1.0:
        raise TrainError(f"--short-captions must be in [0, 1], got {short_share}")
    field_share = float(getattr(args, "empty_field_share", 0.0) or 0.0)
    if not 0.0 <= field_share <= 1.0:
        raise TrainError(f"--empty-field-share must be in [0, 1], got {field_share}")
    field_options = {
        key: kind(getattr(args, flag, EMPTY_FIELD_DEFAULTS[key]))
        for key, flag, kind in (("min_t", "empty_field_min_t", int),
                                ("blend_low", "empty_field_blend", float),
                                ("layout", "empty_field_layout", bool))}
    if not 0 <= field_options["min_t"] < TRAIN_TIMESTEPS:
        raise TrainError(f"--empty-field-min-t must be in 0..{TRAIN_TIMESTEPS - 1}, "
                         f"got {field_options['min_t']}")
    if not 0.0 <= field_options["blend_low"] <= 1.0:
        raise TrainError(f"--empty-field-blend must be in [0, 1], "
                         f"got {field_options['blend_low']}")
    star_weight = float(getattr(args, "star_weight", 1.0))
    if star_weight <= 0:
        raise TrainError(f"--star-weight must be positive, got {star_weight}")
    if text_anchor and not text_lr:
        raise TrainError("--text-anchor holds the text encoder that --text-lr trains; give both")
    layers = getattr(args, "layers_per_block", None)
    fresh_unet = bool(getattr(args, "fresh_unet", False))
    if fresh_unet and not getattr(args, "init_from", None):
        raise TrainError("--fresh-unet keeps the autoencoder and text encoder of --init-from; "
                         "give it, or leave --fresh-unet out to train everything from scratch")
    if layers is not None and int(layers) <= 0:
        raise TrainError(f"--layers-per-block must be a positive integer, got {layers}")
    decoded_weight = float(getattr(args, "decoded_weight", 0.0) or 0.0)
    if decoded_weight < 0:
        raise TrainError(f"--decoded-weight must be zero or positive, got {decoded_weight}")
    decoded_max_t = int(getattr(args, "decoded_max_t", DECODED_MAX_T))
    if not 0 < decoded_max_t <= TRAIN_TIMESTEPS:
        raise TrainError(f"--decoded-max-t must be in 1..{TRAIN_TIMESTEPS}, got {decoded_max_t}")
    widen = int(getattr(args, "widen", 1))
    if widen <= 0:
        raise TrainError(f"--widen must be a positive integer, got {widen}")
    if getattr(args, "reward_only", False):
        # after the checks above: the reward phase reads the same recipe options
        from studio.training.reward_tune import reward_only

        reward_only(args)
        return
    cache_size = getattr(args, "cache_size", None) or int(min(50000, max(64, steps * batch // 4)))
    torch.manual_seed(seed)

    saved = read_checkpoint_state(out) if args.resume else None
    init_from = Path(args.init_from) if getattr(args, "init_from", None) else None
    if init_from is not None and not (init_from / "unet" / "config.json").is_file():
        raise TrainError(f"--init-from: no pipeline with a unet/ folder in {init_from}")
    vocab_dir = out / "tokenizer" if saved is not None else (
        init_from / "tokenizer" if init_from is not None else None)
    if vocab_dir is not None and (vocab_dir / "vocab.json").is_file():
        # the checkpoint's (or the earlier run's) models use this exact vocabulary
        from transformers import CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(
            str(vocab_dir), model_max_length=MAX_LENGTH, pad_token="<|endoftext|>")
        # keep the CLIP-format vocabulary files next to the saved tokenizer
        (out / "tokenizer").mkdir(parents=True, exist_ok=True)
        for name in ("vocab.json", "merges.txt"):
            if (vocab_dir / name).is_file() and vocab_dir != out / "tokenizer":
                shutil.copyfile(vocab_dir / name, out / "tokenizer" / name)
    else:
        tokenizer = build_tokenizer(out / "tokenizer")
    # A UNet grown from --init-from keeps its timestep embedding's width (unet_growth), so it
    # is rebuilt by growing; a fresh one is built at its width.
    grow = widen if init_from is not None and not fresh_unet else 1
    if saved is not None:
        # the checkpoint holds a UNet of the depth and width its run grew or built
        extra = saved.get("extra", {})
        layers = extra.get("layers_per_block", layers)
        channels = extra.get("block_out_channels")
        widen = int(channels[0]) // PRESETS[preset]["unet_channels"][0] if channels else 1
        grow = widen if extra.get("init_from") and not extra.get("fresh_unet") else 1
    vae, unet, text_encoder, noise_scheduler = build_models(
        preset, tokenizer, int(layers or 1), widen=1 if grow > 1 else widen)
    phase, start = "vae", 0
    state_init: dict[str, Any] = {}
    if init_from is not None and saved is None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        vae = AutoencoderKL.from_pretrained(str(init_from / "vae"))
        if not fresh_unet:
            unet = UNet2DConditionModel.from_pretrained(str(init_from / "unet"))
            if layers is not None and int(layers) != unet.config.layers_per_block:
                from studio.training.unet_growth import deepen_unet

                if int(layers) < unet.config.layers_per_block:
                    raise TrainError(f"--layers-per-block {layers}: the UNet in {init_from} "
                                     f"already has {unet.config.layers_per_block}")
                unet = deepen_unet(unet, int(layers))
        if (init_from / "text_encoder" / "config.json").is_file():
            text_encoder = CLIPTextModel.from_pretrained(str(init_from / "text_encoder"))
        state_init = {"scaling_factor": float(vae.config.scaling_factor),
                      "init_from": str(init_from),
                      **({"fresh_unet": True} if fresh_unet else {})}
        phase = "text"
        tokenizer.save_pretrained(str(out / "tokenizer"))
    if grow > 1:
        from studio.training.unet_growth import widen_unet

        unet = widen_unet(unet, grow, seed=seed)
    vae.to(device)
    unet.to(device)
    text_encoder.to(device)
    modules = {"vae": vae, "unet": unet, "text_encoder": text_encoder}
    if ema > 0:
        # Every checkpoint carries the average, so --resume continues it.
        modules["unet_ema"] = copy.deepcopy(unet).requires_grad_(False).eval()
        if text_lr > 0:
            modules["text_encoder_ema"] = copy.deepcopy(text_encoder).requires_grad_(False).eval()
    if text_anchor > 0:
        # Checkpointed, so a resumed run holds the states to the same starting encoder.
        modules["text_encoder_anchor"] = copy.deepcopy(text_encoder).requires_grad_(False).eval()
    state: dict[str, Any] = {
        "preset": preset, "steps": steps, "vae_steps": vae_steps, "batch_size": batch,
        "seed": seed, "cache_size": cache_size, "device": device,
        "threads": torch.get_num_threads(), "ema": ema, "list_captions": list_share,
        **({"object_weight": object_weight} if object_weight else {}),
        **({"name_probability": name_probability}
           if name_probability != world.NAME_PROBABILITY else {}),
        **({"snr_gamma": snr_gamma} if snr_gamma != MIN_SNR_GAMMA else {}),
        **({"low_noise_share": low_share, "low_noise_max": low_max} if low_share else {}),
        **({"text_lr": text_lr} if text_lr else {}),
        **({"text_anchor": text_anchor} if text_anchor else {}),
        **({"star_weight": star_weight} if star_weight != 1.0 else {}),
        **({"short_captions": short_share} if short_share else {}),
        **({"decoded_weight": decoded_weight, "decoded_max_t": decoded_max_t}
           if decoded_weight else {}),
        **({"empty_field_share": field_share} if field_share else {}),
        **({f"empty_field_{k}": v for k, v in field_options.items()
            if v != EMPTY_FIELD_DEFAULTS[k]}
           if field_share else {}),
        "layers_per_block": int(unet.config.layers_per_block),
        "block_out_channels": [int(c) for c in unet.config.block_out_channels],
    }
    state.update(state_init)
    if saved is not None:
        extra = saved.get("extra", {})
        phase = extra.get("phase", "vae")
        start = int(saved.get("step", 0))
        for key in ("vae_seconds", "unet_seconds", "scaling_factor", "vae_loss", "unet_steps_done",
                    "unet_loss", "text_steps", "text_seconds", "text_loss", "init_from",
                    "fresh_unet"):
            if key in extra:
                state[key] = extra[key]
        if phase != "vae":
            # phase boundaries save every module; later steps restore the optimiser too
            load_checkpoint(out, modules)
    started = time.monotonic()
    if phase == "vae":
        train_vae(vae, vae_steps, state_batch(preset, batch), device, out, start, state, seed)
        start = 0
        phase = "text"
        save_checkpoint(out, 0, modules, None, {**state, "phase": phase})
    vae.requires_grad_(False)
    if phase == "text":
        text_steps = getattr(args, "text_steps", None)
        text_steps = int(text_steps) if text_steps is not None else (0 if init_from else 400)
        if text_steps > 0:
            state.update(pretrain_text_encoder(text_encoder, tokenizer, text_steps,
                                               128 if preset == "full" else 4, device, seed))
        phase = "unet"
        save_checkpoint(out, 0, modules, None, {**state, "phase": phase})
    if phase != "decoder":
        cache, captions = encode_cache(vae, cache_size, device, seed, seed + 1, list_share,
                                       name_probability, short_share)
        if "scaling_factor" not in state:
            state["scaling_factor"] = float(1.0 / cache[0].std())
        max_minutes = getattr(args, "max_minutes", None)
        train_unet(unet, text_encoder, tokenizer, noise_scheduler, cache, captions, steps, batch,
                   float(getattr(args, "lr", 6e-4)), device, out, start, state, modules, seed,
                   max_seconds=max_minutes * 60 if max_minutes else None,
                   object_weight=object_weight, snr_gamma=snr_gamma,
                   low_noise=(low_share, low_max), text_lr=text_lr, text_anchor=text_anchor,
                   star_weight=star_weight,
                   empty_field=(field_share, *scaled_empty_fields(vae, device, state))
                   if field_share else (0.0, None, None),
                   empty_field_options=field_options,
                   decoded=(decoded_weight, decoded_max_t))
    decoder_steps = getattr(args, "decoder_steps", None)
    decoder_steps = int(decoder_steps) if decoder_steps is not None else min(1200, steps)
    if decoder_steps > 0:
        # the UNet is final: keep a usable pipeline and a resumable state before the last phase
        save_pipeline(out, modules, tokenizer, state)
        save_checkpoint(out, steps, modules, None, {**state, "phase": "decoder"})
        state.update(finetune_decoder(vae, decoder_steps, state_batch(preset, batch), device,
                                      seed))
    state["wall_seconds_this_run"] = time.monotonic() - started
    state["parameters"] = {k: sum(p.numel() for p in m.parameters()) for k, m in modules.items()
                           if not k.endswith(("_ema", "_anchor"))}
    save_pipeline(out, modules, tokenizer, state)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    print(f"saved {out}")


def state_batch(preset: str, batch: int) -> int:
    """Autoencoder batch: smaller than the UNet's, the decoder works at full resolution."""
    return max(1, min(batch, PRESETS[preset]["vae_batch"]))
