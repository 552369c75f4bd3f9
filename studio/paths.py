"""Where bundled resources live, from source and from a frozen (PyInstaller) build."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _root() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root)
    return Path(__file__).resolve().parent.parent


def resource_path(*parts: str) -> Path:
    return _root().joinpath(*parts)


def models_dir() -> Path:
    override = os.environ.get("LATENT_STUDIO_MODELS")
    return Path(override) if override else resource_path("models")


def assets_dir() -> Path:
    return resource_path("assets")
