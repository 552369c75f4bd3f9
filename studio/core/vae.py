"""VAEs for latent exploration: diffusers AutoencoderKL folders (standalone or the
`vae` of a pipeline folder) and the project's 2-D VAE (config.json + safetensors).

Images cross this module as float tensors (N, 3, H, W) in [-1, 1]; latents are
the posterior mean, so encoding is deterministic. Handlers at the bottom run
the VAE requests of `studio.core.jobs` on the inference thread.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.errors import UserError
from studio.core.export import Frames, to_uint8
from studio.core.weights import load_module

PRIOR_PREFIX = "prior:"
DEFAULT_IMAGE_SIZE = 64


# ---- the model ---------------------------------------------------------------------


@dataclass
class LatentVae:
    """One VAE behind a common face: encode to the posterior mean, decode to [-1, 1]."""

    name: str
    kind: str  # "autoencoder-kl" or "vae-2d"
    module: Any
    image_size: int
    latent_shape: tuple[int, ...]
    device: str = "cpu"
    # Images the 2-D VAE expects in [0, 1] rather than [-1, 1].
    unit_range: bool = False
    # Prior samples are drawn as N(0, I) / scaling_factor for diffusers VAEs, whose
    # raw latents are scaled to unit variance only by that factor.
    prior_scale: float = 1.0
    threads: int | None = None  # intra-op threads for this model (see latent.threads_for)
    # Where the training data's encodings lie, per latent dimension, when the model
    # says (config "latent_range"): the 2-D map shows that box by default.
    latent_range: tuple[tuple[float, float], ...] = ()
    _encoded: dict[str, Any] = field(default_factory=dict, repr=False)

    def encode(self, images: Any) -> Any:
        import torch

        from studio.core.latent import torch_threads

        x = images.to(self.device, torch.float32)
        with torch.inference_mode(), torch_threads(self.threads):
            if self.kind == "autoencoder-kl":
                return self.module.encode(x).latent_dist.mean.float()
            if self.unit_range:
                x = (x + 1) / 2
            mu, _ = self.module.encode(x)
            return mu.float()

    def decode(self, latents: Any, batch: int = 64) -> Any:
        import torch

        from studio.core.latent import torch_threads

        outs = []
        with torch.inference_mode(), torch_threads(self.threads):
            for i in range(0, latents.shape[0], batch):
                z = latents[i : i + batch].to(self.device, torch.float32)
                if self.kind == "autoencoder-kl":
                    y = self.module.decode(z).sample
                else:
                    y = self.module.decode(z)
                    if self.unit_range:
                        y = y * 2 - 1
                outs.append(y.float().cpu())
        return torch.cat(outs).clamp(-1, 1)

    def prior(self, seed: int) -> Any:
        from studio.core.latent import seeded_normal

        return seeded_normal(seed, self.latent_shape) * self.prior_scale

    def endpoint(self, source: str) -> tuple[Any, tuple[str, ...]]:
        """The latent of an endpoint ("prior:SEED" or an image path) and any notices.

        Encodings are kept per file version, so scrubbing does not re-encode."""
        if source.startswith(PRIOR_PREFIX):
            try:
                seed = int(source[len(PRIOR_PREFIX) :])
            except ValueError:
                raise UserError(f"{source!r} is not a prior sample: use prior:SEED.") from None
            return self.prior(seed), ()
        path = Path(source)
        try:
            key = f"{path.resolve()}:{path.stat().st_mtime_ns}"
        except OSError:
            raise UserError(f"Cannot read {path}: the file does not exist.") from None
        if key not in self._encoded:
            pixels, notices = load_image(path, self.image_size)
            latent = self.encode(image_tensor([pixels]))[0].cpu()
            if len(self._encoded) > 256:
                self._encoded.clear()
            self._encoded[key] = (latent, notices)
        return self._encoded[key]


def model_path(model: str) -> Path:
    from studio.core.registry import resolve_model

    return resolve_model(model)


def load_vae(model: str, device: str = "cpu") -> LatentVae:
    """A VAE from a picker name or a folder: AutoencoderKL, a pipeline's `vae`, or the 2-D VAE."""
    from studio.core.latent import threads_for
    from studio.core.registry import classify

    path = model_path(model)
    kind = classify(path)
    if kind == "diffusers-pipeline":
        if not (path / "vae" / "config.json").is_file():
            raise UserError(f"The pipeline at {path} has no vae/ folder to load.")
        vae = _load_autoencoder_kl(path / "vae", path.name, device)
        vae.name = f"{path.name} (VAE)"
    elif kind == "autoencoder-kl":
        vae = _load_autoencoder_kl(path, path.name, device)
    elif kind == "vae-2d":
        vae = _load_vae2d(path, device)
    else:
        raise UserError(
            f"{path} is not a VAE: pick an AutoencoderKL folder, a diffusers pipeline folder "
            "or a project VAE (config.json + model.safetensors)."
        )
    vae.threads = threads_for(vae.module, device)
    return vae


def _load_autoencoder_kl(folder: Path, name: str, device: str) -> LatentVae:
    import torch
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32, low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"Cannot load the VAE in {folder}: {_first_line(exc)}", str(exc)) from None
    vae.to(device).eval()
    cfg = vae.config
    size = int(cfg.get("sample_size") or DEFAULT_IMAGE_SIZE)
    if isinstance(cfg.get("sample_size"), list | tuple):
        size = int(cfg["sample_size"][0])
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    latent_shape = (int(cfg.latent_channels), size // factor, size // factor)
    scale = float(cfg.get("scaling_factor") or 1.0)
    return LatentVae(name, "autoencoder-kl", vae, size, latent_shape, device, prior_scale=1.0 / scale)


def _build_vae2d(config: dict[str, Any]) -> Any:
    try:
        from studio.training.vae2d_model import build_vae2d
    except ImportError:
        from studio.training.train_vae import build_vae2d
    return build_vae2d(config)


def _load_vae2d(folder: Path, device: str) -> LatentVae:
    import torch

    config = _read_config(folder)
    module = load_module(folder, config, _build_vae2d, "a 2-D VAE")
    module.to(device).eval()
    size = int(config.get("image_size", config.get("resolution", DEFAULT_IMAGE_SIZE)))
    latent_dim = int(config.get("latent_dim", config.get("z_dim", 2)))
    unit = str(config.get("output_range", config.get("value_range", "-1,1"))).replace(" ", "") in (
        "0,1",
        "[0,1]",
        "unit",
    ) or config.get("output_activation") == "sigmoid"
    # Take the latent size from the module itself when it says so.
    with torch.inference_mode():
        probe = torch.zeros(1, int(config.get("in_channels", 3)), size, size, device=device)
        try:
            mu, _ = module.encode(probe)
        except Exception as exc:
            raise UserError(f"The 2-D VAE in {folder} fails on a {size}×{size} image: {_first_line(exc)}") from None
    latent_shape = tuple(mu.shape[1:]) or (latent_dim,)
    vae = LatentVae(folder.name, "vae-2d", module, size, latent_shape, device, unit_range=unit)
    box = config.get("latent_range")
    if isinstance(box, list) and all(isinstance(r, list) and len(r) == 2 for r in box):
        vae.latent_range = tuple((float(r[0]), float(r[1])) for r in box)
    return vae


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder} has no config.json.") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder / 'config.json'} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{folder / 'config.json'} is not a JSON object.")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def cached_vae(ctx: Any, model: str) -> LatentVae:
    path = model_path(model)
    return ctx.models.get(f"vae:{path.resolve()}", lambda: load_vae(str(path), ctx.device), group="vae")


def _scoped(handler: Any) -> Any:
    """Run a handler with its VAE's thread count for all of its torch work."""
    import functools

    @functools.wraps(handler)
    def run(job: Any, ctx: Any) -> Any:
        from studio.core.latent import torch_threads

        with torch_threads(cached_vae(ctx, job.model).threads):
            return handler(job, ctx)

    return run


# ---- images in ---------------------------------------------------------------------


def load_image(path: str | os.PathLike[str], size: int = DEFAULT_IMAGE_SIZE) -> tuple[Any, tuple[str, ...]]:
    """An image file as size×size RGB uint8, with a notice for each change made to it.

    Transparency is composited on white, greyscale and palette images become RGB,
    other shapes are centre-cropped to a square and resized."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            image = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise UserError(f"Cannot read {p}: the file does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UserError(f"{p.name} is not an image file this studio can read (PNG, JPEG, WebP, ...).") from None
    notices = []
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        notices.append(f"{p.name} has transparency; it was placed on white.")
    elif image.mode in ("L", "1", "I", "I;16", "F"):
        image = image.convert("L").convert("RGB")
        notices.append(f"{p.name} is greyscale; it was converted to RGB.")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if (w, h) != (size, size):
        side = min(w, h)
        if w != h:
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
            notices.append(f"{p.name} is {w}×{h}; it was centre-cropped to a square and resized to {size}×{size}.")
        else:
            notices.append(f"{p.name} is {w}×{h}; it was resized to {size}×{size}.")
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy(), tuple(notices)


def image_tensor(images: list[Any]) -> Any:
    """HxWx3 uint8 arrays → (N, 3, H, W) float tensor in [-1, 1]."""
    import numpy as np
    import torch

    arr = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def psnr(a: Any, b: Any) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images."""
    import numpy as np

    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ---- results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentMap:
    """A decoded grid over a latent plane, with the chosen images marked."""

    image: Any  # the mosaic, (grid*size)x(grid*size)x3 uint8
    grid: int
    tile: int
    extent: tuple[float, float, float, float]  # x0, x1, y0, y1 in plane coordinates
    markers: tuple[tuple[float, float, str], ...]
    two_d: bool
    notices: tuple[str, ...] = ()
    request: Any = None


@dataclass(frozen=True)
class Frame:
    image: Any
    params: dict[str, Any]
    notices: tuple[str, ...] = ()
    request: Any = None


@dataclass(frozen=True)
class Reconstruction:
    original: Any
    reconstruction: Any
    psnr: float
    notices: tuple[str, ...] = ()
    request: Any = None


# ---- handlers ------------------------------------------------------------------------------


def _endpoints(vae: LatentVae, a: str, b: str) -> tuple[Any, Any, tuple[str, ...]]:
    za, na = vae.endpoint(a)
    zb, nb = vae.endpoint(b)
    return za, zb, na + nb


@_scoped
def run_interpolate(job: Any, ctx: Any) -> Frames:
    from studio.core.latent import interpolate

    vae = cached_vae(ctx, job.model)
    za, zb, notices = _endpoints(vae, job.a, job.b)
    ctx.check_cancel()
    try:
        latents = interpolate(za, zb, job.steps, job.mode)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    frames = to_uint8(vae.decode(latents))
    ts = [i / (job.steps - 1) for i in range(job.steps)]
    params = tuple({"a": job.a, "b": job.b, "t": t, "mode": job.mode, "model": job.model} for t in ts)
    return Frames(tuple(frames), params, notices, job, tuple(f"t={t:.2f}" for t in ts))


@_scoped
def run_scrub(job: Any, ctx: Any) -> Frame:
    from studio.core.latent import blend

    vae = cached_vae(ctx, job.model)
    za, zb, notices = _endpoints(vae, job.a, job.b)
    t = min(1.0, max(0.0, float(job.t)))
    z = blend(za, zb, t, job.mode)
    image = to_uint8(vae.decode(z[None]))[0]
    return Frame(image, {"a": job.a, "b": job.b, "t": t, "mode": job.mode}, notices, job)


@_scoped
def run_prior_grid(job: Any, ctx: Any) -> Frames:
    import torch

    vae = cached_vae(ctx, job.model)
    if job.count < 1:
        raise UserError("Ask for at least one prior sample.")
    seeds = [job.seed + i for i in range(job.count)]
    latents = torch.stack([vae.prior(s) for s in seeds])
    frames = to_uint8(vae.decode(latents))
    params = tuple({"endpoint": f"{PRIOR_PREFIX}{s}", "model": job.model} for s in seeds)
    return Frames(tuple(frames), params, (), job, tuple(f"seed {s}" for s in seeds))


def _plane(vae: LatentVae, images: tuple[str, ...]) -> tuple[Any, list[Any], tuple[str, ...]]:
    from studio.core.latent import plane_through

    if len(images) != 3:
        raise UserError(
            f"This VAE's latent has {math.prod(vae.latent_shape)} numbers: pick three images "
            "to span the plane of the map."
        )
    latents, notices = [], ()
    for src in images:
        z, n = vae.endpoint(src)
        latents.append(z)
        notices += n
    try:
        return plane_through(*latents), latents, notices
    except ValueError as exc:
        raise UserError(str(exc).capitalize() + ".") from None


def _is_2d(vae: LatentVae) -> bool:
    return math.prod(vae.latent_shape) == 2


@_scoped
def run_latent_map(job: Any, ctx: Any) -> LatentMap:
    from studio.core.export import grid as tile_grid
    from studio.core.latent import grid_coords, plane_extent

    vae = cached_vae(ctx, job.model)
    if not 2 <= job.grid <= 32:
        raise UserError("The map grid must be between 2 and 32 tiles a side.")
    markers: list[tuple[float, float, str]] = []
    notices: tuple[str, ...] = ()
    if _is_2d(vae):
        for src in job.images:
            z, n = vae.endpoint(src)
            notices += n
            markers.append((float(z.flatten()[0]), float(z.flatten()[1]), _label(src)))
        extent = _map_extent(vae, job.extent)
        coords = grid_coords(job.grid, extent)
        latents = coords.reshape(-1, *vae.latent_shape)
    else:
        plane, latents_abc, notices = _plane(vae, job.images)
        pts = [plane.coords(z) for z in latents_abc]
        markers = [(x, y, _label(src)) for (x, y), src in zip(pts, job.images, strict=True)]
        extent = plane_extent(pts)
        coords = grid_coords(job.grid, extent)
        latents = plane.points(coords)
    tiles = []
    total = latents.shape[0]
    chunk = max(1, job.grid)
    for i in range(0, total, chunk):
        tiles.extend(to_uint8(vae.decode(latents[i : i + chunk])))
        ctx.progress(min(i + chunk, total), total)
    mosaic = tile_grid(tiles, columns=job.grid)
    return LatentMap(mosaic, job.grid, vae.image_size, extent, tuple(markers), _is_2d(vae), notices, job)


def _map_extent(vae: LatentVae, half_width: float) -> tuple[float, float, float, float]:
    """The 2-D map's box: ±half_width, or (half_width <= 0) the model's latent range
    padded by a tenth, else ±3 standard deviations of the prior."""
    if half_width > 0:
        return (-half_width, half_width, -half_width, half_width)
    if len(vae.latent_range) == 2:
        (x0, x1), (y0, y1) = vae.latent_range
        px, py = (x1 - x0) * 0.1, (y1 - y0) * 0.1
        return (x0 - px, x1 + px, y0 - py, y1 + py)
    return (-3.0, 3.0, -3.0, 3.0)


@_scoped
def run_decode_point(job: Any, ctx: Any) -> Frame:
    import torch

    vae = cached_vae(ctx, job.model)
    if _is_2d(vae):
        z = torch.tensor([job.x, job.y], dtype=torch.float32).reshape(vae.latent_shape)
        notices: tuple[str, ...] = ()
    else:
        plane, _, notices = _plane(vae, job.images)
        z = plane.point(job.x, job.y)
    image = to_uint8(vae.decode(z[None]))[0]
    return Frame(image, {"x": job.x, "y": job.y, "images": list(job.images)}, notices, job)


@_scoped
def run_reconstruct(job: Any, ctx: Any) -> Reconstruction:
    vae = cached_vae(ctx, job.model)
    pixels, notices = load_image(job.image, vae.image_size)
    z = vae.encode(image_tensor([pixels]))
    recon = to_uint8(vae.decode(z))[0]
    return Reconstruction(pixels, recon, psnr(pixels, recon), notices, job)


def _label(source: str) -> str:
    return source if source.startswith(PRIOR_PREFIX) else Path(source).stem
