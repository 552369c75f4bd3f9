"""Train ``models/shapes-gan``: an unconditional DCGAN on tier-1 shapes-world images.

The generator is the classic DCGAN (``gan_model.Generator``). The
discriminator has spectral norm or, as in the original DCGAN, batch norm
(``--disc-norm``); the loss is the hinge loss or the non-saturating logistic
loss of Goodfellow et al. (``--loss``). The saved weights are an exponential moving
average of the generator's, with batch-norm statistics re-estimated at the
end, which gives cleaner samples than the last training step. z ~ N(0, I).

``--anchor WEIGHT`` adds an L1 loss that ties every z to the scene
``z_scenes`` names for it (weight relative to the adversarial loss, as the L1
term of pix2pix): the generator keeps a region of z for every shape, colour and
background from the first step, and the discriminator still judges every sample
against real scenes, including those between two regions.

``--layered`` trains a ``gan_model.LayeredGenerator`` (background and object colour,
shape, pose and an upright template, placed by a spatial transformer). With
``--anchor`` each of those layers is tied to what the map names for z
(``layered_anchor_loss``): the bundled shapes-gan is that generator, trained on the
anchor alone (``--adversarial 0``). ``--choice-temperature T`` stores the sampling
temperature of its choices in ``config.json`` (see ``LayeredGenerator``).

``--init-from FOLDER`` continues a finished generator (a ``config.json`` +
``model.safetensors`` folder such as ``models/shapes-gan``) against a fresh
discriminator: the finished folder keeps only the averaged generator, not the
discriminator or the optimisers that ``--resume`` needs.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path
from typing import Any

from studio.training import world, z_scenes
from studio.training.common import (
    CHECKPOINT_DIR,
    PRECISIONS,
    Progress,
    TrainError,
    autocast,
    has_checkpoint,
    load_checkpoint,
    save_checkpoint,
    update_average,
    write_json,
)
from studio.training.gan_model import (
    DEFAULT_CONFIG,
    DISCRIMINATOR_NORMS,
    build_discriminator,
    build_generator,
    checked_temperature,
)
from studio.training.train_vae import (
    Budget,
    cosine_lr,
    save_grid,
    to_tensor,
    to_uint8,
    training_batch,
)

DEFAULT_STEPS = 4000
DEFAULT_BATCH_SIZE = 32
# z_dim as large as an anchored run needs (z_scenes.ANCHOR_DIMS).
TINY_CONFIG: dict[str, Any] = dict(DEFAULT_CONFIG, z_dim=32, base_channels=4)
# A warm-started generator would otherwise take full steps along the gradients of a
# discriminator that has not yet learnt anything, and lose what it had.
WARM_START_GENERATOR_WARMUP = 2000
# Objects cover 2-30% of a scene: unweighted, the anchor's L1 is mostly the
# background's, which the generator learns first, and objects stay blurred for long.
OBJECT_WEIGHT = 4.0
# Pixels either side of an object's outline that --anchor-outline weights up: a disc
# and a triangle or star of the same area differ within about this distance of it.
OUTLINE_BAND = 3
# A layered generator's linear heads learn this many times faster than the rest: a
# softmax over the palette must grow its logits' margin to about 10 before it paints one
# exact colour, and Adam moves each weight by about one learning rate a step.
HEAD_LR_SCALE = 10.0
# The pose is a few numbers near 1 that must come out within about a pixel (1/32).
POSE_WEIGHT = 10.0
# Seeds (seed, step) draw the training batches; this stream lies beyond any step.
FEATURE_SCALE_STREAM = 2**40


def load_generator_folder(folder: Path) -> tuple[dict[str, Any], Any]:
    """(config, generator) of a finished generator folder; ``TrainError`` names a bad file."""
    from studio.core.errors import UserError
    from studio.core.weights import load_module

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise TrainError(f"--init-from: {config_file} is missing")
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise TrainError(f"--init-from: cannot read {config_file}: {exc}") from None
    config = {**DEFAULT_CONFIG, **config}
    try:
        return config, load_module(folder, config, build_generator, "a DCGAN generator")
    except UserError as exc:
        raise TrainError(f"--init-from: {exc.message}") from None


def feature_discriminator(folder: Path, config: dict[str, Any], width: int, seed: int = 0):
    """A projected discriminator on the frozen encoder of the AutoencoderKL in ``folder``."""
    from studio.core.errors import UserError
    from studio.core.vae import load_vae
    from studio.training.projected_disc import FeatureDiscriminator

    try:
        vae = load_vae(str(folder))
    except UserError as exc:
        raise TrainError(f"--disc-features: {exc.message}") from None
    if vae.kind != "autoencoder-kl" or vae.image_size != int(config["image_size"]):
        raise TrainError(f"--disc-features: {folder} must be an AutoencoderKL for "
                         f"{config['image_size']}x{config['image_size']} images")
    reference = training_batch((seed, FEATURE_SCALE_STREAM), 128)
    return FeatureDiscriminator(vae.module.encoder, int(config["image_size"]),
                                int(config["channels"]), width, reference)


def recalibrate_batchnorm(gen, z_dim: int, batches: int = 32, batch_size: int = 128) -> None:
    """Re-estimate batch-norm running statistics for (averaged) generator weights."""
    import torch

    bns = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches below
    gen.train()
    with torch.no_grad():
        for _ in range(batches):
            gen(torch.randn(batch_size, z_dim))
    for bn in bns:
        bn.momentum = 0.1
    gen.eval()


def discriminator_loss(real_logits, fake_logits, loss: str):
    import torch.nn.functional as F

    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits, loss: str):
    import torch.nn.functional as F

    return -fake_logits.mean() if loss == "hinge" else F.softplus(-fake_logits).mean()


def outline_band(mask):
    """1 where an object mask (N, 1, H, W) changes within OUTLINE_BAND pixels, else 0."""
    import torch.nn.functional as F

    size = 2 * OUTLINE_BAND + 1
    grown = F.max_pool2d(mask, size, stride=1, padding=OUTLINE_BAND)
    shrunk = -F.max_pool2d(-mask, size, stride=1, padding=OUTLINE_BAND)
    return grown - shrunk


def object_weight(mask, outline: float = 0.0):
    """Per-pixel anchor weight for an object mask (N, 1, H, W) of 0s and 1s: object
    pixels count 1 + OBJECT_WEIGHT times, and ``outline`` more in the outline band."""
    weight = 1.0 + OBJECT_WEIGHT * mask
    if outline:
        weight = weight + outline * outline_band(mask)
    return weight


def anchor_loss(fake, z, angles: int = 0, outline: float = 0.0):
    """L1 distance from ``fake`` to the scenes ``z_scenes`` names for ``z``, objects weighted up.

    ``outline`` weights up, beside, the band of OUTLINE_BAND pixels either side of each
    object's outline, where a disc and a polygon of the same area differ.
    """
    import torch

    images = z_scenes.render(z.cpu().numpy(), angles)
    # Every scene's top-left pixel is background (no object reaches a corner).
    mask = torch.from_numpy((images != images[:, :1, :1, :]).any(-1)).to(fake.device, fake.dtype)[:, None]
    weight = object_weight(mask, outline)
    error = (fake - to_tensor(images).to(fake.device)).abs() * weight
    return error.mean() / weight.mean()


def layered_anchor_loss(gen, layers, z, angles: int = 0, outline: float = 0.0):
    """The anchor for a ``LayeredGenerator``'s ``layers(z)``, term by term against the
    scene the map names: cross-entropy on the two colours and the shape, squared error on the pose,
    binary cross-entropy of the template against the upright object and of the placed
    mask against the object's coverage, object pixels (and, with ``outline``, the
    outline band) weighted up as in ``anchor_loss``."""
    import torch
    import torch.nn.functional as F

    target = z_scenes.layer_targets(z.cpu().numpy(), angles, gen.template_radius)
    device = layers.pose.device

    def tensor(array):
        return torch.from_numpy(array).to(device)

    def mask_loss(predicted, alpha, logits: bool):
        weight = object_weight((alpha > 0).float(), outline)
        bce = F.binary_cross_entropy_with_logits if logits else F.binary_cross_entropy
        return bce(predicted, alpha, weight=weight, reduction="sum") / weight.sum()

    # The placed mask teaches the pose only: through the template it would teach a blurred
    # outline, which loses less where the pose is still off.
    placed = gen.place(layers.template.detach(), layers.pose).clamp(1e-6, 1 - 1e-6)
    return (F.cross_entropy(layers.background.float(), tensor(target.background))
            + F.cross_entropy(layers.colour.float(), tensor(target.colour))
            + F.cross_entropy(layers.shape.float(), tensor(target.shape))
            + POSE_WEIGHT * F.mse_loss(layers.pose.float(), tensor(target.pose))
            + mask_loss(layers.template.float(), tensor(target.template)[:, None], True)
            + mask_loss(placed, tensor(target.alpha)[:, None], False))


def sample(gen, n: int, z_dim: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return gen(torch.randn(n, z_dim, generator=g))


def train(args: argparse.Namespace) -> None:
    import torch

    out = Path(args.out)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    tiny = getattr(args, "tiny", False)
    config = dict(TINY_CONFIG if tiny else DEFAULT_CONFIG)
    # The discriminator's width is its own: widening the generator (here, or in a
    # generator loaded by --init-from) leaves it as it is.
    disc_channels = int(config["base_channels"]) if args.disc_channels is None else args.disc_channels
    if disc_channels < 1:
        raise TrainError(f"--disc-channels must be positive, got {disc_channels}")
    init_from = Path(args.init_from) if getattr(args, "init_from", None) else None
    gen = None
    if init_from is not None:
        config, gen = load_generator_folder(init_from)
        if args.base_channels not in (None, config["base_channels"]):
            raise TrainError(f"--base-channels {args.base_channels} does not match the "
                             f"generator in {init_from} ({config['base_channels']})")
    disc_config = {**config, "disc_channels": disc_channels, "disc_norm": args.disc_norm}
    if args.base_channels is not None:
        if args.base_channels < 1:
            raise TrainError(f"--base-channels must be positive, got {args.base_channels}")
        config["base_channels"] = args.base_channels
    if args.coord_channels:
        if init_from is not None and not config.get("coord_channels"):
            raise TrainError(f"--coord-channels: the generator in {init_from} has none")
        config["coord_channels"] = True
    if args.layered:
        if init_from is not None and not config.get("layered"):
            raise TrainError(f"--layered: the generator in {init_from} is not layered")
        config["layered"] = True
        config["palette"] = [list(rgb) for rgb in world.COLOURS.values()]
    layered = bool(config.get("layered"))
    temperature = getattr(args, "choice_temperature", None)
    if temperature is not None:
        if not layered:
            raise TrainError("--choice-temperature is for a layered generator (--layered)")
        try:
            temperature = checked_temperature(temperature)
        except ValueError as exc:
            raise TrainError(f"--choice-temperature: {exc}") from None
        config["choice_temperature"] = temperature
        if gen is not None:
            gen.choice_temperature = temperature
    z_dim = int(config["z_dim"])
    if args.anchor < 0:
        raise TrainError(f"--anchor must be zero or positive, got {args.anchor}")
    if args.adversarial < 0 or (args.adversarial == 0 and not args.anchor):
        raise TrainError("--adversarial must be positive, or zero together with --anchor")
    adversarial = args.adversarial > 0
    if args.anchor_outline < 0:
        raise TrainError(f"--anchor-outline must be zero or positive, got {args.anchor_outline}")
    if args.anchor_angles < 0:
        raise TrainError(f"--anchor-angles must be zero or positive, got {args.anchor_angles}")
    if args.anchor and z_dim < z_scenes.ANCHOR_DIMS:
        raise TrainError(f"--anchor needs z of at least {z_scenes.ANCHOR_DIMS} dimensions; "
                         f"this generator's is {z_dim}")
    if gen is None:
        gen = build_generator(config)
    gen = gen.to(device)
    disc = (build_discriminator(disc_config) if args.disc_features is None
            else feature_discriminator(Path(args.disc_features), config, disc_channels,
                                       args.seed)).to(device)
    ema = copy.deepcopy(gen).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    if layered:
        heads = {id(p) for p in gen.head_parameters()}
        groups = [{"params": [p for p in gen.parameters() if id(p) not in heads], "scale": 1.0},
                  {"params": gen.head_parameters(), "scale": HEAD_LR_SCALE}]
    else:
        groups = [{"params": list(gen.parameters()), "scale": 1.0}]
    opt_g = torch.optim.Adam(groups, lr=args.lr_g, betas=(0.5, 0.999))
    disc_params = [p for p in disc.parameters() if p.requires_grad]
    opt_d = torch.optim.Adam(disc_params, lr=args.lr_d, betas=(0.5, 0.999))
    modules = {"gen": gen, "disc": disc, "ema": ema}
    optimizers = {"gen": opt_g, "disc": opt_d}
    step = 0
    if args.resume:
        if not has_checkpoint(out):
            raise TrainError(f"--resume: no checkpoint in {out}")
        step, _ = load_checkpoint(out, modules, optimizers)
    budget = Budget(args.steps, args.max_minutes, step)
    bar = Progress(args.steps, initial=step, desc="shapes-gan")
    g_warmup = WARM_START_GENERATOR_WARMUP if init_from is not None else 1
    while not budget.done(step):
        for opt, lr, warmup in ((opt_g, args.lr_g, g_warmup), (opt_d, args.lr_d, 1)):
            scale = cosine_lr(step, args.steps, 1.0, warmup, budget.progress(step))
            for group in opt.param_groups:
                group["lr"] = lr * scale * group.get("scale", 1.0)
        z = torch.randn(args.batch_size, z_dim, device=device)
        with autocast(args.device, args.precision):
            if layered:
                layers = gen.layers(z)
                fake = gen.compose(layers)
            else:
                fake = gen(z)
        g_loss = fake.new_zeros((), dtype=torch.float32)
        extra = {}
        if adversarial:
            real = training_batch((args.seed, step), args.batch_size).to(device)
            with autocast(args.device, args.precision):
                d_loss = discriminator_loss(disc(real), disc(fake.detach()), args.loss)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            with autocast(args.device, args.precision):
                g_loss = args.adversarial * generator_loss(disc(fake), args.loss)
            extra["d"] = d_loss.item()
        if args.anchor:
            if layered:
                tie = layered_anchor_loss(gen, layers, z, args.anchor_angles, args.anchor_outline)
            else:
                tie = anchor_loss(fake.float(), z, args.anchor_angles, args.anchor_outline)
            extra["anchor"] = tie.item()
            g_loss = g_loss + args.anchor * tie
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        update_average(ema, gen, args.ema, step)
        step += 1
        bar.update(g_loss.item(), **extra)
        if step % args.checkpoint_every == 0 and step < args.steps:
            save_checkpoint(out, step, modules, optimizers)
    wall = bar.close()
    ema.to("cpu")
    recalibrate_batchnorm(ema, z_dim)
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()},
              str(out / "model.safetensors"))
    write_json(out / "config.json", config)
    with torch.no_grad():
        z1 = torch.randn(1, z_dim)
        for _ in range(5):
            ema(z1)
        t0 = time.perf_counter()
        for _ in range(50):
            ema(z1)
        ms = (time.perf_counter() - t0) / 50 * 1000
    # A run on the anchor alone never used the discriminator: its settings are left out.
    critic = {
        "loss": args.loss, "disc_norm": args.disc_norm, "disc_channels": disc_channels,
        **({"disc_features": str(args.disc_features)} if args.disc_features is not None else {}),
        "lr_d": args.lr_d, "discriminator_parameters": sum(p.numel() for p in disc_params),
    } if adversarial else {}
    info = {
        "model": "shapes-gan", "steps": step, "max_minutes": args.max_minutes, "batch_size": args.batch_size,
        "precision": args.precision,
        **({"anchor": args.anchor, "anchor_dims": z_scenes.ANCHOR_DIMS,
            "anchor_object_weight": OBJECT_WEIGHT, "anchor_angles": args.anchor_angles,
            **({"anchor_outline": args.anchor_outline, "anchor_outline_band": OUTLINE_BAND}
               if args.anchor_outline else {})}
           if args.anchor else {}),
        "adversarial": args.adversarial, **critic,
        "lr_g": args.lr_g, "ema": args.ema, "wall_seconds": round(wall, 1),
        "device": args.device,
        **({"init_from": str(init_from), "init_steps": _finished_steps(init_from)}
           if init_from is not None else {}),
        "generator_parameters": sum(p.numel() for p in ema.parameters()),
        "cpu_ms_per_sample": round(ms, 2),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(info, indent=1))
    save_grid(to_uint8(sample(ema, 64, z_dim, seed=0)), 8, out / "samples.png")
    write_json(out / "training_log.json", info)
    # The finished folder is what gets bundled; the resume state is not needed any more.
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)


def _finished_steps(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "training_log.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lr-g", type=float, default=2e-4, help="generator learning rate")
    parser.add_argument("--lr-d", type=float, default=2e-4, help="discriminator learning rate")
    parser.add_argument("--loss", choices=("hinge", "ns"), default="hinge",
                        help="hinge, or the non-saturating logistic loss")
    parser.add_argument("--disc-norm", choices=DISCRIMINATOR_NORMS, default="spectral",
                        help="discriminator normalisation")
    parser.add_argument("--disc-channels", type=int, default=None,
                        help=f"discriminator width at 32x32 (default {DEFAULT_CONFIG['base_channels']})")
    parser.add_argument("--disc-features", default=None, metavar="FOLDER",
                        help="judge images through the frozen encoder of this AutoencoderKL "
                             "folder (a projected discriminator, e.g. models/shapes-vae); "
                             "--disc-channels then sets its heads' width")
    parser.add_argument("--base-channels", type=int, default=None,
                        help=f"generator width at 32x32 (default {DEFAULT_CONFIG['base_channels']})")
    parser.add_argument("--coord-channels", action="store_true",
                        help="the generator's up-sampling layers also read the pixel "
                             "coordinates (CoordConv)")
    parser.add_argument("--layered", action="store_true",
                        help="a layered generator: palette colours for background and object "
                             "and a DCGAN stack that draws only the object's mask")
    parser.add_argument("--choice-temperature", type=float, default=None, metavar="T",
                        help="a layered generator paints its colour and shape choices at "
                             "softmax temperature T (below 1: fewer blended colours; "
                             "default: 1, or what --init-from's folder says)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: bfloat16 autocast for the forward passes (faster on CPUs "
                             "with AVX-512 BF16 and on GPUs); weights stay float32")
    parser.add_argument("--ema", type=float, default=0.999, help="generator weight averaging")
    parser.add_argument("--anchor", type=float, default=0.0, metavar="WEIGHT",
                        help="L1 weight tying every z to the scene studio.training.z_scenes "
                             "names for it (0: a plain GAN; e.g. 100)")
    parser.add_argument("--anchor-angles", type=int, default=0, metavar="K",
                        help="the anchor turns each shape to one of K fixed angles "
                             "(1: upright) instead of continuously with z (0, the default)")
    parser.add_argument("--anchor-outline", type=float, default=0.0, metavar="WEIGHT",
                        help="extra anchor weight on the pixels near each object's outline, "
                             "where corners and points are drawn (e.g. 8)")
    parser.add_argument("--adversarial", type=float, default=1.0, metavar="WEIGHT",
                        help="weight of the generator's adversarial loss; 0 (with --anchor) "
                             "trains the generator on the anchor alone, without a discriminator")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after this much wall time (the schedule adapts)")
    parser.add_argument("--init-from", default=None, metavar="FOLDER",
                        help="continue a finished generator folder (config.json + "
                             "model.safetensors) against a fresh discriminator")
    parser.add_argument("--tiny", action="store_true", help="a very small model (tests)")
