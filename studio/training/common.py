"""Shared training machinery: argument checks, progress bar, checkpoints.

Checkpoints are a folder ``<out>/checkpoint/`` with ``weights.safetensors``
(model and optimiser tensors, RNG state) and ``state.json`` (step, optimiser
hyper-parameters and any trainer-specific values). They are written to a
temporary folder and swapped in, so an interruption during a save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoint"
_WEIGHTS = "weights.safetensors"
_STATE = "state.json"


class TrainError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits non-zero."""


def check_args(args: argparse.Namespace) -> Path:
    """Validate the common options and make sure ``args.out`` is a writable folder."""
    if args.steps is not None and args.steps <= 0:
        raise TrainError(f"--steps must be a positive integer, got {args.steps}")
    if args.batch_size is not None and args.batch_size <= 0:
        raise TrainError(f"--batch-size must be a positive integer, got {args.batch_size}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"output folder {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise TrainError(f"output folder {out} is not writable ({exc.strerror or exc})") from None
    if getattr(args, "device", "cpu") == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise TrainError("--device cuda was asked for but no CUDA device is available")
    return out


class Progress:
    """A tqdm bar showing loss, steps/s and ETA; ``update(loss)`` once per step."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step",
                        dynamic_ncols=True, mininterval=1.0, smoothing=0.05)
        self._ema: float | None = None
        self.start = time.monotonic()

    def update(self, loss: float | None = None, **extra: float) -> None:
        if loss is not None and math.isfinite(loss):
            self._ema = loss if self._ema is None else 0.95 * self._ema + 0.05 * loss
        postfix = {"loss": f"{self._ema:.4f}"} if self._ema is not None else {}
        postfix.update({k: f"{v:.4g}" for k, v in extra.items()})
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    @property
    def loss(self) -> float | None:
        return self._ema

    def write(self, text: str) -> None:
        self.bar.write(text)

    def close(self) -> float:
        """Close the bar and return the wall time in seconds since it was created."""
        self.bar.close()
        return time.monotonic() - self.start


def _flatten_optimizer(name: str, opt: Any, tensors: dict, meta: dict) -> None:
    import torch

    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{name}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars,
                  "indices": [int(i) for i in sd["state"]]}


def _unflatten_optimizer(name: str, meta: dict, tensors: Mapping) -> dict:
    info = meta[name]
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix):].split(".", 1)
            state.setdefault(int(idx), {})[field] = value
    for idx, fields in info["scalars"].items():
        state.setdefault(int(idx), {}).update(fields)
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(
    out: Path | str,
    step: int,
    modules: Mapping[str, Any],
    optimizers: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save modules, optimisers, torch RNG state and ``extra`` (JSON-able) at ``step``."""
    import torch
    from safetensors.torch import save_file

    out = Path(out)
    tensors: dict[str, Any] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"model.{name}.{key}"] = value.detach().cpu().contiguous()
    optim_meta: dict[str, Any] = {}
    for name, opt in (optimizers or {}).items():
        _flatten_optimizer(name, opt, tensors, optim_meta)
    tensors["rng.torch"] = torch.get_rng_state()
    state = {"step": int(step), "optimizers": optim_meta, "extra": dict(extra or {}),
             "modules": sorted(modules)}
    tmp = out / (CHECKPOINT_DIR + ".tmp")
    final = out / CHECKPOINT_DIR
    old = out / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Shared tensors (tied weights) must be cloned for safetensors.
    save_file({k: v.clone() for k, v in tensors.items()}, str(tmp / _WEIGHTS))
    (tmp / _STATE).write_text(json.dumps(state, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def has_checkpoint(out: Path | str) -> bool:
    out = Path(out)
    return (out / CHECKPOINT_DIR).is_dir() or (out / (CHECKPOINT_DIR + ".old")).is_dir()


def read_checkpoint_state(out: Path | str) -> dict[str, Any]:
    """The JSON state of the checkpoint in ``out`` (step, extra, ...), without loading weights.

    Raises ``TrainError`` naming the file when it is missing or unreadable.
    """
    out = Path(out)
    folder = out / CHECKPOINT_DIR
    if not folder.is_dir() and (out / (CHECKPOINT_DIR + ".old")).is_dir():
        folder = out / (CHECKPOINT_DIR + ".old")
    state_file = folder / _STATE
    if not folder.is_dir():
        raise TrainError(f"--resume: no checkpoint in {out}")
    try:
        state = json.loads(state_file.read_text())
        int(state["step"])
        return state
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"corrupt checkpoint file {state_file}: {exc}") from None


def load_checkpoint(
    out: Path | str,
    modules: Mapping[str, Any],
    optimizers: Mapping[str, Any] | None = None,
) -> tuple[int, dict[str, Any]]:
    """Restore a checkpoint saved by ``save_checkpoint``; returns ``(step, extra)``.

    Raises ``TrainError`` naming the file when the checkpoint is missing or corrupt.
    """
    import torch
    from safetensors.torch import load_file

    out = Path(out)
    folder = out / CHECKPOINT_DIR
    if not folder.is_dir() and (out / (CHECKPOINT_DIR + ".old")).is_dir():
        folder = out / (CHECKPOINT_DIR + ".old")  # interrupted between swap steps
    if not folder.is_dir():
        raise TrainError(f"--resume: no checkpoint in {out}")
    weights, state_file = folder / _WEIGHTS, folder / _STATE
    try:
        state = json.loads(state_file.read_text())
        step = int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TrainError(f"corrupt checkpoint file {state_file}: {exc}") from None
    try:
        tensors = load_file(str(weights))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise TrainError(f"corrupt checkpoint file {weights}: {exc}") from None
    try:
        for name, module in modules.items():
            prefix = f"model.{name}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            module.load_state_dict(sd)
        for name, opt in (optimizers or {}).items():
            opt.load_state_dict(_unflatten_optimizer(name, state["optimizers"], tensors))
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainError(
            f"checkpoint {weights} does not match this model (different settings?): {first}"
        ) from None
    return step, dict(state.get("extra", {}))


def resolve_device(name: str | None) -> str:
    """``cpu`` or ``cuda``; ``None`` picks CUDA when available."""
    if name:
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


PRECISIONS = ("fp32", "bf16")


def autocast(device: str, precision: str):
    """Context for a forward pass: bfloat16 autocast, or nothing for fp32.

    Weights and optimiser state stay float32 either way. Whether it pays depends on
    the model: on this project's AVX-512 BF16 CPU the GAN's step is 1.6 times as
    fast, the shapes-diffusion UNet's slightly slower.
    """
    import contextlib

    import torch

    if precision not in PRECISIONS:
        raise TrainError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def update_average(average: Any, model: Any, decay: float, step: int) -> None:
    """One step of an exponential moving average of ``model``'s weights into ``average``.

    The decay warms up as ``(1 + step) / (10 + step)``, so the first steps follow the
    weights closely instead of dragging their starting point along; buffers (batch-norm
    statistics) are copied as they are.
    """
    import torch

    rate = 1.0 - min(decay, (1 + step) / (10 + step))
    with torch.no_grad():
        torch._foreach_lerp_(list(average.parameters()), list(model.parameters()), rate)
        for ba, bm in zip(average.buffers(), model.buffers(), strict=True):
            ba.copy_(bm)


def write_json(path: Path | str, data: Any) -> None:
    """Write JSON atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
