"""Train ``models/prompt-writer``: a small GPT-2 that writes shapes-world prompts.

The model is a plain transformers GPT-2 causal LM with its own byte-level BPE
tokenizer and a chat template, so ``AutoModelForCausalLM`` / ``AutoTokenizer``
load it like any Hugging Face chat model. It learns three tasks from synthetic
text rendered on the fly:

* idea -> prompt (chat): "something warm and calm" -> "a small orange circle
  in the center on a blue background";
* completion (chat): "complete: a small red" -> "a small red star at the top";
* plain continuation (no template): "a large blue" -> " square on the left ...".

Every target prompt is built from the world's vocabulary and checked with
``world.parse_caption``, so the model only ever sees valid prompts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from studio.training import world
from studio.training.common import (
    CHECKPOINT_DIR,
    Progress,
    TrainError,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_json,
)
from studio.training.train_vae import Budget, cosine_lr

DEFAULT_STEPS = 2600
DEFAULT_BATCH_SIZE = 32

BOS, END, PAD = "<|bos|>", "<|end|>", "<|pad|>"
USER, ASSISTANT, SYSTEM = "<|user|>", "<|assistant|>", "<|system|>"
SPECIAL_TOKENS = [PAD, BOS, END, USER, ASSISTANT, SYSTEM]

# System messages are left out: the model was trained without them, and the
# studio's prompt pane may send one; dropping it keeps the input in-distribution.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "<|user|>{{ message['content'] | trim }}<|end|>"
    "{%- elif message['role'] == 'assistant' -%}"
    "<|assistant|>{{ message['content'] | trim }}<|end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)

MODEL_CONFIG = {"n_layer": 4, "n_embd": 160, "n_head": 4, "n_positions": 128}
VOCAB_SIZE = 1024
MAX_LEN = 96

WARM = ("red", "orange", "yellow")
COLD = ("blue", "purple", "white")
COOL = ("blue", "green", "purple")
SOFT = ("blue", "green", "white", "purple")
CHROMATIC = ("red", "orange", "yellow", "green", "blue", "purple")
MONO = ("black", "white")


@dataclass
class Want:
    """Constraints an idea puts on the prompt; ``None`` leaves an attribute free."""

    shape: set[str] | None = None
    colour: set[str] | None = None
    background: set[str] | None = None
    size: str | None = None
    position: str | None = None
    named: set[str] = field(default_factory=set)

    def merge(self, other: Want) -> Want | None:
        out = Want(named=self.named | other.named)
        for key in ("shape", "colour", "background"):
            a, b = getattr(self, key), getattr(other, key)
            if a is not None and b is not None:
                both = a & b
                if not both:
                    return None
                setattr(out, key, both)
            else:
                setattr(out, key, a if a is not None else b)
        for key in ("size", "position"):
            a, b = getattr(self, key), getattr(other, key)
            if a and b and a != b:
                return None
            setattr(out, key, a or b)
        if out.colour is not None and out.background is not None and not any(
                c != b for c in out.colour for b in out.background):
            return None  # the object's colour must differ from the background
        return out


def _w(**kw) -> Want:
    named = set()
    for key in ("shape", "colour", "background", "size", "position"):
        if kw.get(key) is not None:
            named.add(key)
            if key in ("shape", "colour", "background"):
                kw[key] = set(kw[key])
    return Want(named=named, **kw)


# Adjectives: (words, constraints). Colour sets say what the object may be,
# background sets what the background may be.
ADJECTIVES: list[tuple[tuple[str, ...], Want]] = [
    (("warm", "cosy", "cozy", "toasty", "autumnal"), _w(colour=WARM, background=WARM + ("black", "white", "purple"))),
    (("cold", "icy", "frosty", "wintry", "chilly", "frozen"), _w(colour=COLD, background=COLD + ("black",))),
    (("cool", "fresh", "breezy"), _w(colour=COOL, background=COOL + ("white",))),
    (("calm", "peaceful", "quiet", "serene", "gentle", "soft", "relaxing", "soothing", "still"),
     _w(colour=SOFT, background=SOFT)),
    (("fiery", "angry", "hot", "burning", "passionate", "furious", "intense"),
     _w(colour=("red", "orange"), background=("black", "yellow", "red", "orange"))),
    (("sunny", "cheerful", "happy", "joyful", "bright", "playful", "sunlit"),
     _w(colour=("yellow", "orange"), background=("blue", "white", "green"))),
    (("dark", "gloomy", "mysterious", "spooky", "moody", "sinister", "nocturnal"),
     _w(background=("black", "purple"))),
    (("natural", "leafy", "earthy", "green", "grassy", "organic"), _w(colour=("green",))),
    (("royal", "regal", "magical", "mystic", "dreamy"), _w(colour=("purple",))),
    (("tiny", "little", "small", "minimal", "shy", "lonely", "humble", "delicate", "lone",
      "distant", "modest"), _w(size="small")),
    (("big", "huge", "bold", "giant", "loud", "proud", "massive", "large", "enormous",
      "dominant"), _w(size="large")),
    (("centered", "balanced", "focused", "symmetric", "central"), _w(position="center")),
    (("rising", "high", "floating", "lifted", "soaring"), _w(position="top")),
    (("falling", "sinking", "grounded", "low", "fallen", "heavy"), _w(position="bottom")),
    (("colourful", "colorful", "vivid", "vibrant", "lively"), _w(colour=CHROMATIC, background=CHROMATIC)),
    (("monochrome", "stark", "austere", "minimalist", "graphic"), _w(colour=MONO, background=MONO)),
    (("ominous", "dramatic"), _w(colour=("red", "purple"), background=("black",))),
    (("pure", "clean", "clinical", "snowy", "pale"), _w(colour=("white",), background=("blue", "black", "purple"))),
]
for _name in world.COLOUR_NAMES:
    if _name != "green":  # "green" is already an adjective above
        ADJECTIVES.append(((_name,), _w(colour=(_name,))))
ADJECTIVES.append((("reddish",), _w(colour=("red", "orange"))))
ADJECTIVES.append((("bluish", "blueish"), _w(colour=("blue", "purple"))))

NOUNS: list[tuple[tuple[str, ...], Want]] = [
    (("thing", "shape", "object", "form", "figure", "one", "mark", "symbol"), _w()),
    (("star", "sparkle", "twinkle", "starfish", "spark", "flower", "firework", "asterisk"),
     _w(shape=("star",))),
    (("circle", "ball", "dot", "coin", "bubble", "wheel", "orb", "ring", "button", "disc",
      "planet", "eye", "pebble", "balloon", "drop"), _w(shape=("circle",))),
    (("square", "box", "block", "window", "tile", "crate", "cube", "brick", "diamond", "stamp",
      "present", "frame", "card"), _w(shape=("square",))),
    (("triangle", "mountain", "pyramid", "tent", "arrow", "roof", "slice", "sail", "peak",
      "wedge", "flame", "spike"), _w(shape=("triangle",))),
    (("sun",), _w(shape=("circle",), colour=("yellow", "orange"), background=("blue", "white"))),
    (("moon", "full moon"), _w(shape=("circle",), colour=("white", "yellow"), background=("black", "blue", "purple"))),
    (("sunset",), _w(shape=("circle",), colour=("orange", "red", "yellow"), background=("purple", "blue", "black"), position="bottom")),
    (("sunrise", "dawn"), _w(shape=("circle",), colour=("yellow", "orange"), background=("blue", "purple"), position="top")),
    (("night sky", "starry night"), _w(shape=("star",), background=("black", "blue"))),
    (("apple", "cherry", "tomato", "ruby"), _w(shape=("circle",), colour=("red",))),
    (("lemon", "egg yolk"), _w(shape=("circle",), colour=("yellow",))),
    (("pearl", "snowball"), _w(shape=("circle",), colour=("white",))),
    (("emerald", "leaf", "frog", "tree"), _w(colour=("green",))),
    (("sapphire", "ocean", "sea", "wave"), _w(colour=("blue",))),
    (("amethyst", "grape", "plum"), _w(colour=("purple",))),
    (("fire", "ember", "campfire", "lava"), _w(colour=("red", "orange"))),
    (("snowflake", "frost"), _w(shape=("star",), colour=("white",), background=("blue", "black", "purple"))),
    (("iceberg", "glacier"), _w(shape=("triangle",), colour=("white",), background=("blue",))),
    (("volcano",), _w(shape=("triangle",), colour=("red", "orange", "black"))),
    (("christmas tree", "pine"), _w(shape=("triangle",), colour=("green",))),
    (("stop sign", "alarm"), _w(colour=("red",))),
    (("traffic light",), _w(shape=("circle",), colour=("red", "yellow", "green"), background=("black",))),
    (("lonely star", "single star"), _w(shape=("star",), size="small")),
]

SETTINGS: list[tuple[tuple[str, ...], Want]] = [
    (("at night", "in the night", "in the dark", "in space", "at midnight"), _w(background=("black",))),
    (("in the sky", "in the sea", "in the ocean", "underwater", "on the water"), _w(background=("blue",))),
    (("in the snow", "on paper", "in the fog", "on a white wall"), _w(background=("white",))),
    (("in the grass", "in the forest", "in a field", "in the garden"), _w(background=("green",))),
    (("in the desert", "on the sand", "in the sunshine"), _w(background=("yellow", "orange"))),
    (("at dusk", "in the twilight", "in a dream"), _w(background=("purple",))),
    (("on the left", "to the left", "on the left side", "at the left"), _w(position="left")),
    (("on the right", "to the right", "on the right side", "at the right"), _w(position="right")),
    (("at the top", "up high", "in the air", "above everything"), _w(position="top")),
    (("at the bottom", "down low", "on the ground", "on the floor"), _w(position="bottom")),
    (("in the middle", "in the center", "in the centre", "right in the middle"), _w(position="center")),
    (("in warm colours", "in warm colors", "in warm tones"), _w(colour=WARM, background=WARM + ("black", "white"))),
    (("in cold colours", "in cold colors", "in cool tones"), _w(colour=COLD, background=COLD + ("black",))),
]

RANDOM_IDEAS = (
    "", "anything", "surprise me", "something", "random", "a shape", "whatever", "an image",
    "a picture", "something nice", "a prompt", "make something", "any shape", "pick one",
    "something interesting", "a random scene", "draw something", "an idea",
)
COLOUR_PHRASES = ("{a} colours", "{a} colors", "{a} tones", "only {a} colours", "{a} palette")
PAIR_WORDS = {
    "to the left of": ("next to", "to the left of", "left of", "beside", "and then"),
    "to the right of": ("to the right of", "right of", "after"),
    "above": ("above", "over", "on top of"),
    "below": ("below", "under", "beneath"),
}
COMPLETE_WORDS = ("complete:", "continue:", "finish:", "complete this prompt:", "finish this:",
                  "continue this prompt:", "complete")


def _choice(rng: np.random.Generator, seq):
    return seq[int(rng.integers(0, len(seq)))]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _realise(rng: np.random.Generator, want: Want) -> dict[str, str]:
    """Pick concrete tier-1 attributes that satisfy ``want``."""
    shape = _choice(rng, sorted(want.shape or world.SHAPES))
    bg_options = sorted(want.background or world.COLOUR_NAMES)
    colour_options = sorted(want.colour or world.COLOUR_NAMES)
    for _ in range(20):
        bg = _choice(rng, bg_options)
        colour = _choice(rng, colour_options)
        if colour != bg:
            break
    else:
        bg = _choice(rng, [c for c in world.COLOUR_NAMES if c != colour])
    size = want.size or _choice(rng, world.SIZES)
    position = want.position or _choice(rng, world.POSITIONS)
    return {"shape": shape, "colour": colour, "background": bg, "size": size,
            "position": position}


def format_prompt(rng: np.random.Generator, attrs: dict[str, str | None]) -> str:
    """A tier-1 prompt in one of the caption grammar's three forms."""
    shape, colour, size = attrs["shape"], attrs.get("colour"), attrs.get("size")
    position, bg = attrs.get("position"), attrs.get("background")
    style = int(rng.integers(0, 6)) if bg else 0
    if style == 4:
        words = " ".join(w for w in (size, colour, shape) if w)
        if position:
            words += " " + world.POSITION_PHRASES[position]
        return f"{words}, {bg} background"
    if style == 5:
        obj = world.canonical_caption(shape, colour, size, position)
        return f"{_article(bg)} {bg} background with {obj}"
    return world.canonical_caption(shape, colour, size, position, bg)


def _prompt_for(rng: np.random.Generator, want: Want) -> str:
    attrs = _realise(rng, want)
    keep: dict[str, str | None] = {"shape": attrs["shape"]}
    for key in ("colour", "size", "position", "background"):
        p = 1.0 if key in want.named else 0.5
        keep[key] = attrs[key] if rng.random() < p else None
    return format_prompt(rng, keep)


def _tier2_prompt(rng: np.random.Generator, a: Want, b: Want, relation: str) -> str:
    first = _realise(rng, a)
    second = _realise(rng, b)
    bgs = sorted(set(a.background or world.COLOUR_NAMES) & set(b.background or world.COLOUR_NAMES)
                 or world.COLOUR_NAMES)
    colours = [first["colour"], second["colour"]]
    if colours[0] == colours[1]:
        colours[1] = _choice(rng, [c for c in world.COLOUR_NAMES if c != colours[0]])
    bg_opts = [c for c in bgs if c not in colours] or [
        c for c in world.COLOUR_NAMES if c not in colours]
    bg = _choice(rng, bg_opts) if rng.random() < 0.6 else None
    objs = []
    for attrs, colour, want in ((first, colours[0], a), (second, colours[1], b)):
        named = "colour" in want.named or rng.random() < 0.75
        objs.append({"shape": attrs["shape"], "colour": colour if named else None})
    return world.canonical_caption(objects=objs, relation=relation, background=bg)


def _adj_word(rng: np.random.Generator, entry: tuple[tuple[str, ...], Want]) -> str:
    return _choice(rng, entry[0])


def make_idea(rng: np.random.Generator) -> tuple[str, str]:
    """One (idea, prompt) pair; the prompt always satisfies the idea's constraints."""
    idea, prompt, _ = make_idea_with_constraints(rng)
    return idea, prompt


def make_idea_with_constraints(rng: np.random.Generator) -> tuple[str, str, Want | None]:
    """``(idea, prompt, constraints)``; constraints are ``None`` for two-object ideas."""
    for _ in range(50):
        kind = rng.random()
        if kind < 0.05:
            return _choice(rng, RANDOM_IDEAS), _prompt_for(rng, Want()), Want()
        if kind < 0.12:
            # a prompt-like request the model should tidy up or extend
            attrs = _realise(rng, Want())
            keep = {"shape": attrs["shape"]}
            for key in ("colour", "size", "position", "background"):
                keep[key] = attrs[key] if rng.random() < 0.4 else None
            text = world.canonical_caption(**keep)
            if rng.random() < 0.5:
                text = text.removeprefix("a ").removeprefix("an ")
            want = _w(**{k: ((v,) if k in ("shape", "colour", "background") else v)
                         for k, v in keep.items() if v})
            return text, _prompt_for(rng, want), want
        if kind < 0.22:
            # two things: a tier-2 prompt
            na, nb = _choice(rng, NOUNS), _choice(rng, NOUNS)
            relation = _choice(rng, world.RELATIONS)
            wa, wb = na[1], nb[1]
            ta, tb = _choice(rng, na[0]), _choice(rng, nb[0])
            if rng.random() < 0.4:
                adj = _choice(rng, ADJECTIVES)
                if adj[1].colour is not None and adj[1].size is None and adj[1].position is None:
                    merged = wa.merge(adj[1])
                    if merged is not None:
                        wa, ta = merged, f"{_adj_word(rng, adj)} {ta}"
            link = _choice(rng, PAIR_WORDS[relation])
            if link == "and then" or rng.random() < 0.15:
                idea = f"{_article(ta)} {ta} and {_article(tb)} {tb}"
            else:
                idea = f"{_article(ta)} {ta} {link} {_article(tb)} {tb}"
            if rng.random() < 0.2:
                idea = _choice(rng, ("two shapes", "a pair", "two things", "two friends",
                                     "a couple of shapes", "two objects"))
                wa = wb = Want()
            return idea, _tier2_prompt(rng, wa, wb, relation), None
        if kind < 0.32:
            adj = _choice(rng, ADJECTIVES)
            if adj[1].colour is None or adj[1].background is None:
                continue
            word = _adj_word(rng, adj)
            return _choice(rng, COLOUR_PHRASES).format(a=word), _prompt_for(rng, adj[1]), adj[1]
        # adjectives + noun + setting
        want = Want()
        parts: list[str] = []
        n_adj = int(rng.choice([0, 1, 1, 2, 2, 3]))
        for _k in range(n_adj):
            adj = _choice(rng, ADJECTIVES)
            merged = want.merge(adj[1])
            if merged is None:
                continue
            want = merged
            parts.append(_adj_word(rng, adj))
        noun_entry = _choice(rng, NOUNS)
        merged = want.merge(noun_entry[1])
        if merged is None:
            continue
        want = merged
        noun = _choice(rng, noun_entry[0])
        setting = ""
        if rng.random() < 0.35:
            s_entry = _choice(rng, SETTINGS)
            merged = want.merge(s_entry[1])
            if merged is not None:
                want = merged
                setting = " " + _choice(rng, s_entry[0])
        if not parts and noun in ("thing", "one") and not setting:
            continue
        style = rng.random()
        if noun in ("thing", "shape", "object") and parts and style < 0.45:
            joined = " and ".join(parts) if len(parts) == 2 and rng.random() < 0.5 else ", ".join(parts) if rng.random() < 0.3 else " ".join(parts)
            idea = f"something {joined}{setting}"
        elif style < 0.6 and parts:
            idea = " ".join(parts) + (" " + noun if rng.random() < 0.8 else "") + setting
        elif style < 0.7:
            idea = f"the {' '.join(parts + [noun])}{setting}"
        else:
            words = " ".join(parts + [noun])
            idea = f"{_article(words)} {words}{setting}"
        return idea, _prompt_for(rng, want), want
    return "something", _prompt_for(rng, Want()), Want()


def make_example(rng: np.random.Generator) -> tuple[str, str | None]:
    """One training text: ``(text, response_start)``.

    ``response_start`` is the prefix after which the loss is taken (``None``:
    the loss covers the whole text, as for plain continuation).
    """
    r = rng.random()
    if r < 0.6:
        idea, prompt = make_idea(rng)
        if rng.random() < 0.15:
            idea = idea.capitalize()
        if rng.random() < 0.1:
            idea += _choice(rng, (".", "!", "?", " please"))
        prefix = f"{USER}{idea}{END}{ASSISTANT}"
        return f"{prefix}{prompt}{END}", prefix
    _, prompt = make_idea(rng)
    if r < 0.8:
        words = prompt.split(" ")
        cut = int(rng.integers(1, len(words)))
        partial = " ".join(words[:cut])
        prefix = f"{USER}{_choice(rng, COMPLETE_WORDS)} {partial}{END}{ASSISTANT}"
        return f"{prefix}{prompt}{END}", prefix
    return f"{prompt}{END}", None


def train_tokenizer(rng: np.random.Generator, n_texts: int = 20000):
    """A byte-level BPE on the synthetic corpus, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [make_example(rng)[0] for _ in range(n_texts)]
    words = {w for entry in ADJECTIVES + NOUNS + SETTINGS for p in entry[0] for w in p.split()}
    corpus.append(" ".join(sorted(words | set(world.VOCABULARY))))
    for special in SPECIAL_TOKENS:
        corpus = [t.replace(special, " ") for t in corpus]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=END, pad_token=PAD, unk_token=None,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = MODEL_CONFIG["n_positions"]
    fast.padding_side = "left"
    return fast


def save_tokenizer(tokenizer, out: Path) -> None:
    """Save with the chat template inside ``tokenizer_config.json`` (where loaders look first)."""
    tokenizer.save_pretrained(str(out))
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json(config_path, config)
    jinja = out / "chat_template.jinja"
    if jinja.exists():
        jinja.unlink()


def load_tokenizer(path: Path | str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def build_model(tokenizer, config: dict | None = None):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = dict(MODEL_CONFIG, **(config or {}))
    gpt_config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        **cfg,
    )
    return GPT2LMHeadModel(gpt_config)


def make_batch(rng: np.random.Generator, tokenizer, batch_size: int):
    import torch

    ids, labels = [], []
    for _ in range(batch_size):
        text, prefix = make_example(rng)
        seq = tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_LEN]
        n_prefix = len(tokenizer(prefix, add_special_tokens=False)["input_ids"]) if prefix else 0
        ids.append(seq)
        labels.append([-100] * n_prefix + seq[n_prefix:])
    width = max(len(s) for s in ids)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((batch_size, width), pad, dtype=torch.long)
    label_t = torch.full((batch_size, width), -100, dtype=torch.long)
    mask = torch.zeros((batch_size, width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(ids, labels, strict=True)):
        input_ids[i, : len(s)] = torch.tensor(s)
        label_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return input_ids, mask, label_t


GENERATION_DEFAULTS = {"do_sample": True, "temperature": 0.9, "top_p": 0.95, "max_new_tokens": 40}


def generate(model, tokenizer, ideas: list[str], seed: int = 0, **kwargs) -> list[str]:
    """Prompts for ``ideas`` through the chat template (batched, left-padded)."""
    import torch

    texts = [tokenizer.apply_chat_template([{"role": "user", "content": i}], tokenize=False,
                                           add_generation_prompt=True) for i in ideas]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(seed)
    opts = dict(GENERATION_DEFAULTS, **kwargs)
    with torch.no_grad():
        out = model.generate(**enc, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, **opts)
    return [tokenizer.decode(o[enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
            for o in out]


EVAL_IDEAS = (
    "something warm and calm", "a lonely star", "cold colours", "a tiny red thing",
    "the sun", "a big blue box", "something dark", "the moon at night", "a green triangle",
    "a mountain in the snow", "something happy", "a star next to a circle", "fire",
    "a small shape on the left", "surprise me", "an apple", "peaceful", "a pyramid in the desert",
    "two friends", "a purple thing at the top",
)


def follows(prompt: str, want: Want | None) -> bool:
    """Whether ``prompt`` is a valid prompt that names every attribute ``want`` fixes, as fixed.

    Two-object ideas (``want`` None) ask for a two-object prompt.
    """
    parsed = world.parse_caption(prompt)
    if parsed is None:
        return False
    if want is None:
        return parsed["tier"] == 2 and world.is_drawable(parsed)
    if parsed["tier"] != 1 or not world.is_drawable(parsed):
        return False
    for key in want.named:
        allowed = getattr(want, key)
        value = parsed[key]
        if value is None:
            return False
        if isinstance(allowed, set) and value not in allowed:
            return False
        if isinstance(allowed, str) and value != allowed:
            return False
    return True


def evaluate(model, tokenizer, n: int = 100, seed: int = 1234, n_follow: int = 200) -> dict:
    """Validity and variety of sampled outputs, and how often they follow the idea.

    ``valid``: share of ``n`` samples (for the fixed ``EVAL_IDEAS``) that parse
    as shapes-world prompts the world can draw (no object in the background's
    colour); ``distinct``: different outputs among them;
    ``follows_idea``: share of ``n_follow`` samples for held-out synthetic ideas
    whose prompt names every attribute the idea implies, with an allowed value.
    """
    ideas = [EVAL_IDEAS[i % len(EVAL_IDEAS)] for i in range(n)]
    outputs: list[str] = []
    for start in range(0, n, 25):
        outputs += generate(model, tokenizer, ideas[start:start + 25], seed=seed + start)
    valid = [o for o in outputs if world.is_world_prompt(o)]
    rng = np.random.default_rng((seed, 99))
    held = [make_idea_with_constraints(rng) for _ in range(n_follow)]
    follow_out: list[str] = []
    for start in range(0, n_follow, 25):
        follow_out += generate(model, tokenizer, [h[0] for h in held[start:start + 25]],
                               seed=seed + 7 + start)
    ok = [follows(o, h[2]) for o, h in zip(follow_out, held, strict=True)]
    return {"samples": n, "valid": len(valid) / n, "distinct": len(set(outputs)),
            "follows_idea": float(np.mean(ok)), "follows_samples": n_follow,
            "examples": list(zip(ideas[:20], outputs[:20], strict=True))}


def render_prompt(prompt: str, seed: int = 0) -> np.ndarray | None:
    """A shapes-world picture of what ``prompt`` asks for (unnamed attributes drawn at random)."""
    parsed = world.parse_caption(prompt)
    if parsed is None:
        return None
    rng = np.random.default_rng(seed)
    bg = parsed["background"]
    if parsed["tier"] == 1:
        taken = {parsed["colour"]} - {None}
        bg = bg or _choice(rng, [c for c in world.COLOUR_NAMES if c not in taken])
        colour = parsed["colour"] or _choice(rng, [c for c in world.COLOUR_NAMES if c != bg])
        size = parsed["size"] or _choice(rng, world.SIZES)
        position = parsed["position"] or _choice(rng, world.POSITIONS)
        dx, dy = world.POSITION_OFFSETS[position]
        objects = [world.ObjectSpec(parsed["shape"], colour, size, position, 32 + dx, 32 + dy,
                                    float(np.mean(world.SIZE_RADII[size])),
                                    float(rng.uniform(0, 2 * np.pi)))]
    else:
        named = [o["colour"] for o in parsed["objects"] if o["colour"]]
        bg = bg or _choice(rng, [c for c in world.COLOUR_NAMES if c not in named])
        ax, ay = world.RELATION_AXES[parsed["relation"]]
        objects = []
        for obj, sign in zip(parsed["objects"], (1.0, -1.0), strict=True):
            used = [o.colour for o in objects] + [bg]
            colour = obj["colour"] or _choice(rng, [c for c in world.COLOUR_NAMES if c not in used])
            cx = 32 + sign * ax * world.TIER2_SEPARATION
            cy = 32 + sign * ay * world.TIER2_SEPARATION
            objects.append(world.ObjectSpec(obj["shape"], colour, "small", "center", cx, cy, 10.0,
                                            float(rng.uniform(0, 2 * np.pi))))
    return world.render_from_specs([bg], [objects])[0]


def sample_sheet(pairs: list[tuple[str, str]], path: Path | str) -> None:
    """A PNG listing idea -> prompt with a rendering of each prompt beside it."""
    from PIL import Image, ImageDraw

    row, width = 72, 560
    sheet = Image.new("RGB", (width, row * len(pairs) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (idea, prompt) in enumerate(pairs):
        y = 4 + i * row
        image = render_prompt(prompt, seed=i)
        if image is not None:
            sheet.paste(Image.fromarray(image), (4, y + 2))
        draw.text((80, y + 14), f"idea:   {idea}", fill=(90, 90, 90))
        draw.text((80, y + 36), f"prompt: {prompt}" if image is not None
                  else f"prompt: {prompt} (not a valid prompt)", fill=(0, 0, 0))
    sheet.save(str(path))


def train(args: argparse.Namespace) -> None:
    import torch

    out = Path(args.out)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    tok_rng = np.random.default_rng((args.seed, 1))
    tokenizer = train_tokenizer(tok_rng, n_texts=2000 if args.steps < 50 else 20000)
    tiny = getattr(args, "tiny", False)
    model = build_model(tokenizer, {"n_layer": 1, "n_embd": 32, "n_head": 2} if tiny else None)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, min(100, args.steps // 10))
    step = 0
    if args.resume:
        if not has_checkpoint(out):
            raise TrainError(f"--resume: no checkpoint in {out}")
        step, _ = load_checkpoint(out, {"model": model}, {"opt": opt})
    rng = np.random.default_rng((args.seed, 2, step))
    budget = Budget(args.steps, args.max_minutes, step)
    bar = Progress(args.steps, initial=step, desc="prompt-writer")
    model.train()
    while not budget.done(step):
        lr = cosine_lr(step, args.steps, args.lr, warmup, budget.progress(step))
        for group in opt.param_groups:
            group["lr"] = lr
        input_ids, mask, labels = (t.to(device) for t in make_batch(rng, tokenizer, args.batch_size))
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(loss.item(), lr=lr)
        if step % args.checkpoint_every == 0 and step < args.steps:
            save_checkpoint(out, step, {"model": model}, {"opt": opt})
    wall = bar.close()
    model.eval().to("cpu")
    model.generation_config.update(**GENERATION_DEFAULTS)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(str(out))
    save_tokenizer(tokenizer, out)
    info = {"model": "prompt-writer", "steps": step, "max_minutes": args.max_minutes,
            "batch_size": args.batch_size, "lr": args.lr, "vocab_size": len(tokenizer),
            "wall_seconds": round(wall, 1),
            "device": args.device, "parameters": sum(p.numel() for p in model.parameters()),
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not tiny:
        info["evaluation"] = evaluate(model, tokenizer)
        print(json.dumps(info["evaluation"], indent=1))
        sample_sheet([tuple(p) for p in info["evaluation"]["examples"][:12]], out / "samples.png")
    write_json(out / "training_log.json", info)
    # The finished folder is what gets bundled; the resume state is not needed any more.
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this much wall time (the schedule adapts)")
    parser.add_argument("--tiny", action="store_true", help="a very small model (tests)")
