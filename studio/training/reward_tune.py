"""Reward fine-tuning of the shapes-diffusion UNet on its own guided samples.

The denoising loss asks the UNet to predict noise, averaged over every pixel and
timestep; a square's corners or a small star's points are a few latent pixels of one
late step in that average, and fifteen stages of it left them bowed and blunt. Here
the UNet is trained on what the pipeline actually draws instead (DRaFT, Clark et al.
2024; ReFL, Xu et al. 2023): a prompt is sampled with classifier-free guidance as the
pipeline samples it, one of its last steps is run with gradients, that step's clean
estimate is decoded, and a reward network reads it back; the loss is how far that reading is from
what the prompt asked for. The denoising loss on rendered scenes is kept beside it so
the UNet stays a denoiser of the world (and its unconditional branch, which negative
prompts use, stays the world's).

The reward network is not the evaluation's classifier: it reads the whole image with
one network (the evaluation reads the shape from a normalised foreground crop with a
second one), is trained on other seeds, and sees its input blurred, shifted and noised
during fine-tuning, so a reward gained by fooling one network is not a score gained on
the other. On the bundled UNet that is what happened: the tuned UNet pleased the reward
network and not the evaluation (model card, "Stage 24").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.training import world
from studio.training.classifier import HEADS, scene_labels
from studio.training.common import (
    CHECKPOINT_DIR,
    Progress,
    TrainError,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    update_average,
)
from studio.training.train_diffusion import (
    clean_estimate,
    draw_timesteps,
    merge_training_state,
    min_snr_weights,
    object_mask,
    to_tensor,
    tokenize,
    training_batch,
    weighted_image_mean,
)

# the attributes the evaluation reads, read here by a network of another make
REWARD_HEADS = HEADS
# Away from the evaluation's classifier (it trains from 5e9 and checks on 6e9) and from the
# trainer's scenes (1e9 + seed * 1e8).
REWARD_NET_SEED_BASE = 7_000_000_000
PROMPT_SEED_BASE = 8_000_000_000
REGULARISER_SEED_BASE = 9_000_000_000
REWARD_NET_FILE = "reward-net.safetensors"
CHECKPOINT_EVERY_S = 300.0


def build_reward_net() -> Any:
    """A plain CNN over the whole 64x64 image, one linear head per tier-1 attribute."""
    import torch
    from torch import nn

    class RewardNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()

            def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
                return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1),
                        nn.GroupNorm(8, cout), nn.SiLU()]

            self.features = nn.Sequential(
                *block(3, 32, 2), *block(32, 64, 1), *block(64, 64, 2),
                *block(64, 96, 2), *block(96, 128, 2),
                nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128 * 16, 256), nn.SiLU(),
            )
            self.heads = nn.ModuleDict({k: nn.Linear(256, len(v)) for k, v in REWARD_HEADS.items()})

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            h = self.features(x)
            return {k: head(h) for k, head in self.heads.items()}

    return RewardNet()


def prompt_targets(scenes: list[world.Scene]) -> dict[str, np.ndarray]:
    """Per head, the class each scene's caption asks for, -1 where it names none (so the
    image may show any)."""
    labels = scene_labels(scenes)
    out = {}
    for k in REWARD_HEADS:
        named = np.array([k == "shape" or k in s.named for s in scenes])
        out[k] = np.where(named, labels[k], -1)
    return out


def disturb(x: Any, gen: Any, shift: int = 2) -> Any:
    """Random shifts of up to ``shift`` pixels, blur, colour offsets and noise on images in
    [-1, 1]; differentiable, so the UNet only gains reward that survives them."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    if shift:
        padded = F.pad(x, (shift,) * 4, mode="replicate")
        dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
        x = padded[:, :, dy:dy + x.shape[2], dx:dx + x.shape[3]]
    blur = (torch.rand(n, 1, 1, 1, generator=gen) < 0.3).to(x.dtype)
    x = blur * F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False) + (1 - blur) * x
    x = x + torch.randn(n, 3, 1, 1, generator=gen) * 0.04
    return x + torch.randn(x.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.06)


def train_reward_net(steps: int = 1500, batch: int = 64, seed: int = 0,
                     verbose: bool = True) -> tuple[Any, dict[str, float]]:
    """Train the reward network on rendered one-object scenes; ``(net, held-out accuracy)``."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = build_reward_net()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    bar = Progress(steps, 0, desc="reward net") if verbose else None
    net.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 2e-3 * min(1.0, (step + 1) / 50) * 0.5 * (1 + np.cos(np.pi * step / steps))
        base = REWARD_NET_SEED_BASE + step * batch
        images, _, scenes = world.render_batch(range(base, base + batch), tier=1,
                                               caption_style="empty")
        x = disturb(to_tensor(images, "cpu"), gen)
        labels = scene_labels(scenes)
        logits = net(x)
        loss = sum(loss_fn(logits[k], torch.from_numpy(labels[k])) for k in REWARD_HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar:
            bar.update(loss.item())
    if bar:
        bar.close()
    net.eval().requires_grad_(False)
    return net, reward_net_accuracy(net)


def reward_net_accuracy(net: Any, n: int = 1000) -> dict[str, float]:
    """Accuracy per head on rendered scenes no training step used."""
    import torch

    base = REWARD_NET_SEED_BASE - 10**6
    images, _, scenes = world.render_batch(range(base, base + n), tier=1, caption_style="empty")
    labels = scene_labels(scenes)
    with torch.no_grad():
        logits = net(to_tensor(images, "cpu"))
    return {k: float((logits[k].argmax(1).numpy() == labels[k]).mean()) for k in REWARD_HEADS}


def load_or_train_reward_net(folder: Path, verbose: bool = True) -> tuple[Any, dict[str, float]]:
    """The reward network cached in ``folder`` (trained and saved there on first use)."""
    import json

    from safetensors.torch import load_file, save_file

    weights = folder / REWARD_NET_FILE
    meta = weights.with_suffix(".json")
    if weights.is_file() and meta.is_file():
        net = build_reward_net()
        try:
            net.load_state_dict(load_file(str(weights)))
            accuracy = json.loads(meta.read_text())
        except Exception as exc:
            raise TrainError(f"{weights} (or {meta.name}) is not a reward network this version "
                             f"reads ({exc}); delete it to train a new one") from None
        return net.eval().requires_grad_(False), accuracy
    net, accuracy = train_reward_net(verbose=verbose)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    meta.write_text(json.dumps(accuracy, indent=1))
    return net, accuracy


def reward_loss(net: Any, images: Any, targets: dict[str, Any], gen: Any) -> Any:
    """Mean cross-entropy of the reward network's reading of ``images`` against what the
    prompts asked for, over the heads each prompt names."""
    import torch.nn.functional as F

    logits = net(disturb(images, gen))
    total, count = 0.0, 0
    for k, target in targets.items():
        named = target >= 0
        if named.any():
            total = total + F.cross_entropy(logits[k][named], target[named], reduction="sum")
            count += int(named.sum())
    return total / max(count, 1)


@dataclass
class GuidedSampler:
    """The pipeline's own sampling (DDIM, classifier-free guidance), stopped at one of the
    last ``grad_steps`` steps, which runs with gradients through its conditional branch."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict
    guidance: float = 7.5
    steps: int = 20
    grad_steps: int = 4

    def decoded_estimates(self, captions: list[str], gen: Any) -> Any:
        """Images (N, 3, 64, 64) in [-1, 1]: the decoded clean estimate of one of the last
        ``grad_steps`` steps, chosen at random, of sampling ``captions`` from noise."""
        import torch
        from diffusers import DDIMScheduler

        sampler = DDIMScheduler.from_config(self.scheduler_config)
        sampler.set_timesteps(self.steps)
        timesteps = list(sampler.timesteps)
        stop = len(timesteps) - 1 - int(torch.randint(self.grad_steps, (1,), generator=gen))
        n = len(captions)
        sf = self.vae.config.scaling_factor
        side = world.IMAGE_SIZE // 2 ** (len(self.vae.config.block_out_channels) - 1)
        latents = torch.randn((n, self.unet.config.in_channels, side, side), generator=gen)
        with torch.no_grad():
            cond = self.text_encoder(tokenize(self.tokenizer, captions, "cpu"))[0]
            uncond = self.text_encoder(tokenize(self.tokenizer, [""] * n, "cpu"))[0]
            states = torch.cat([uncond, cond])
            for t in timesteps[:stop]:
                eps_u, eps_c = self.unet(torch.cat([latents] * 2), t,
                                         encoder_hidden_states=states).sample.chunk(2)
                latents = sampler.step(eps_u + self.guidance * (eps_c - eps_u), t,
                                       latents).prev_sample
            t = timesteps[stop]
            eps_u = self.unet(latents, t, encoder_hidden_states=uncond).sample
        # No reward gradient through the unconditional prediction: negative prompts and
        # guidance itself lean on it (the weights are shared, so only the denoising loss
        # speaks for it).
        eps_c = self.unet(latents, t, encoder_hidden_states=cond).sample
        eps = eps_u + self.guidance * (eps_c - eps_u)
        clean = clean_estimate(sampler, latents, eps, t)
        return self.vae.decode(clean / sf).sample.clamp(-1, 1)


def prompt_batch(step: int, n: int) -> tuple[list[str], dict[str, Any]]:
    """``n`` one-object training captions that name a shape, and per head what each asks for."""
    import torch

    base = PROMPT_SEED_BASE + step * 4 * n
    _, captions, scenes = world.render_batch(range(base, base + 4 * n), tier=1,
                                             name_probability=0.5)
    keep = [i for i, c in enumerate(captions) if c][:n]
    scenes = [scenes[i] for i in keep]
    targets = {k: torch.from_numpy(v) for k, v in prompt_targets(scenes).items()}
    return [captions[i] for i in keep], targets


def denoising_loss(unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any,
                   step: int, batch: int, rng: np.random.Generator, gen: Any,
                   object_weight: float, snr_gamma: float, low_noise: tuple[float, int],
                   name_probability: float) -> Any:
    """The bundled recipe's denoising loss on freshly rendered and encoded scenes."""
    import torch

    images, captions = training_batch(REGULARISER_SEED_BASE + step * batch, batch, rng,
                                      name_probability=name_probability)
    with torch.no_grad():
        dist = vae.encode(to_tensor(images, "cpu")).latent_dist
        latents = (dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen))
        latents = latents * vae.config.scaling_factor
        cond = text_encoder(tokenize(tokenizer, captions, "cpu"))[0]
    noise = torch.randn(latents.shape, generator=gen)
    t = draw_timesteps(batch, gen, low_noise)
    pred = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=cond).sample
    error = (pred - noise) ** 2
    weight = 1.0 + object_weight * torch.from_numpy(object_mask(images, latents.shape[-1])).float()
    return (weighted_image_mean(error, weight) * min_snr_weights(scheduler, t, snr_gamma)).mean()


@dataclass
class RewardRecipe:
    """The options of one fine-tuning run (the command line passes every field)."""

    steps: int = 1000
    reward_batch: int = 8
    denoise_batch: int = 32
    lr: float = 2e-5
    reward_weight: float = 0.1
    guidance: float = 7.5
    grad_steps: int = 4
    ema: float = 0.0
    seed: int = 0
    max_seconds: float | None = None
    object_weight: float = 4.0
    snr_gamma: float = 50.0
    low_noise: tuple[float, int] = (0.25, 300)
    name_probability: float = 0.5


def finetune(folder: Path, out: Path, recipe: RewardRecipe, reward_net: Any,
             resume: bool = False) -> dict[str, Any]:
    """Reward fine-tune the UNet of the pipeline in ``folder`` and save the pipeline, with the
    tuned UNet (its weight average when ``recipe.ema``), in ``out``. Checkpoints go to
    ``out`` every few minutes; ``resume`` continues from the last one."""
    import copy
    import shutil

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(str(folder / "vae"))
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"))
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
    scheduler = DDPMScheduler.from_pretrained(str(folder / "scheduler"))
    sampler_config = DDIMScheduler.load_config(str(folder / "scheduler"))
    for module in (vae, text_encoder):
        module.eval().requires_grad_(False)
    unet.train()
    modules = {"unet": unet}
    if recipe.ema:
        modules["unet_ema"] = copy.deepcopy(unet).requires_grad_(False)
    sampler = GuidedSampler(unet, vae, text_encoder, tokenizer, sampler_config,
                            recipe.guidance, grad_steps=recipe.grad_steps)
    opt = torch.optim.AdamW(unet.parameters(), lr=recipe.lr, weight_decay=1e-2)
    start, extra = 0, {}
    if resume:
        phase = read_checkpoint_state(out).get("extra", {}).get("phase")
        if phase != "reward":
            raise TrainError(f"--resume: the checkpoint in {out} is not a --reward-only run's "
                             f"(phase {phase!r})")
        start, extra = load_checkpoint(out, modules, {"unet": opt})
    spent = float(extra.get("reward_seconds", 0.0))
    rewards: list[float] = list(extra.get("reward_losses", []))
    # Seeded by the start step too, so a resumed run draws new noise rather than replaying.
    gen = torch.Generator().manual_seed(recipe.seed * 7919 + start)
    rng = np.random.default_rng((recipe.seed, start, 17))
    bar = Progress(recipe.steps, start, desc="reward")
    phase_start = last_save = time.monotonic()
    done = start
    for step in range(start, recipe.steps):
        elapsed = spent + time.monotonic() - phase_start
        progress = step / recipe.steps
        if recipe.max_seconds:
            progress = max(progress, elapsed / recipe.max_seconds)
            if progress >= 1.0:
                bar.write(f"time budget reached after {step} steps")
                break
        factor = min(1.0, (step + 1) / 20) * 0.5 * (1 + np.cos(np.pi * progress))
        for g in opt.param_groups:
            g["lr"] = recipe.lr * factor
        captions, targets = prompt_batch(recipe.seed * 10**6 + step, recipe.reward_batch)
        images = sampler.decoded_estimates(captions, gen)
        reward = reward_loss(reward_net, images, targets, gen)
        denoise = denoising_loss(unet, vae, text_encoder, tokenizer, scheduler,
                                 recipe.seed * 10**6 + step, recipe.denoise_batch, rng, gen,
                                 recipe.object_weight, recipe.snr_gamma, recipe.low_noise,
                                 recipe.name_probability)
        loss = denoise + recipe.reward_weight * reward
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        if "unet_ema" in modules:
            update_average(modules["unet_ema"], unet, recipe.ema, step)
        rewards.append(reward.item())
        bar.update(denoise.item(), reward=rewards[-1])
        done = step + 1
        if time.monotonic() - last_save > CHECKPOINT_EVERY_S and done < recipe.steps:
            save_checkpoint(out, done, modules, {"unet": opt},
                            {"phase": "reward",
                             "reward_seconds": spent + time.monotonic() - phase_start,
                             "reward_losses": rewards})
            last_save = time.monotonic()
    seconds = spent + time.monotonic() - phase_start
    bar.close()
    if out.resolve() != folder.resolve():
        shutil.copytree(folder, out, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(CHECKPOINT_DIR + "*"))
    modules.get("unet_ema", unet).save_pretrained(str(out / "unet"), safe_serialization=True)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    return {"reward_steps": done, "reward_seconds": round(seconds, 1),
            "reward_loss_first_50": float(np.mean(rewards[:50])) if rewards else None,
            "reward_loss_last_50": float(np.mean(rewards[-50:])) if rewards else None}


PIPELINE_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def reward_only(args: Any) -> None:
    """``--reward-only``: reward fine-tune the UNet of ``--init-from`` (or of the pipeline
    already in ``--out``) and save the pipeline in ``--out``."""
    from studio.training.classifier import cache_dir

    if getattr(args, "device", "cpu") != "cpu":
        raise TrainError("--reward-only runs on the CPU only (pass --device cpu)")
    out = Path(args.out)
    folder = Path(args.init_from) if getattr(args, "init_from", None) else out
    if folder.resolve() != out.resolve() and folder.resolve() in out.resolve().parents:
        raise TrainError(f"--out {out} lies inside --init-from {folder}; choose another folder")
    for part in PIPELINE_PARTS:
        if not (folder / part).is_dir():
            raise TrainError(f"--reward-only: no {part}/ folder in {folder}")
    checks = {"--reward-weight": (args.reward_weight, args.reward_weight >= 0),
              "--reward-batch": (args.reward_batch, args.reward_batch > 0),
              "--reward-lr": (args.reward_lr, args.reward_lr > 0),
              "--reward-grad-steps": (args.reward_grad_steps, 0 < args.reward_grad_steps <= 20),
              "--reward-guidance": (args.reward_guidance, args.reward_guidance > 0)}
    for flag, (value, ok) in checks.items():
        if not ok:
            raise TrainError(f"{flag} out of range, got {value}")
    max_minutes = getattr(args, "max_minutes", None)
    recipe = RewardRecipe(
        steps=int(args.steps), reward_batch=int(args.reward_batch),
        denoise_batch=int(args.batch_size), lr=float(args.reward_lr),
        reward_weight=float(args.reward_weight), guidance=float(args.reward_guidance),
        grad_steps=int(args.reward_grad_steps), ema=float(getattr(args, "ema", 0.0) or 0.0),
        seed=int(args.seed or 0), max_seconds=max_minutes * 60 if max_minutes else None,
        object_weight=float(getattr(args, "object_weight", 0.0) or 0.0),
        snr_gamma=float(args.snr_gamma),
        low_noise=(float(args.low_noise_share or 0.0), int(args.low_noise_max)),
        name_probability=float(args.name_probability))
    net, accuracy = load_or_train_reward_net(cache_dir() / "reward")
    info = finetune(folder, out, recipe, net, resume=bool(args.resume))
    info["reward_recipe"] = {k: v for k, v in vars(recipe).items() if k != "max_seconds"}
    info["reward_net_heldout_accuracy"] = accuracy
    info["reward_init_from"] = str(folder)
    merge_training_state(out, info)
    print(f"saved {out}")
