"""The attribute classifier that reads shapes-world images back.

A small CNN with one head per tier-1 attribute (shape, colour, background,
size, position), trained on rendered scenes from a seed range that no other
evaluation uses and checked on held-out seeds. Mild blur, noise and colour
jitter during training keep it usable on generated images, which are never as
crisp as the renderer's.

Two-object (tier 2) images are read by palette segmentation: every pixel is
matched to the nearest palette colour, the two largest non-background colour
regions are the objects, and each is classified alone by repainting the other
with the background colour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.training import world

CLASSIFIER_VERSION = 1
HEADS: dict[str, tuple[str, ...]] = {
    "shape": world.SHAPES,
    "colour": world.COLOUR_NAMES,
    "background": world.COLOUR_NAMES,
    "size": world.SIZES,
    "position": world.POSITIONS,
}
TRAIN_SEED_BASE = 5_000_000_000  # classifier training seeds; held-out seeds follow
HELDOUT_SEED_BASE = 6_000_000_000
CONFIDENT = 0.8
PALETTE = np.array([world.COLOURS[c] for c in world.COLOUR_NAMES], np.float32)
PALETTE_TOLERANCE = 60.0  # max RGB distance for a pixel to count as a palette colour
MIN_OBJECT_PIXELS = 12


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("latent-studio", appauthor=False)) / "classifier"


def build_network() -> Any:
    import torch
    from torch import nn

    class AttributeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 24, 5, stride=2, padding=2), nn.ReLU(),
                nn.Conv2d(24, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(),
                nn.Linear(64 * 4 * 4, 192), nn.ReLU(),
            )
            self.heads = nn.ModuleDict({k: nn.Linear(192, len(v)) for k, v in HEADS.items()})

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.features(x)
            return {k: head(h) for k, head in self.heads.items()}

    return AttributeNet()


def _to_input(images: np.ndarray) -> Any:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _labels(scenes: list[world.Scene]) -> dict[str, np.ndarray]:
    index = {k: {v: i for i, v in enumerate(vals)} for k, vals in HEADS.items()}
    out: dict[str, list[int]] = {k: [] for k in HEADS}
    for s in scenes:
        o = s.objects[0]
        out["shape"].append(index["shape"][o.shape])
        out["colour"].append(index["colour"][o.colour])
        out["background"].append(index["background"][s.background])
        out["size"].append(index["size"][o.size])
        out["position"].append(index["position"][o.position])
    return {k: np.array(v) for k, v in out.items()}


def _augment(x: Any, gen: Any) -> Any:
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    blur = torch.rand(n, generator=gen) < 0.3
    if blur.any():
        x[blur] = F.avg_pool2d(x[blur], 3, stride=1, padding=1, count_include_pad=False)
    x = x + torch.randn(n, 3, 1, 1, generator=gen) * 0.04
    x = x + torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.08)
    return x.clamp(-1.2, 1.2)


@dataclass
class Classifier:
    """A trained attribute network plus its held-out accuracy per head."""

    net: Any
    heldout_accuracy: dict[str, float]

    def predict(self, images: np.ndarray, batch: int = 256) -> dict[str, dict[str, np.ndarray]]:
        """Per head: ``{"label": names (N,), "prob": max probability (N,), "probs": (N, K)}``."""
        import torch

        probs: dict[str, list[np.ndarray]] = {k: [] for k in HEADS}
        self.net.eval()
        with torch.no_grad():
            for i in range(0, len(images), batch):
                logits = self.net(_to_input(images[i:i + batch]))
                for k, v in logits.items():
                    probs[k].append(torch.softmax(v, dim=1).numpy())
        out: dict[str, dict[str, np.ndarray]] = {}
        for k, chunks in probs.items():
            p = np.concatenate(chunks) if chunks else np.zeros((0, len(HEADS[k])), np.float32)
            idx = p.argmax(axis=1)
            out[k] = {"label": np.array(HEADS[k], dtype=object)[idx], "prob": p.max(axis=1),
                      "probs": p}
        return out


def train_classifier(steps: int = 900, batch: int = 128, seed: int = 0,
                     heldout: int = 2000, verbose: bool = True) -> Classifier:
    """Train the classifier from scratch (about a minute on one CPU core)."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_network()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.monotonic()
    net.train()
    for step in range(steps):
        lr = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = range(TRAIN_SEED_BASE + step * batch, TRAIN_SEED_BASE + (step + 1) * batch)
        images, _, scenes = world.render_batch(seeds, tier=1, caption_style="empty")
        labels = _labels(scenes)
        x = _augment(_to_input(images), gen)
        logits = net(x)
        loss = sum(loss_fn(logits[k], torch.from_numpy(labels[k])) for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if verbose and (step + 1) % 100 == 0:
            print(f"classifier step {step + 1}/{steps} loss {float(loss):.4f} "
                  f"({time.monotonic() - started:.0f}s)", flush=True)
    clf = Classifier(net, {})
    clf.heldout_accuracy = heldout_accuracy(clf, heldout)
    return clf


def heldout_accuracy(clf: Classifier, n: int = 2000) -> dict[str, float]:
    images, _, scenes = world.render_batch(range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + n),
                                           tier=1, caption_style="empty")
    pred = clf.predict(images)
    acc = {}
    for k in HEADS:
        truth = np.array([getattr(s.objects[0], k) if k != "background" else s.background
                          for s in scenes], dtype=object)
        acc[k] = float(np.mean(pred[k]["label"] == truth))
    return acc


def load_or_train(path: Path | None = None, verbose: bool = True) -> Classifier:
    """The cached classifier (trained and cached on first use)."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    folder = path or cache_dir()
    weights = folder / f"attribute-classifier-v{CLASSIFIER_VERSION}.safetensors"
    meta = weights.with_suffix(".json")
    net = build_network()
    if weights.is_file() and meta.is_file():
        try:
            net.load_state_dict(load_file(str(weights)))
            return Classifier(net, json.loads(meta.read_text())["heldout_accuracy"])
        except Exception:  # a damaged cache is simply rebuilt
            if verbose:
                print(f"classifier cache {weights} unreadable; retraining", flush=True)
    if verbose:
        print(f"training the attribute classifier (cached in {folder})", flush=True)
    clf = train_classifier(verbose=verbose)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.contiguous() for k, v in clf.net.state_dict().items()}, str(tmp))
    tmp.replace(weights)
    meta.write_text(json.dumps({"heldout_accuracy": clf.heldout_accuracy}, indent=1))
    del torch
    return clf


# --------------------------------------------------------------------------- tier 2


def palette_segment(image: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour per pixel (H, W), -1 where none is close."""
    d = np.linalg.norm(image[..., None, :].astype(np.float32) - PALETTE, axis=-1)
    idx = d.argmin(axis=-1)
    idx[d.min(axis=-1) > PALETTE_TOLERANCE] = -1
    return idx


@dataclass
class ObjectReading:
    colour: str
    shape: str
    shape_prob: float
    cx: float
    cy: float
    pixels: int


def read_objects(clf: Classifier, images: np.ndarray, max_objects: int = 2
                 ) -> tuple[list[str], list[list[ObjectReading]]]:
    """Background and up to ``max_objects`` objects per image, largest first.

    Background: the most common palette colour on the image border. Objects:
    the largest other palette-colour regions; each one's shape is read by the
    classifier on a copy of the image where the other objects' pixels are
    repainted with the background colour.
    """
    backgrounds: list[str] = []
    readings: list[list[ObjectReading]] = []
    crops: list[np.ndarray] = []
    owners: list[tuple[int, int]] = []
    for n, image in enumerate(images):
        seg = palette_segment(image)
        border = np.concatenate([seg[0], seg[-1], seg[:, 0], seg[:, -1]])
        border = border[border >= 0]
        bg = int(np.bincount(border, minlength=len(PALETTE)).argmax()) if border.size else 0
        backgrounds.append(world.COLOUR_NAMES[bg])
        counts = np.bincount(seg[seg >= 0], minlength=len(PALETTE))
        counts[bg] = 0
        order = [int(c) for c in np.argsort(-counts)[:max_objects] if counts[c] >= MIN_OBJECT_PIXELS]
        objs = []
        for c in order:
            ys, xs = np.nonzero(seg == c)
            objs.append(ObjectReading(world.COLOUR_NAMES[c], "", 0.0,
                                      float(xs.mean()) + 0.5, float(ys.mean()) + 0.5, int(len(xs))))
            crop = image.copy()
            # Everything that is neither this object nor background becomes background.
            other = (seg != c) & (seg != bg)
            crop[other] = PALETTE[bg].astype(np.uint8)
            crops.append(crop)
            owners.append((n, len(objs) - 1))
        readings.append(objs)
    if crops:
        pred = clf.predict(np.stack(crops))
        for k, (n, j) in enumerate(owners):
            readings[n][j].shape = str(pred["shape"]["label"][k])
            readings[n][j].shape_prob = float(pred["shape"]["prob"][k])
    return backgrounds, readings
