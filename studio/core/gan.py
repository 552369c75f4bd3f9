"""GAN generators: the project's DCGAN (config.json + model.safetensors) and any
TorchScript generator (`torch.jit.load`, z → image).

A sample is a function of its seed alone: z is drawn from its own CPU generator,
so seed 7 looks the same in a grid of 16, on its own, or on another device.
Truncation pulls z toward the mean latent. PCA directions follow GANSpace.
Handlers at the bottom run the GAN requests of `studio.core.jobs`.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.errors import UserError
from studio.core.export import Frames, to_uint8
from studio.core.weights import load_module

Z_DIM_KEYS = ("z_dim", "latent_dim", "nz", "z_size")
METADATA_FILE = "metadata.json"


# ---- the model ------------------------------------------------------------------------


@dataclass
class Generator:
    name: str
    kind: str  # "gan" or "torchscript-gan"
    module: Any
    z_dim: int
    device: str = "cpu"
    # DCGANs written with a ConvTranspose first layer take z as (N, D, 1, 1).
    z_as_map: bool = False
    unit_range: bool = False
    mean: Any = None  # the mean latent; zeros for a N(0, I) prior
    notices: tuple[str, ...] = ()
    threads: int | None = None  # intra-op threads for this model (see latent.threads_for)

    def z(self, seed: int) -> Any:
        from studio.core.latent import seeded_normal

        return seeded_normal(seed, (self.z_dim,))

    def mean_latent(self) -> Any:
        import torch

        return self.mean if self.mean is not None else torch.zeros(self.z_dim)

    def generate(self, z: Any, batch: int = 64) -> Any:
        """(N, z_dim) latents → (N, C, H, W) images in [-1, 1] on the CPU."""
        import torch

        from studio.core.latent import torch_threads

        outs = []
        with torch.inference_mode(), torch_threads(self.threads):
            for i in range(0, z.shape[0], batch):
                chunk = z[i : i + batch].to(self.device, torch.float32)
                if self.z_as_map:
                    chunk = chunk[:, :, None, None]
                y = self.module(chunk)
                if isinstance(y, tuple | list):
                    y = y[0]
                if self.unit_range:
                    y = y * 2 - 1
                outs.append(y.float().cpu())
        return torch.cat(outs).clamp(-1, 1)


def model_path(model: str) -> Path:
    from studio.core.registry import resolve_model

    return resolve_model(model)


def load_generator(model: str, device: str = "cpu", z_dim: int = 0) -> Generator:
    from studio.core.registry import classify

    path = model_path(model)
    kind = classify(path)
    if kind == "gan":
        gen = _load_dcgan(path, device)
    elif kind == "torchscript-gan" or (path.is_file() and path.suffix.lower() in (".pt", ".ts", ".pth", ".torchscript")):
        gen = _load_torchscript(path, device, z_dim)
    else:
        raise UserError(
            f"{path} is not a GAN generator: pick a DCGAN folder (config.json + model.safetensors) "
            "or a TorchScript file saved with torch.jit.save."
        )
    if z_dim and z_dim != gen.z_dim:
        raise UserError(f"{path.name} takes z of size {gen.z_dim}, not {z_dim}.")
    from studio.core.latent import threads_for

    gen.threads = threads_for(gen.module, device)
    _probe(gen, path)
    return gen


def _z_dim_from(data: dict[str, Any]) -> int:
    for key in Z_DIM_KEYS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def _build_generator(config: dict[str, Any]) -> Any:
    from studio.training.gan_model import build_generator

    return build_generator(config)


def _load_dcgan(folder: Path, device: str) -> Generator:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"Cannot read {folder / 'config.json'}: {exc}") from None
    z_dim = _z_dim_from(config)
    if not z_dim:
        raise UserError(f"{folder / 'config.json'} does not give the z size ({', '.join(Z_DIM_KEYS)}).")
    module = load_module(folder, config, _build_generator, "a DCGAN generator")
    module.to(device).eval()
    unit = config.get("output_range") in ("0,1", [0, 1])
    return Generator(folder.name, "gan", module, z_dim, device, unit_range=unit)


def torchscript_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The generator's metadata without loading torch: an extra file `metadata.json`
    saved with `torch.jit.save(..., _extra_files=...)`, else a `<name>.json` beside it."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            for name in zf.namelist():
                if name.endswith(f"/extra/{METADATA_FILE}"):
                    data = json.loads(zf.read(name).decode("utf-8") or "{}")
                    if isinstance(data, dict) and data:
                        return data
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError):
        pass
    side = p.with_suffix(".json")
    if side.is_file():
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except (OSError, ValueError):
            pass
    return {}


def torchscript_z_dim(path: str | os.PathLike[str]) -> int:
    """The z size a TorchScript generator declares, or 0 when it declares none."""
    return _z_dim_from(torchscript_metadata(path))


def _load_torchscript(path: Path, device: str, z_dim: int) -> Generator:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but remains how generators are shared.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch raises RuntimeError or its own for non-TorchScript files
        raise UserError(f"{path.name} is not a TorchScript module torch.jit.load can read: {_first_line(exc)}") from None
    module.eval()
    meta = torchscript_metadata(path)
    declared = _z_dim_from(meta)
    if not declared:
        attr = getattr(module, "z_dim", None)
        declared = attr if isinstance(attr, int) and attr > 0 else 0
    if declared and z_dim and declared != z_dim:
        raise UserError(f"{path.name} declares z of size {declared}, not {z_dim}.")
    size = declared or z_dim
    if not size:
        raise UserError(
            f"{path.name} does not say its z size: give it (the GAN pane asks once; "
            "the CLI takes --z-dim), or save it with a metadata.json extra file."
        )
    unit = meta.get("output_range") in ("0,1", [0, 1])
    mean = None
    if isinstance(meta.get("latent_mean"), list) and len(meta["latent_mean"]) == size:
        mean = torch.tensor(meta["latent_mean"], dtype=torch.float32)
    return Generator(path.stem, "torchscript-gan", module, size, device, unit_range=unit, mean=mean)


def _probe(gen: Generator, path: Path) -> None:
    """Run one sample so a generator that raises or takes another z size fails at
    load time, with a message, rather than in every later request."""
    import torch

    z = torch.zeros(1, gen.z_dim)
    errors = []
    for as_map in (gen.z_as_map, not gen.z_as_map):
        gen.z_as_map = as_map
        try:
            out = gen.generate(z)
            break
        except Exception as exc:  # any failure inside a user's module is reported, not raised
            errors.append(exc)
    else:
        raise UserError(
            f"The generator {path.name} failed on z of size {gen.z_dim} "
            f"(is that its z size?): {_first_line(errors[0])}",
            "\n".join(repr(e) for e in errors),
        )
    if out.dim() != 4 or out.shape[1] not in (1, 3):
        raise UserError(
            f"The generator {path.name} returned shape {tuple(out.shape)}; an image batch "
            "(N, 3, H, W) or (N, 1, H, W) was expected."
        )


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # TorchScript errors put the user's message on the last line, after the trace.
    line = lines[-1] if "Traceback" in lines[0] or "The following operation failed" in str(exc) else lines[0]
    return line.strip()[:300]


def cached_generator(ctx: Any, model: str, z_dim: int = 0) -> Generator:
    path = model_path(model)
    return ctx.models.get(
        f"gan:{path.resolve()}:{z_dim}", lambda: load_generator(str(path), ctx.device, z_dim), group="gan"
    )


def _scoped(handler: Any) -> Any:
    """Run a handler with its generator's thread count for all of its torch work."""
    import functools

    @functools.wraps(handler)
    def run(job: Any, ctx: Any) -> Any:
        from studio.core.latent import torch_threads

        gen = cached_generator(ctx, job.model, job.z_dim)
        with torch_threads(gen.threads):
            return handler(job, ctx)

    return run


# ---- latents --------------------------------------------------------------------------------


def latents_for(gen: Generator, seeds: list[int] | tuple[int, ...], psi: float) -> Any:
    import torch

    from studio.core.latent import truncate

    z = torch.stack([gen.z(s) for s in seeds])
    return truncate(z, gen.mean_latent(), psi)


# ---- PCA directions -------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectionSet:
    """Named latent directions, stored as plain lists so they cross threads and JSON."""

    model: str
    source: str
    z_dim: int
    names: tuple[str, ...]
    vectors: tuple[tuple[float, ...], ...]
    stds: tuple[float, ...]
    explained: tuple[float, ...] = ()
    notices: tuple[str, ...] = ()

    def renamed(self, index: int, name: str) -> DirectionSet:
        names = list(self.names)
        names[index] = name.strip() or names[index]
        return DirectionSet(self.model, self.source, self.z_dim, tuple(names), self.vectors, self.stds, self.explained)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "latent-studio-directions",
            "version": 1,
            "model": self.model,
            "source": self.source,
            "z_dim": self.z_dim,
            "directions": [
                {"name": n, "std": s, "explained": e, "vector": list(v)}
                for n, s, e, v in zip(
                    self.names, self.stds, self.explained or (0.0,) * len(self.names), self.vectors, strict=True
                )
            ],
        }


def save_directions(directions: DirectionSet, path: str | os.PathLike[str]) -> Path:
    import tempfile

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".directions-", suffix=".json", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(directions.to_json(), fh, indent=1)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def load_directions(path: str | os.PathLike[str]) -> DirectionSet:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        items = data["directions"]
        z_dim = int(data["z_dim"])
        vectors = tuple(tuple(float(x) for x in d["vector"]) for d in items)
        if any(len(v) != z_dim for v in vectors):
            raise ValueError("a vector's length differs from z_dim")
        return DirectionSet(
            str(data.get("model", "")),
            str(data.get("source", "")),
            z_dim,
            tuple(str(d.get("name") or f"PC{i + 1}") for i, d in enumerate(items)),
            vectors,
            tuple(float(d.get("std", 1.0)) for d in items),
            tuple(float(d.get("explained", 0.0)) for d in items),
        )
    except OSError as exc:
        raise UserError(f"Cannot read {p}: {exc.strerror or exc}.") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{p.name} is not a saved set of directions: {exc}.") from None


def early_layer(module: Any) -> Any | None:
    """The output of the generator's first block: the first activation layer, as in
    GANSpace's choice of an early layer for BigGAN. None for TorchScript modules,
    which do not take forward hooks."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return None
    activations = (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.GELU, torch.nn.SiLU, torch.nn.Tanh)
    for _, sub in module.named_modules():
        if isinstance(sub, activations):
            return sub
    return None


def compute_directions(gen: Generator, source: str, count: int, samples: int, seed: int, ctx: Any = None) -> DirectionSet:
    import torch

    from studio.core.latent import activation_directions, pca, seeded_normal

    if source not in ("latent", "activations"):
        raise UserError(f"Unknown direction source {source!r}: use latent or activations.")
    if samples < count + 1:
        raise UserError(f"PCA for {count} directions needs more than {count} samples.")
    z = seeded_normal(seed, (samples, gen.z_dim))
    notices: tuple[str, ...] = ()
    layer = early_layer(gen.module) if source == "activations" else None
    if source == "activations" and layer is None:
        notices = ("This generator does not expose its layers (TorchScript); PCA ran over sampled latents.",)
        source = "latent"
    if source == "latent":
        found = pca(z, count)
    else:
        captured: list[Any] = []
        for i in range(0, samples, 256):
            # Hooked only around our own batch: progress() may serve interactive
            # requests on the same generator, whose activations must not count.
            hook = layer.register_forward_hook(lambda m, i, o: captured.append(o.detach().flatten(1).cpu()))
            try:
                gen.generate(z[i : i + 256])
            finally:
                hook.remove()
            if ctx is not None:
                ctx.progress(min(i + 256, samples), samples)
        acts = torch.cat(captured)
        found = activation_directions(z, acts, count)
    k = found.vectors.shape[0]
    return DirectionSet(
        gen.name,
        source,
        gen.z_dim,
        tuple(f"PC{i + 1}" for i in range(k)),
        tuple(tuple(float(x) for x in v) for v in found.vectors.tolist()),
        tuple(float(s) for s in found.stds.tolist()),
        tuple(float(e) for e in found.explained.tolist()),
        notices,
    )


# ---- handlers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GanFrame:
    image: Any
    seed: int
    truncation: float
    amounts: tuple[float, ...] = ()
    request: Any = None


@_scoped
def run_sample(job: Any, ctx: Any) -> Frames:
    gen = cached_generator(ctx, job.model, job.z_dim)
    if not job.seeds:
        raise UserError("No seeds to sample.")
    frames = to_uint8(gen.generate(latents_for(gen, job.seeds, job.truncation)))
    params = tuple({"model": job.model, "seed": s, "truncation": job.truncation} for s in job.seeds)
    return Frames(tuple(frames), params, gen.notices, job, tuple(str(s) for s in job.seeds))


@_scoped
def run_edit(job: Any, ctx: Any) -> GanFrame:
    import torch

    from studio.core.latent import apply_directions

    gen = cached_generator(ctx, job.model, job.z_dim)
    z = latents_for(gen, [job.seed], job.truncation)[0]
    if job.directions and job.amounts:
        vectors = torch.tensor(job.directions, dtype=torch.float32)
        if vectors.shape[1] != gen.z_dim:
            raise UserError(f"These directions are for z of size {vectors.shape[1]}; this generator takes {gen.z_dim}.")
        stds = torch.tensor(job.stds or (1.0,) * len(job.directions), dtype=torch.float32)
        z = apply_directions(z, vectors, stds, job.amounts)
    image = to_uint8(gen.generate(z[None]))[0]
    return GanFrame(image, job.seed, job.truncation, tuple(job.amounts), job)


@_scoped
def run_interpolate(job: Any, ctx: Any) -> Frames:
    from studio.core.latent import interpolate, truncate

    gen = cached_generator(ctx, job.model, job.z_dim)
    if job.frames < 2:
        raise UserError("An interpolation needs at least 2 frames.")
    path = interpolate(gen.z(job.seed_a), gen.z(job.seed_b), job.frames, job.mode)
    frames = to_uint8(gen.generate(truncate(path, gen.mean_latent(), job.truncation)))
    ts = [i / (job.frames - 1) for i in range(job.frames)]
    params = tuple(
        {"model": job.model, "seed_a": job.seed_a, "seed_b": job.seed_b, "t": t, "mode": job.mode, "truncation": job.truncation}
        for t in ts
    )
    return Frames(tuple(frames), params, (), job)


@_scoped
def run_walk(job: Any, ctx: Any) -> Frames:
    from studio.core.latent import loop_path, truncate, walk_keypoints

    gen = cached_generator(ctx, job.model, job.z_dim)
    if job.frames < 2 or job.keypoints < 2:
        raise UserError("A walk needs at least 2 frames and 2 keypoints.")
    path = loop_path(walk_keypoints(job.seed, job.keypoints, (gen.z_dim,)), job.frames)
    frames = to_uint8(gen.generate(truncate(path, gen.mean_latent(), job.truncation)))
    params = tuple({"model": job.model, "seed": job.seed, "keypoints": job.keypoints, "frame": i} for i in range(job.frames))
    return Frames(tuple(frames), params, (), job)


@_scoped
def run_directions(job: Any, ctx: Any) -> DirectionSet:
    gen = cached_generator(ctx, job.model, job.z_dim)
    return compute_directions(gen, job.source, job.count, job.samples, job.seed, ctx)
