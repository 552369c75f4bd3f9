"""Loading the project's own modules: `config.json` + `model.safetensors`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio.core.errors import UserError


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def mismatch_summary(exc: BaseException) -> str:
    """The lines of a load_state_dict error a person needs: which shapes or keys differ."""
    lines = [
        ln.strip()
        for ln in str(exc).splitlines()
        if "size mismatch" in ln or "Missing" in ln or "Unexpected" in ln
    ]
    return "; ".join(lines[:2]) or first_line(exc)


def load_module(folder: Path, config: dict[str, Any], build: Callable[[dict[str, Any]], Any], what: str) -> Any:
    """Build the module `config` describes and load its safetensors weights strictly;
    every way this can fail names the file at fault."""
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{folder} has no model.safetensors.")
    try:
        module = build(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{folder / 'config.json'} does not describe {what}: {exc}") from None
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise UserError(f"{weights} is not a readable safetensors file: {first_line(exc)}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(
            f"The weights in {weights.name} do not match {folder / 'config.json'}: {mismatch_summary(exc)}",
            str(exc),
        ) from None
    return module
