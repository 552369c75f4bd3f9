"""Latent-space maths: lerp, slerp, grids, planes, truncation, PCA directions.

Pure torch, no models. A latent is any tensor; slerp treats the whole tensor
as one vector (the way seed travel treats an initial noise), and a batch of
interpolation frames is stacked on a new leading dimension.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# Above this cosine the two latents are treated as parallel: sin(omega) is too
# small to divide by, and lerp is then indistinguishable from slerp.
PARALLEL_DOT = 0.9995

MODES = ("lerp", "slerp")

# Models below this many parameters run on one CPU thread: a 64×64 sample is a few
# milliseconds of work, and splitting it over threads costs more than it saves —
# on a busy machine ten times more (measured in tests/benchmarks/bench_latent.py).
SMALL_MODEL_PARAMS = 20_000_000


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` intra-op threads (None: leave as is)."""
    before = torch.get_num_threads()
    if not count or count == before:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def threads_for(module: torch.nn.Module, device: str) -> int | None:
    """One thread for a small model on the CPU, else the default."""
    if device != "cpu":
        return None
    try:
        params = sum(p.numel() for p in module.parameters())
    except (AttributeError, RuntimeError):
        return None
    return 1 if params < SMALL_MODEL_PARAMS else None


def _as_t(t: float | Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64, device=like.device)


def _frames(value: torch.Tensor, ts: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-t value (shape ts.shape) against a latent of shape like.shape."""
    return value.reshape(*ts.shape, *([1] * like.dim()))


def lerp(a: torch.Tensor, b: torch.Tensor, t: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    """(1 - t) a + t b; t may be a scalar or a 1-D tensor of frame positions."""
    _check_pair(a, b)
    ts = _as_t(t, a)
    w = _frames(ts, ts, a)
    out = (1.0 - w) * a.double() + w * b.double()
    out = _pin_endpoints(out, a, b, ts)
    return out.to(a.dtype)


def slerp(
    a: torch.Tensor,
    b: torch.Tensor,
    t: float | Sequence[float] | torch.Tensor,
    parallel_dot: float = PARALLEL_DOT,
) -> torch.Tensor:
    """Spherical interpolation along the great circle from `a` to `b`.

    Norms are interpolated linearly, so two latents of equal norm give frames of
    that norm. Nearly parallel latents fall back to lerp with the same weighting,
    (1 - t) on `a` and t on `b` (t = 0 is `a`), so the fallback never runs the
    path backwards.
    """
    _check_pair(a, b)
    ts = _as_t(t, a)
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    dot = torch.clamp((a64 / na * (b64 / nb)).sum(), -1.0, 1.0)
    if dot > parallel_dot:
        return lerp(a, b, t)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    if so.abs() < 1e-12:  # antipodal: no unique great circle; lerp is the honest answer
        return lerp(a, b, t)
    wa = _frames(torch.sin((1.0 - ts) * omega) / so, ts, a)
    wb = _frames(torch.sin(ts * omega) / so, ts, a)
    unit = wa * (a64 / na) + wb * (b64 / nb)
    norm = _frames((1.0 - ts) * na + ts * nb, ts, a)
    out = unit / unit.flatten(ts.dim()).norm(dim=-1).reshape(norm.shape).clamp_min(1e-30) * norm
    out = _pin_endpoints(out, a, b, ts)
    return out.to(a.dtype)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, mode: str = "slerp") -> torch.Tensor:
    """`steps` frames from `a` to `b` inclusive, stacked on a new first dimension."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    ts = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    return blend(a, b, ts, mode)


def blend(a: torch.Tensor, b: torch.Tensor, t: float | Sequence[float] | torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "lerp":
        return lerp(a, b, t)
    if mode == "slerp":
        return slerp(a, b, t)
    raise ValueError(f"unknown interpolation mode {mode!r}: use lerp or slerp")


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"latents differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")


def _pin_endpoints(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    # The formulas give the endpoints only up to rounding; exact copies make a
    # strip's first and last frames identical to the encoded images.
    if ts.dim() == 0:
        if ts.item() == 0.0:
            return a.double().clone()
        if ts.item() == 1.0:
            return b.double().clone()
        return out
    out = out.clone()
    out[ts == 0.0] = a.double()
    out[ts == 1.0] = b.double()
    return out


# ---- grids and planes ----------------------------------------------------------


def grid_coords(n: int, extent: float | tuple[float, float, float, float]) -> torch.Tensor:
    """An n×n grid of 2-D points, row-major, top row first (y decreasing, like a plot).

    `extent` is a half-width around 0, or (x0, x1, y0, y1).
    """
    if n < 1:
        raise ValueError("a grid needs at least one point per side")
    if isinstance(extent, int | float):
        x0, x1, y0, y1 = -extent, extent, -extent, extent
    else:
        x0, x1, y0, y1 = extent
    xs = torch.linspace(x0, x1, n) if n > 1 else torch.tensor([(x0 + x1) / 2])
    ys = torch.linspace(y1, y0, n) if n > 1 else torch.tensor([(y0 + y1) / 2])
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1)


@dataclass(frozen=True)
class Plane:
    """The affine plane origin + x u + y v through three latents (u, v orthonormal)."""

    origin: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor

    def point(self, x: float, y: float) -> torch.Tensor:
        return self.origin + x * self.u + y * self.v

    def points(self, coords: torch.Tensor) -> torch.Tensor:
        """Latents at each (x, y) row of `coords`, stacked on a new first dimension."""
        c = coords.to(self.origin.dtype)
        shape = (-1, *([1] * self.origin.dim()))
        return self.origin + c[:, 0].reshape(shape) * self.u + c[:, 1].reshape(shape) * self.v

    def coords(self, latent: torch.Tensor) -> tuple[float, float]:
        d = (latent - self.origin).flatten()
        return float(d @ self.u.flatten()), float(d @ self.v.flatten())


def plane_through(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> Plane:
    """The plane through three latents, centred on their centroid.

    u points from a to b; v is the part of (c - a) orthogonal to u.
    """
    _check_pair(a, b)
    _check_pair(a, c)
    origin = (a + b + c) / 3.0
    u = b - a
    nu = u.norm()
    if nu < 1e-8:
        raise ValueError("the first two latents are the same point: pick three distinct images")
    u = u / nu
    w = c - a
    v = w - (w.flatten() @ u.flatten()) * u
    nv = v.norm()
    if nv < 1e-6 * max(float(w.norm()), 1e-8):
        raise ValueError("the three latents lie on one line: pick images that differ more")
    return Plane(origin, u, v / nv)


def plane_extent(points: Sequence[tuple[float, float]], margin: float = 0.25) -> tuple[float, float, float, float]:
    """A square (x0, x1, y0, y1) around plane points, padded by `margin` of its size."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    half = max(max(xs) - min(xs), max(ys) - min(ys), 1e-3) / 2 * (1 + 2 * margin)
    return cx - half, cx + half, cy - half, cy + half


# ---- sampling, truncation, PCA -------------------------------------------------------


def seeded_normal(seed: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) drawn on the CPU from its own generator: the same seed gives the same
    latent on every device and regardless of what else ran before."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=g, dtype=dtype)


def truncate(z: torch.Tensor, mean: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick: pull z toward the mean latent; psi = 1 leaves it, 0 gives the mean."""
    return mean + psi * (z - mean)


@dataclass(frozen=True)
class Directions:
    """Principal directions in latent space, with the spread of the data along each."""

    vectors: torch.Tensor  # (k, D), unit rows
    stds: torch.Tensor  # (k,)
    explained: torch.Tensor  # (k,) share of variance
    mean: torch.Tensor  # (D,)


def pca(data: torch.Tensor, k: int) -> Directions:
    """The top `k` principal components of the rows of `data` (N, D)."""
    x = data.double().flatten(1)
    n, d = x.shape
    k = max(1, min(k, n - 1, d))
    mean = x.mean(0)
    centred = x - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s**2 / max(n - 1, 1)
    vectors = vh[:k]
    # A sign convention so the same data gives the same sliders every time.
    flip = torch.sign(vectors[torch.arange(k), vectors.abs().argmax(1)])
    vectors = vectors * flip[:, None]
    return Directions(
        vectors.float(), var[:k].sqrt().float(), (var[:k] / var.sum()).float(), mean.float()
    )


def activation_directions(z: torch.Tensor, activations: torch.Tensor, k: int) -> Directions:
    """GANSpace for generators without a mapping network: PCA over an early layer's
    activations, carried back to latent space by regressing z on the PCA coordinates
    (Härkönen et al. 2020, section 3). Returns unit latent directions with the spread
    of the sampled z along each."""
    act = pca(activations, k)
    feats = activations.double().flatten(1) - act.mean.double()
    coords = feats @ act.vectors.double().T  # (N, k)
    zz = z.double().flatten(1)
    zc = zz - zz.mean(0)
    solution = torch.linalg.lstsq(coords, zc).solution  # (k, D)
    norms = solution.norm(dim=1, keepdim=True).clamp_min(1e-12)
    vectors = solution / norms
    stds = (zc @ vectors.T).std(0)
    return Directions(vectors.float(), stds.float(), act.explained, zz.mean(0).float())


def apply_directions(
    z: torch.Tensor, vectors: torch.Tensor, stds: torch.Tensor, amounts: Sequence[float]
) -> torch.Tensor:
    """z moved by amounts[i] standard deviations along each direction."""
    if len(amounts) == 0:
        return z
    a = torch.as_tensor(list(amounts), dtype=z.dtype)
    k = min(len(a), vectors.shape[0])
    delta = ((a[:k] * stds[:k].to(z.dtype))[:, None] * vectors[:k].to(z.dtype)).sum(0)
    return z + delta.reshape(z.shape)


def walk_keypoints(seed: int, count: int, shape: Sequence[int]) -> list[torch.Tensor]:
    return [seeded_normal(seed + i, shape) for i in range(count)]


def loop_path(keypoints: Sequence[torch.Tensor], frames: int, mode: str = "slerp") -> torch.Tensor:
    """`frames` latents along a closed path through the keypoints (last frame leads back
    to the first, so an animation loops without a jump)."""
    k = len(keypoints)
    if k < 2:
        raise ValueError("a walk needs at least two keypoints")
    out = []
    for i in range(frames):
        pos = i * k / frames
        j = int(math.floor(pos)) % k
        out.append(blend(keypoints[j], keypoints[(j + 1) % k], pos - math.floor(pos), mode))
    return torch.stack(out)
