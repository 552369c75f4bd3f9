"""Device and dtype choice (CUDA, then Apple MPS, then CPU) and memory-failure handling."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceInfo:
    device: str  # "cuda", "mps" or "cpu"
    name: str  # what the status bar shows
    half_precision: bool

    @property
    def dtype(self) -> Any:
        import torch

        return torch.float16 if self.half_precision else torch.float32


def choose_device(preference: str = "auto", allow_half: bool = True) -> DeviceInfo:
    """Pick the device; `preference` is "auto", "cuda", "mps" or "cpu"."""
    import torch

    if preference not in ("auto", "cuda", "mps", "cpu"):
        raise ValueError(f"unknown device {preference!r}: use auto, cuda, mps or cpu")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return DeviceInfo("cuda", torch.cuda.get_device_name(0), allow_half)
    mps = getattr(torch.backends, "mps", None)
    if preference in ("auto", "mps") and mps is not None and mps.is_available():
        return DeviceInfo("mps", "Apple MPS", allow_half)
    if preference not in ("auto", "cpu"):
        # Asked for a device this machine lacks: say so, rather than silently differ.
        name = f"CPU ({preference} not available)"
    else:
        name = "CPU"
    return DeviceInfo("cpu", name, False)


def is_out_of_memory(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "mps backend out of memory" in text
    )


def release_memory(device: str) -> None:
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def memory_summary(device: str) -> str:
    """One line for the status bar: used / total memory of the device."""
    import torch

    if device == "cuda" and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return f"{(total - free) / 2**30:.1f} / {total / 2**30:.1f} GiB"
    return ""
