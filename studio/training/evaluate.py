"""Evaluate the bundled models against the shapes world (GenEval-style, in miniature).

``python -m studio.training.evaluate [MODEL ...]`` loads (or first trains and
caches) the attribute classifier, then scores each model:

* shapes-diffusion: per sub-task accuracy at guidance 1.0 / 3.0 / 7.5 —
  single object, colour, background, size, position (tier 1) and two objects,
  attribute binding, relation (tier 2) — negative-prompt avoidance and
  seconds per image;
* shapes-vae: reconstruction PSNR on held-out scenes; share of interpolation
  midpoints read as one valid shape;
* shapes-vae-2d: reconstruction PSNR; share of latent-map cells read as one
  valid shape;
* shapes-gan: precision (share of samples read confidently as a valid scene)
  and coverage of the 32 shape x colour classes in 1000 samples;
* prompt-writer: share of outputs the caption grammar accepts that ask for a
  scene the world can draw; distinct outputs among 100 samples.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from studio.core.guidance import GUIDANCE_METHODS, guidance_rule
from studio.training import scene_fit, world
from studio.training.classifier import (
    CONFIDENT,
    Classifier,
    load_or_train,
    read_objects,
    scene_accuracy,
)

MODELS: tuple[str, ...] = (
    "shapes-diffusion", "shapes-vae", "shapes-vae-2d", "shapes-gan", "prompt-writer",
)
GUIDANCES: tuple[float, ...] = (1.0, 3.0, 7.5)
TIER1_TASKS: tuple[str, ...] = ("single_object", "colour", "background", "size", "position")
TIER2_TASKS: tuple[str, ...] = ("two_object", "binding", "relation")
EVAL_SEED_BASE = 7_000_000_000  # held-out scenes for the autoencoders
NEGATIVE_PROMPT = ("a circle", "red, blue")
# How the diffusion table names the sampler a result was measured with.
SAMPLER_LABELS: dict[str, str] = {
    "DDIMScheduler": "DDIM", "DDPMScheduler": "DDPM", "EulerDiscreteScheduler": "Euler",
    "EulerAncestralDiscreteScheduler": "Euler ancestral",
    "DPMSolverMultistepScheduler": "DPM-Solver++ (2M)", "LCMScheduler": "LCM",
}
GOALS: dict[str, str] = {
    "single_object": "≥ 0.95 at 7.5", "colour": "≥ 0.95 at 7.5", "background": "≥ 0.95 at 7.5",
    "size": "≥ 0.90", "position": "≥ 0.90", "negative_avoidance": "≥ 0.95",
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- prompts


def diffusion_prompts(n_per_task: int, seed: int = 0) -> list[tuple[str, str, dict]]:
    """``(task, prompt, request)`` triples.

    Each tier-1 task pairs every value of its attribute with all four shapes in
    turn; tier-2 prompts draw two different colours, shapes and a relation.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str, dict]] = []
    for task in TIER1_TASKS:
        for i in range(n_per_task):
            shape = world.SHAPES[i % len(world.SHAPES)]
            req: dict[str, Any] = {"shape": shape}
            if task == "colour":
                req["colour"] = world.COLOUR_NAMES[(i // len(world.SHAPES)) % 8]
            elif task == "background":
                req["background"] = world.COLOUR_NAMES[(i // len(world.SHAPES)) % 8]
            elif task == "size":
                req["size"] = world.SIZES[(i // len(world.SHAPES)) % 2]
            elif task == "position":
                req["position"] = world.POSITIONS[(i // len(world.SHAPES)) % 5]
            out.append((task, world.canonical_caption(**req), req))
    for _ in range(n_per_task):
        c1, c2 = rng.choice(len(world.COLOUR_NAMES), 2, replace=False)
        objects = [
            {"shape": world.SHAPES[int(rng.integers(4))], "colour": world.COLOUR_NAMES[c1]},
            {"shape": world.SHAPES[int(rng.integers(4))], "colour": world.COLOUR_NAMES[c2]},
        ]
        req = {"objects": objects, "relation": world.RELATIONS[int(rng.integers(4))]}
        out.append(("tier2", world.canonical_caption(**req), req))
    return out


def score_tier1(pred: dict[str, dict[str, np.ndarray]], i: int, req: dict) -> bool:
    return all(pred[k]["label"][i] == v for k, v in req.items())


def shape_accuracy_by_shape(pred: dict[str, dict[str, np.ndarray]],
                             prompts: list[tuple[str, str, dict]]) -> dict[str, float]:
    """Share of one-object images read as the shape their prompt asked for, per shape.

    Every tier-1 score needs the shape right, so this says which shapes hold them back.
    """
    asked: dict[str, list[bool]] = {s: [] for s in world.SHAPES}
    for i, (task, _, req) in enumerate(prompts):
        if task != "tier2":
            asked[req["shape"]].append(pred["shape"]["label"][i] == req["shape"])
    return {s: float(np.mean(v)) for s, v in asked.items() if v}


def attribute_accuracy_alone(pred: dict[str, dict[str, np.ndarray]],
                             prompts: list[tuple[str, str, dict]]) -> dict[str, float]:
    """Per tier-1 attribute task, the share of images with the named attribute right, shape or not.

    The tier-1 scores need the shape as well; set beside them, this says whether a
    miss is the attribute or the shape.
    """
    right: dict[str, list[bool]] = {}
    for i, (task, _, req) in enumerate(prompts):
        if task in ("tier2", "single_object"):
            continue
        named = {k: v for k, v in req.items() if k != "shape"}
        right.setdefault(task, []).append(score_tier1(pred, i, named))
    return {t: float(np.mean(v)) for t, v in right.items()}


def _relation_holds(first: Any, second: Any, relation: str) -> bool:
    ax, ay = world.RELATION_AXES[relation]
    dx, dy = first.cx - second.cx, first.cy - second.cy
    along = dx * ax + dy * ay
    across = abs(dx * ay) + abs(dy * ax)
    return along > 4.0 and along > across


def score_tier2(objs: list, req: dict) -> dict[str, bool]:
    want = req["objects"]
    shapes = sorted(o.shape for o in objs)
    two = len(objs) == 2 and all(shapes.count(w["shape"]) >= [x["shape"] for x in want].count(
        w["shape"]) for w in want)
    by_colour = {o.colour: o for o in objs}
    bound = all(w["colour"] in by_colour and by_colour[w["colour"]].shape == w["shape"]
                for w in want)
    rel = bound and _relation_holds(by_colour[want[0]["colour"]], by_colour[want[1]["colour"]],
                                    req["relation"])
    return {"two_object": two, "binding": bound, "relation": rel}


def valid_single(clf: Classifier, images: np.ndarray,
                 pred: dict | None = None) -> tuple[np.ndarray, dict]:
    """Which images read as one valid shape (confident heads, exactly one object region).

    ``pred`` is ``clf.predict(images)`` when the caller has it already.
    """
    if pred is None:
        pred = clf.predict(images)
    ok = np.ones(len(images), bool)
    for k in ("shape", "colour", "background"):
        ok &= pred[k]["prob"] >= CONFIDENT
    ok &= pred["colour"]["label"] != pred["background"]["label"]
    _, objs = read_objects(clf, images, max_objects=3)
    ok &= np.array([len(o) == 1 for o in objs], bool)
    # The classifier reads blobs and noise confidently too: the image must also match
    # the clean scene it is read as.
    for i in np.flatnonzero(ok):
        ok[i] = scene_fit.matches_clean_scene(
            images[i], str(pred["background"]["label"][i]), str(pred["colour"]["label"][i]),
            str(pred["shape"]["label"][i]))
    return ok, pred


# --------------------------------------------------------------------------- diffusion


def load_pipeline(path: Path) -> Any:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(path))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: Any, prompts: list[str], guidance: float, steps: int, seed: int,
             batch: int = 16, negative: list[str] | None = None,
             guidance_rescale: float = 0.0, guidance_method: str = "cfg",
             ) -> tuple[np.ndarray, float]:
    """Images (N,64,64,3) uint8 and seconds per image; image i uses seed ``seed + i``.

    ``guidance_method`` ("cfg", "fdg" or "apg") guides the pipeline as the Image pane does.
    """
    import torch

    out = []
    started = time.perf_counter()
    with guidance_rule(pipe, guidance_method):
        for i in range(0, len(prompts), batch):
            chunk = prompts[i:i + batch]
            gens = [torch.Generator().manual_seed(seed + i + k) for k in range(len(chunk))]
            res = pipe(chunk, negative_prompt=None if negative is None else negative[i:i + batch],
                       guidance_scale=guidance, guidance_rescale=guidance_rescale,
                       num_inference_steps=steps, generator=gens, output_type="np")
            out.append(np.clip(np.rint(res.images * 255), 0, 255).astype(np.uint8))
    elapsed = time.perf_counter() - started
    return np.concatenate(out), elapsed / max(1, len(prompts))


def autoencoder_ceiling(vae: Any, clf: Classifier, n: int = 300) -> dict[str, float]:
    """How well the classifier reads the pipeline's own VAE reconstructions of real scenes.

    Every generated image passes through this decoder, so a tier-1 score can
    only exceed these accuracies by luck: they separate what the autoencoder
    loses from what the UNet has not learnt.
    """
    import torch

    images, _, scenes = world.render_batch(range(EVAL_SEED_BASE, EVAL_SEED_BASE + n), tier=1)
    x = _to_tensor(images).to(vae.device, vae.dtype)
    with torch.no_grad():
        decoded = vae.decode(vae.encode(x).latent_dist.mean).sample
    return scene_accuracy(clf.predict(_to_uint8(decoded)), scenes)


def evaluate_diffusion(path: Path, clf: Classifier, n_per_task: int = 40, steps: int = 20,
                       guidances: Sequence[float] = GUIDANCES, negative_n: int = 100,
                       seed: int = 0, batch: int = 16, ceiling_n: int = 300,
                       scheduler: str | None = None, guidance_rescale: float = 0.0,
                       guidance_method: str = "cfg") -> dict:
    """Scores of the pipeline folder at ``path``; ``scheduler`` (a key of the studio's
    sampler list, e.g. "euler") replaces the folder's own, and ``guidance_method`` ("cfg",
    "fdg" or "apg") picks the guidance rule, as the Image pane does."""
    pipe = load_pipeline(path)
    if scheduler:
        from studio.core.diffusion import scheduler_from_config

        pipe.scheduler = scheduler_from_config(scheduler, pipe.scheduler.config)
    prompts = diffusion_prompts(n_per_task, seed)
    texts = [p for _, p, _ in prompts]
    result: dict[str, Any] = {"prompts": len(prompts), "steps": steps, "by_guidance": {},
                              "seconds_per_image": {}, "seed": seed,
                              "scheduler": type(pipe.scheduler).__name__,
                              "guidance_rescale": guidance_rescale,
                              "guidance_method": guidance_method}
    if ceiling_n:
        log(f"shapes-diffusion: autoencoder ceiling on {ceiling_n} held-out scenes")
        result["autoencoder_ceiling"] = autoencoder_ceiling(pipe.vae, clf, ceiling_n)
        result["autoencoder_ceiling_scenes"] = ceiling_n
    for g in guidances:
        log(f"shapes-diffusion: {len(texts)} prompts at guidance {g}")
        images, spi = generate(pipe, texts, g, steps, seed, batch,
                               guidance_rescale=guidance_rescale, guidance_method=guidance_method)
        result["seconds_per_image"][str(g)] = spi
        pred = clf.predict(images)
        tier2_idx = [i for i, (t, _, _) in enumerate(prompts) if t == "tier2"]
        _, readings = read_objects(clf, images[tier2_idx]) if tier2_idx else ([], [])
        scores: dict[str, list[bool]] = {t: [] for t in TIER1_TASKS + TIER2_TASKS}
        for i, (task, _, req) in enumerate(prompts):
            if task != "tier2":
                scores[task].append(score_tier1(pred, i, req))
        for objs, i in zip(readings, tier2_idx, strict=True):
            for k, v in score_tier2(objs, prompts[i][2]).items():
                scores[k].append(v)
        result["by_guidance"][str(g)] = {k: float(np.mean(v)) for k, v in scores.items() if v}
        result.setdefault("shape_by_guidance", {})[str(g)] = shape_accuracy_by_shape(pred, prompts)
        result.setdefault("attribute_by_guidance", {})[str(g)] = attribute_accuracy_alone(
            pred, prompts)
        # Attribute scores read the classifier's heads, which also name blobs; this says how
        # many one-object images are a clean scene at all.
        tier1_idx = [i for i, (t, _, _) in enumerate(prompts) if t != "tier2"]
        if tier1_idx:
            tier1_pred = {k: {f: v[tier1_idx] for f, v in head.items()} for k, head in pred.items()}
            clean, _ = valid_single(clf, images[tier1_idx], tier1_pred)
            result["by_guidance"][str(g)]["clean_scene"] = float(clean.mean())
        if g == max(guidances):
            # the first 8 prompts of each group, for the sample grid (not written to JSON)
            pick = [i for i in range(len(prompts)) if i % n_per_task < 8]
            result["sample_images"] = images[pick]
            result["sample_prompts"] = [texts[i] for i in pick]
    if negative_n:
        prompt, negative = NEGATIVE_PROMPT
        g = max(guidances)
        log(f"shapes-diffusion: negative prompt {negative!r}, {negative_n} images")
        with_neg, _ = generate(pipe, [prompt] * negative_n, g, steps, seed + 10_000, batch,
                               negative=[negative] * negative_n,
                               guidance_rescale=guidance_rescale, guidance_method=guidance_method)
        without, _ = generate(pipe, [prompt] * negative_n, g, steps, seed + 10_000, batch,
                              guidance_rescale=guidance_rescale, guidance_method=guidance_method)
        avoid = [c.strip() for c in negative.split(",")]
        result["negative_misses"] = {}
        for key, imgs in (("negative_avoidance", with_neg), ("avoidance_without_negative", without)):
            colours = list(clf.predict(imgs)["colour"]["label"])
            result[key] = float(np.mean([c not in avoid for c in colours]))
            # which of the named colours got through: a miss on one of them is a different
            # failure from a miss on both
            result["negative_misses"][key] = {c: colours.count(c) for c in avoid}
        result["negative_prompt"] = {"prompt": prompt, "negative": negative, "guidance": g}
    return result


# --------------------------------------------------------------------------- autoencoders, GAN


def heldout_scenes(n: int) -> np.ndarray:
    images, _, _ = world.render_batch(range(EVAL_SEED_BASE, EVAL_SEED_BASE + n), tier=1)
    return images


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-image PSNR in dB between uint8 batches."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def _to_tensor(images: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _to_uint8(x: Any) -> np.ndarray:
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def evaluate_vae(path: Path, clf: Classifier, n: int = 500, pairs: int = 200) -> dict:
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(path)).eval()
    images = heldout_scenes(max(n, 2 * pairs))
    with torch.no_grad():
        recon = np.concatenate([
            _to_uint8(vae.decode(vae.encode(_to_tensor(images[i:i + 64])).latent_dist.mean).sample)
            for i in range(0, n, 64)])
        z = vae.encode(_to_tensor(images[:2 * pairs])).latent_dist.mean
        mid = _to_uint8(vae.decode((z[0::2] + z[1::2]) / 2).sample)
    ok, _ = valid_single(clf, mid)
    return {"psnr_db": psnr(images[:n], recon[:n]), "heldout_images": n,
            "midpoint_valid": float(ok.mean()), "pairs": pairs}


def _load_plain_module(path: Path, builder: Any) -> Any:
    from safetensors.torch import load_file

    config = json.loads((path / "config.json").read_text())
    module = builder(config)
    module.load_state_dict(load_file(str(path / "model.safetensors")))
    return module.eval(), config


def evaluate_vae2d(path: Path, clf: Classifier, n: int = 500, grid: int = 16) -> dict:
    import torch

    from studio.training.vae2d_model import build_vae2d

    vae, _ = _load_plain_module(path, build_vae2d)
    images = heldout_scenes(n)
    with torch.no_grad():
        mu, _ = vae.encode(_to_tensor(images))
        recon = _to_uint8(vae.decode(mu))
        # the map spans two standard deviations of the unit prior
        xs = torch.linspace(-2, 2, grid)
        zz = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1).reshape(-1, 2)
        cells = _to_uint8(vae.decode(zz))
    ok, _ = valid_single(clf, cells)
    return {"psnr_db": psnr(images, recon), "heldout_images": n,
            "map_cells_valid": float(ok.mean()), "map_cells": grid * grid}


def evaluate_gan(path: Path, clf: Classifier, n: int = 1000, seed: int = 0) -> dict:
    import torch

    from studio.training.gan_model import build_generator

    gen, config = _load_plain_module(path, build_generator)
    z_dim = int(config.get("z_dim", 64))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        images = np.concatenate([_to_uint8(gen(torch.randn(min(200, n - i), z_dim, generator=g)))
                                 for i in range(0, n, 200)])
    ok, pred = valid_single(clf, images)
    classes = {(s, c) for s, c, v in zip(pred["shape"]["label"], pred["colour"]["label"], ok, strict=True) if v}
    return {"samples": n, "precision": float(ok.mean()), "coverage": len(classes),
            "classes": len(world.SHAPES) * len(world.COLOURS)}


def evaluate_prompt_writer(path: Path, n: int = 100) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.training.train_prompt_writer import evaluate

    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    res = evaluate(model, tokenizer, n=n)
    return {"samples": res["samples"], "validity": res["valid"], "distinct": res["distinct"],
            "examples": res.get("examples", [])[:10]}


# --------------------------------------------------------------------------- report


def sample_grid(images: np.ndarray, columns: int = 8, scale: int = 2) -> Any:
    from PIL import Image

    rows = int(np.ceil(len(images) / columns))
    canvas = np.full((rows * 66, columns * 66, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        canvas[r * 66 + 1:r * 66 + 65, c * 66 + 1:c * 66 + 65] = img
    pil = Image.fromarray(canvas)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)


def _misses(result: dict, key: str) -> str:
    """", misses: red 3, blue 21" for one arm of the negative-prompt test; empty for results
    written before the misses were recorded."""
    misses = result.get("negative_misses", {}).get(key)
    if not misses:
        return ""
    return ", misses: " + ", ".join(f"{colour} {n}" for colour, n in misses.items())


def _per_guidance_table(title: str, first_column: str, by_guidance: dict[str, dict[str, float]],
                        rows: Sequence[str]) -> list[str]:
    """Markdown lines: one row per name, one column per guidance ("–" where a row has none)."""
    lines = ["", title, "",
             f"| {first_column} | " + " | ".join(f"guidance {g}" for g in by_guidance) + " |",
             "|---|" + "---|" * len(by_guidance)]
    for row in rows:
        vals = [by_guidance[g].get(row) for g in by_guidance]
        lines.append(f"| {row} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in vals)
                     + " |")
    return lines


def markdown(results: dict) -> str:
    lines: list[str] = []
    d = results.get("shapes-diffusion")
    if d:
        gs = list(d["by_guidance"])
        sampler = SAMPLER_LABELS.get(d.get("scheduler", "DDIMScheduler"), d.get("scheduler"))
        lines += [f"### shapes-diffusion ({d['prompts']} prompts per guidance, "
                  f"{d['steps']} {sampler} steps)",
                  "", "| sub-task | " + " | ".join(f"guidance {g}" for g in gs) + " | goal |",
                  "|---|" + "---|" * (len(gs) + 1)]
        for task in TIER1_TASKS + TIER2_TASKS + ("clean_scene",):
            vals = [d["by_guidance"][g].get(task) for g in gs]
            if all(v is None for v in vals):
                continue
            cells = " | ".join("–" if v is None else f"{v:.2f}" for v in vals)
            if task == "clean_scene":
                name = "one-object images that are one clean scene (render and compare)"
            else:
                name = task.replace("_", " ") + (" (tier 2)" if task in TIER2_TASKS else "")
            lines.append(f"| {name} | {cells} | {GOALS.get(task, 'reported')} |")
        if "negative_avoidance" in d:
            # three places: the goal is 0.95, and two would round 0.946 up to a pass
            neg = d["negative_prompt"]
            lines.append(
                f"| negative prompt: \"{neg['prompt']}\" / negative \"{neg['negative']}\" "
                f"(guidance {neg['guidance']}), share with neither colour | "
                + "".join("– | " for _ in gs[:-1])
                + f"{d['negative_avoidance']:.3f}{_misses(d, 'negative_avoidance')} "
                f"(without the negative prompt: {d['avoidance_without_negative']:.3f}"
                f"{_misses(d, 'avoidance_without_negative')}) | ≥ 0.95 |")
        by_shape = d.get("shape_by_guidance")
        if by_shape:
            lines += _per_guidance_table("Shape read as asked, over every one-object prompt:",
                                         "shape", by_shape, world.SHAPES)
        alone = d.get("attribute_by_guidance")
        if alone:
            tasks = [t for t in TIER1_TASKS if all(t in alone[g] for g in alone)]
            lines += _per_guidance_table("The named attribute alone (shape not required):",
                                         "sub-task", alone, tasks)
        spi = ", ".join(f"{v:.3f} s at guidance {g}" for g, v in d["seconds_per_image"].items())
        lines += ["", f"Seconds per image (batches of 16, CPU, {d['steps']} steps): {spi}.", ""]
        if "autoencoder_ceiling" in d:
            ceiling = ", ".join(f"{k} {v:.2f}" for k, v in d["autoencoder_ceiling"].items())
            lines += [f"Autoencoder ceiling (the classifier on the pipeline's own VAE "
                      f"reconstructions of {d['autoencoder_ceiling_scenes']} held-out scenes): "
                      f"{ceiling}.", ""]
    v = results.get("shapes-vae")
    if v:
        lines += ["### shapes-vae", "", "| metric | value | goal |", "|---|---|---|",
                  f"| reconstruction PSNR ({v['heldout_images']} held-out scenes) | "
                  f"{v['psnr_db']:.1f} dB | ≥ 30 dB |",
                  f"| interpolation midpoints read as one valid shape ({v['pairs']} pairs) | "
                  f"{v['midpoint_valid']:.2f} | reported |", ""]
    v2 = results.get("shapes-vae-2d")
    if v2:
        lines += ["### shapes-vae-2d", "", "| metric | value |", "|---|---|",
                  f"| reconstruction PSNR ({v2['heldout_images']} held-out scenes) | "
                  f"{v2['psnr_db']:.1f} dB |",
                  f"| latent-map cells (16×16 over ±2σ) read as one valid shape | "
                  f"{v2['map_cells_valid']:.3f} |", ""]
    gan = results.get("shapes-gan")
    if gan:
        lines += ["### shapes-gan", "", "| metric | value | goal |", "|---|---|---|",
                  f"| precision ({gan['samples']} samples) | {gan['precision']:.3f} | ≥ 0.90 |",
                  f"| coverage of shape × colour classes | {gan['coverage']}/{gan['classes']} "
                  f"| 32/32 |", ""]
    pw = results.get("prompt-writer")
    if pw:
        lines += ["### prompt-writer", "", "| metric | value | goal |", "|---|---|---|",
                  f"| valid shapes-world prompts: parsed and drawable ({pw['samples']} samples) "
                  f"| {pw['validity']:.2f} "
                  f"| ≥ 0.95 |",
                  f"| distinct outputs | {pw['distinct']}/{pw['samples']} | reported |", ""]
    clf = results.get("classifier")
    if clf:
        acc = ", ".join(f"{k} {v:.3f}" for k, v in clf.items())
        lines += [f"Attribute classifier held-out accuracy on rendered scenes: {acc}.", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studio.training.evaluate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help=f"default: all of {', '.join(MODELS)}")
    parser.add_argument("--models-dir", default=None, help="default: the bundled models/")
    parser.add_argument("--prompts-per-task", type=int, default=40,
                        help="diffusion prompts per sub-task (6 groups; default 40 -> 240)")
    parser.add_argument("--steps", type=int, default=20, help="diffusion sampling steps")
    parser.add_argument("--negative-samples", type=int, default=100)
    parser.add_argument("--guidance", type=float, nargs="+", default=list(GUIDANCES),
                        metavar="G", help="diffusion guidance scales (default 1.0 3.0 7.5)")
    parser.add_argument("--scheduler", default=None,
                        help="diffusion sampler instead of the folder's own: one of the "
                             "studio's (ddim, euler, euler_a, dpmpp_2m, ddpm)")
    parser.add_argument("--guidance-rescale", type=float, default=0.0, metavar="R",
                        help="rescale the guided prediction toward the conditional one's "
                             "spread (0 to 1; default 0: plain classifier-free guidance)")
    parser.add_argument("--guidance-method", choices=tuple(GUIDANCE_METHODS), default="cfg",
                        help="diffusion guidance rule: cfg (the pipeline's classifier-free "
                             "guidance, default), fdg (frequency-decoupled) or apg (adaptive "
                             "projected), as the Image pane offers them")
    parser.add_argument("--seed", type=int, default=0,
                        help="diffusion prompt set and noise, and the GAN's z (default 0; "
                             "1000 gives a second set)")
    parser.add_argument("--json", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="write the table as Markdown here")
    parser.add_argument("--grid", default=None, help="write a diffusion sample grid PNG here")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}",
              file=sys.stderr)
        return 2
    if args.prompts_per_task <= 0 or args.steps <= 0:
        print("error: --prompts-per-task and --steps must be positive", file=sys.stderr)
        return 2
    if not 0.0 <= args.guidance_rescale <= 1.0:
        print("error: --guidance-rescale must be between 0 and 1", file=sys.stderr)
        return 2
    if any(g <= 0 for g in args.guidance):
        print("error: --guidance scales must be positive", file=sys.stderr)
        return 2
    from studio.core.diffusion import SCHEDULERS

    if args.scheduler is not None and args.scheduler not in SCHEDULERS:
        print(f"error: unknown scheduler {args.scheduler!r}; choose from "
              f"{', '.join(SCHEDULERS)}", file=sys.stderr)
        return 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from studio.paths import models_dir

    root = Path(args.models_dir) if args.models_dir else models_dir()
    chosen = args.models or list(MODELS)
    missing = [m for m in chosen if not (root / m).is_dir()]
    if missing and args.models:
        print(f"error: no model folder {root / missing[0]}", file=sys.stderr)
        return 2
    clf = load_or_train()
    results: dict[str, Any] = {"classifier": clf.heldout_accuracy}
    timings: dict[str, float] = {}
    for name in chosen:
        path = root / name
        if not path.is_dir():
            log(f"skipping {name}: {path} does not exist")
            continue
        started = time.monotonic()
        if name == "shapes-diffusion":
            results[name] = evaluate_diffusion(path, clf, args.prompts_per_task, args.steps,
                                               guidances=tuple(args.guidance),
                                               negative_n=args.negative_samples,
                                               seed=args.seed, scheduler=args.scheduler,
                                               guidance_rescale=args.guidance_rescale,
                                               guidance_method=args.guidance_method)
        elif name == "shapes-vae":
            results[name] = evaluate_vae(path, clf)
        elif name == "shapes-vae-2d":
            results[name] = evaluate_vae2d(path, clf)
        elif name == "shapes-gan":
            results[name] = evaluate_gan(path, clf, seed=args.seed)
        else:
            results[name] = evaluate_prompt_writer(path)
        timings[name] = time.monotonic() - started
        log(f"{name}: evaluated in {timings[name]:.0f} s")
    results["evaluation_seconds"] = timings
    d = results.get("shapes-diffusion", {})
    images, texts = d.pop("sample_images", None), d.pop("sample_prompts", None)
    if args.grid and images is not None:
        sample_grid(images).save(args.grid)
        Path(args.grid).with_suffix(".txt").write_text("\n".join(texts) + "\n")
    table = markdown(results)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
