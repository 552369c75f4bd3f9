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

CLASSIFIER_VERSION = 2
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


def build_networks() -> tuple[Any, Any]:
    """``(attribute_net, shape_net)``.

    The attribute net reads colour, background, size and position from the
    whole image. The shape net reads a colour-free, size- and position-
    normalised foreground crop (see ``object_crops``), so a rotated small star
    looks to it like a rotated large one.
    """
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
            self.heads = nn.ModuleDict(
                {k: nn.Linear(192, len(v)) for k, v in HEADS.items() if k != "shape"}
            )

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.features(x)
            return {k: head(h) for k, head in self.heads.items()}

    class ShapeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(48 * 4 * 4, 96), nn.ReLU(),
                nn.Linear(96, len(world.SHAPES)),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.features(x)

    return AttributeNet(), ShapeNet()


CROP = 32


def foreground(images: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """Soft foreground masks (N, H, W) in [0, 1]: distance from the background colour."""
    bg = PALETTE[backgrounds][:, None, None, :]
    d = np.linalg.norm(images.astype(np.float32) - bg, axis=-1)
    return np.clip((d - 15.0) / 50.0, 0.0, 1.0)


def border_background(images: np.ndarray) -> np.ndarray:
    """Palette index of each image's background: the commonest palette colour on the border."""
    border = np.concatenate(
        [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1
    ).astype(np.float32)
    d = np.linalg.norm(border[:, :, None, :] - PALETTE, axis=-1)
    nearest = d.argmin(axis=-1)
    return np.array([np.bincount(r, minlength=len(PALETTE)).argmax() for r in nearest])


def object_crops(masks: np.ndarray) -> Any:
    """Crop each mask around its centroid, scaled by its extent, to (N, 1, 32, 32)."""
    import torch
    import torch.nn.functional as F

    n, h, w = masks.shape
    m = torch.from_numpy(masks.astype(np.float32))
    ys = torch.arange(h, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(w, dtype=torch.float32)[None, None, :] + 0.5
    total = m.sum(dim=(1, 2)).clamp_min(1e-3)
    cx = (m * xs).sum(dim=(1, 2)) / total
    cy = (m * ys).sum(dim=(1, 2)) / total
    dist2 = (xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2
    solid = m > 0.5
    extent = torch.where(solid, dist2, torch.zeros_like(dist2)).flatten(1).max(dim=1).values
    radius = extent.sqrt().clamp_min(2.0) + 0.5
    half = 1.25 * radius
    # affine grid in normalised coordinates ([-1, 1] spans the image)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = half / (w / 2)
    theta[:, 1, 1] = half / (h / 2)
    theta[:, 0, 2] = cx / (w / 2) - 1
    theta[:, 1, 2] = cy / (h / 2) - 1
    grid = F.affine_grid(theta, (n, 1, CROP, CROP), align_corners=False)
    return F.grid_sample(m[:, None], grid, align_corners=False) * 2 - 1


def _to_input(images: np.ndarray) -> Any:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def scene_labels(scenes: list[world.Scene]) -> dict[str, np.ndarray]:
    """The true class index per head of one-object scenes."""
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
    """The trained networks plus their held-out accuracy per head."""

    net: Any
    shape_net: Any
    heldout_accuracy: dict[str, float]

    def predict(self, images: np.ndarray, batch: int = 256,
                masks: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Per head: ``{"label": names (N,), "prob": max probability (N,), "probs": (N, K)}``.

        ``masks`` (N, H, W) overrides the foreground used for the shape (tier 2
        passes one object's mask at a time).
        """
        import torch

        probs: dict[str, list[np.ndarray]] = {k: [] for k in HEADS}
        self.net.eval()
        self.shape_net.eval()
        with torch.no_grad():
            for i in range(0, len(images), batch):
                chunk = images[i:i + batch]
                logits = self.net(_to_input(chunk))
                if masks is None:
                    m = foreground(chunk, border_background(chunk))
                else:
                    m = masks[i:i + batch]
                logits["shape"] = self.shape_net(object_crops(m))
                for k, v in logits.items():
                    probs[k].append(torch.softmax(v, dim=1).numpy())
        out: dict[str, dict[str, np.ndarray]] = {}
        for k, chunks in probs.items():
            p = np.concatenate(chunks) if chunks else np.zeros((0, len(HEADS[k])), np.float32)
            idx = p.argmax(axis=1)
            out[k] = {"label": np.array(HEADS[k], dtype=object)[idx], "prob": p.max(axis=1),
                      "probs": p}
        return out


def _augment_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur, noise and colour shifts like those of decoded latents (uint8 in, uint8 out)."""
    x = images.astype(np.float32)
    n = len(x)
    blur = rng.random(n) < 0.4
    if blur.any():
        b = x[blur]
        pad = np.pad(b, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        acc = sum(pad[:, dy:dy + 64, dx:dx + 64] for dy in range(3) for dx in range(3))
        x[blur] = acc / 9.0
    x += rng.normal(0, 6.0, (n, 1, 1, 3)).astype(np.float32)
    x += rng.normal(0, 1.0, x.shape).astype(np.float32) * rng.uniform(0, 10, (n, 1, 1, 1))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def train_classifier(steps: int = 500, batch: int = 64, seed: int = 0,
                     heldout: int = 2000, verbose: bool = True) -> Classifier:
    """Train both networks from scratch (a few minutes on one CPU core)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net, shape_net = build_networks()
    params = list(net.parameters()) + list(shape_net.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    started = time.monotonic()
    net.train()
    shape_net.train()
    for step in range(steps):
        lr = 2e-3 * min(1.0, (step + 1) / 30) * 0.5 * (1 + np.cos(np.pi * step / steps))
        for g in opt.param_groups:
            g["lr"] = lr
        seeds = range(TRAIN_SEED_BASE + step * batch, TRAIN_SEED_BASE + (step + 1) * batch)
        images, _, scenes = world.render_batch(seeds, tier=1, caption_style="empty")
        images = _augment_images(images, rng)
        labels = scene_labels(scenes)
        logits = net(_to_input(images))
        logits["shape"] = shape_net(object_crops(foreground(images, border_background(images))))
        loss = sum(loss_fn(logits[k], torch.from_numpy(labels[k])) for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if verbose and (step + 1) % 100 == 0:
            print(f"classifier step {step + 1}/{steps} loss {loss.item():.4f} "
                  f"({time.monotonic() - started:.0f}s)", flush=True)
    clf = Classifier(net, shape_net, {})
    clf.heldout_accuracy = heldout_accuracy(clf, heldout)
    return clf


def scene_accuracy(pred: dict[str, dict[str, np.ndarray]], scenes: list[world.Scene]) -> dict[str, float]:
    """Accuracy per head of ``predict`` output against the tier-1 scenes it was made from."""
    acc = {}
    for k in HEADS:
        truth = np.array([getattr(s.objects[0], k) if k != "background" else s.background
                          for s in scenes], dtype=object)
        acc[k] = float(np.mean(pred[k]["label"] == truth))
    return acc


def heldout_accuracy(clf: Classifier, n: int = 2000) -> dict[str, float]:
    """Accuracy per head on rendered scenes from seeds no training step used."""
    images, _, scenes = world.render_batch(range(HELDOUT_SEED_BASE, HELDOUT_SEED_BASE + n),
                                           tier=1, caption_style="empty")
    return scene_accuracy(clf.predict(images), scenes)


def load_or_train(path: Path | None = None, verbose: bool = True) -> Classifier:
    """The cached classifier (trained and cached on first use)."""
    import json

    from safetensors.torch import load_file, save_file

    folder = path or cache_dir()
    weights = folder / f"attribute-classifier-v{CLASSIFIER_VERSION}.safetensors"
    meta = weights.with_suffix(".json")
    net, shape_net = build_networks()
    if weights.is_file() and meta.is_file():
        try:
            tensors = load_file(str(weights))
            net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
            shape_net.load_state_dict(
                {k[6:]: v for k, v in tensors.items() if k.startswith("shape.")})
            return Classifier(net, shape_net, json.loads(meta.read_text())["heldout_accuracy"])
        except Exception:  # a damaged cache is simply rebuilt
            if verbose:
                print(f"classifier cache {weights} unreadable; retraining", flush=True)
    if verbose:
        print(f"training the attribute classifier (cached in {folder})", flush=True)
    clf = train_classifier(verbose=verbose)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.contiguous() for k, v in clf.net.state_dict().items()}
    tensors.update({f"shape.{k}": v.contiguous() for k, v in clf.shape_net.state_dict().items()})
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(weights)
    meta.write_text(json.dumps({"heldout_accuracy": clf.heldout_accuracy}, indent=1))
    if verbose:
        print(f"classifier held-out accuracy: {clf.heldout_accuracy}", flush=True)
    return clf


# --------------------------------------------------------------------------- tier 2


def palette_segment(image: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour per pixel (H, W), -1 where none is close.

    A pixel keeps its colour only if its four neighbours share it: the
    anti-aliased rim between two colours can sit near a third palette colour
    (yellow over red blends to orange) and must not count as an object.
    """
    d = np.linalg.norm(image[..., None, :].astype(np.float32) - PALETTE, axis=-1)
    idx = d.argmin(axis=-1)
    idx[d.min(axis=-1) > PALETTE_TOLERANCE] = -1
    padded = np.pad(idx, 1, mode="edge")
    h, w = idx.shape
    keep = np.ones_like(idx, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        keep &= padded[dy:dy + h, dx:dx + w] == idx
    return np.where(keep, idx, -1)


@dataclass
class ObjectReading:
    colour: str
    shape: str
    shape_prob: float
    cx: float
    cy: float
    pixels: int


def _dilate(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def read_objects(clf: Classifier, images: np.ndarray, max_objects: int = 2
                 ) -> tuple[list[str], list[list[ObjectReading]]]:
    """Background and up to ``max_objects`` objects per image, largest first.

    Background: the commonest palette colour on the image border. Objects: the
    largest other palette-colour regions; each one's shape is read by the shape
    net from that region's own foreground mask.
    """
    backgrounds: list[str] = []
    readings: list[list[ObjectReading]] = []
    crops: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    owners: list[tuple[int, int]] = []
    bgs = border_background(images) if len(images) else np.zeros(0, int)
    for n, image in enumerate(images):
        seg = palette_segment(image)
        bg = int(bgs[n])
        backgrounds.append(world.COLOUR_NAMES[bg])
        fg = foreground(image[None], np.array([bg]))[0]
        counts = np.bincount(seg[seg >= 0], minlength=len(PALETTE))
        counts[bg] = 0
        order = [int(c) for c in np.argsort(-counts)[:max_objects]
                 if counts[c] >= MIN_OBJECT_PIXELS]
        objs = []
        for c in order:
            own = seg == c
            ys, xs = np.nonzero(own)
            objs.append(ObjectReading(world.COLOUR_NAMES[c], "", 0.0,
                                      float(xs.mean()) + 0.5, float(ys.mean()) + 0.5, int(len(xs))))
            crops.append(image)
            masks.append(fg * _dilate(own))
            owners.append((n, len(objs) - 1))
        readings.append(objs)
    if crops:
        pred = clf.predict(np.stack(crops), masks=np.stack(masks))
        for k, (n, j) in enumerate(owners):
            readings[n][j].shape = str(pred["shape"]["label"][k])
            readings[n][j].shape_prob = float(pred["shape"]["prob"][k])
    return backgrounds, readings
