"""Model discovery: bundled `models/`, folders the user adds, and the local HF cache.

Offline and import-light (no torch): a folder's kind is read from its JSON
configs, and a TorchScript archive is told from a plain pickle by its zip
listing, so the picker fills quickly at start-up.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.core.errors import UserError

if TYPE_CHECKING:
    from studio.core.settings import Settings

KINDS = (
    "diffusers-pipeline",
    "causal-lm",
    "autoencoder-kl",
    "vae-2d",
    "gan",
    "torchscript-gan",
)

BUNDLED = ("shapes-diffusion", "shapes-vae", "shapes-vae-2d", "shapes-gan", "prompt-writer")

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".pth", ".torchscript")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    kind: str
    source: str  # "bundled", "user" or "hf-cache"

    @property
    def label(self) -> str:
        return self.name if self.source == "bundled" else f"{self.name} ({self.source})"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def classify(path: str | os.PathLike[str]) -> str | None:
    """The kind of model at `path`, or None if it is not one we know."""
    p = Path(path)
    if p.is_file():
        return "torchscript-gan" if _is_torchscript(p) else None
    if not p.is_dir():
        return None
    index = p / "model_index.json"
    if index.is_file():
        data = _read_json(index)
        if data and str(data.get("_class_name", "")).endswith("Pipeline"):
            return "diffusers-pipeline"
        return None
    config = _read_json(p / "config.json") if (p / "config.json").is_file() else None
    if config is None:
        return None
    architectures = config.get("architectures") or []
    if isinstance(architectures, list) and any(
        str(a).endswith("ForCausalLM") or str(a).endswith("LMHeadModel") for a in architectures
    ):
        return "causal-lm"
    if config.get("_class_name") == "AutoencoderKL":
        return "autoencoder-kl"
    arch = str(config.get("architecture", "")).lower()
    if arch:
        if "gan" in arch or "generator" in arch:
            return "gan"
        if "vae" in arch or "autoencoder" in arch:
            return "vae-2d"
    return None


def _is_torchscript(path: Path) -> bool:
    if path.suffix.lower() not in TORCHSCRIPT_SUFFIXES:
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            # torch.jit.save archives hold the module's code; torch.save ones do not.
            return any("/code/" in name for name in zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _candidates(root: Path, depth: int = 2) -> Iterable[Path]:
    """`root` itself and its children down to `depth`, without descending into models."""
    if not root.exists():
        return
    yield root
    if depth <= 0 or not root.is_dir() or classify(root) is not None:
        return
    try:
        children = sorted(root.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith("."):
            continue
        if child.is_dir():
            yield from _candidates(child, depth - 1)
        elif child.suffix.lower() in TORCHSCRIPT_SUFFIXES:
            yield child


def _scan_root(root: Path, source: str) -> list[ModelEntry]:
    found = []
    for path in _candidates(root):
        kind = classify(path)
        if kind is not None:
            name = path.stem if path.is_file() else path.name
            found.append(ModelEntry(name, path, kind, source))
    return found


def _hf_cache_dir() -> str | None:
    # Read now rather than at huggingface_hub's import, so a changed setting counts.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _scan_hf_cache() -> list[ModelEntry]:
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(_hf_cache_dir())
    except Exception:  # no cache yet, or an unreadable one: nothing to list
        return []
    found = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        for rev in revisions:
            kind = classify(rev.snapshot_path)
            if kind is not None:
                found.append(ModelEntry(repo.repo_id, Path(rev.snapshot_path), kind, "hf-cache"))
                break
    return found


def _user_folders(settings: Settings | None) -> list[Path]:
    folders = list(settings.model_folders) if settings is not None else []
    return [Path(f).expanduser() for f in folders if f]


def discover(
    settings: Settings | None = None, kinds: Iterable[str] | None = None
) -> list[ModelEntry]:
    """Every model found, bundled first; never downloads."""
    from studio.paths import models_dir

    wanted = set(kinds) if kinds is not None else None
    entries = _scan_root(models_dir(), "bundled")
    for folder in _user_folders(settings):
        entries += _scan_root(folder, "user")
    if settings is None or settings.scan_hf_cache:
        entries += _scan_hf_cache()
    seen: set[Path] = set()
    unique = []
    for entry in entries:
        key = entry.path.resolve()
        if key in seen or (wanted is not None and entry.kind not in wanted):
            continue
        seen.add(key)
        unique.append(entry)
    return unique


def resolve_model(
    name_or_path: str, kind: str | None = None, settings: Settings | None = None
) -> Path:
    """A model's path from its picker name, its HF repo id or a path; UserError if unknown."""
    if not name_or_path:
        raise UserError("No model given.")
    candidate = Path(name_or_path).expanduser()
    if candidate.exists():
        return candidate
    # The common case, a folder name under models/ or a user folder, needs no full scan.
    from studio.paths import models_dir

    for root in [models_dir(), *_user_folders(settings)]:
        direct = root / name_or_path
        found = classify(direct) if direct.exists() else None
        if found is not None and (kind is None or found == kind):
            return direct
    entries = discover(settings, kinds=[kind] if kind else None)
    for entry in entries:
        if entry.name == name_or_path or entry.label == name_or_path:
            return entry.path
    if candidate.is_absolute() or name_or_path.startswith((".", "~")):
        raise UserError(f"The model folder {candidate} does not exist.")
    what = f"{kind} model" if kind else "model"
    known = ", ".join(sorted({e.name for e in entries})) or "none found"
    if name_or_path in BUNDLED:
        raise UserError(
            f"The bundled {what} {name_or_path!r} is missing from {models_dir()} "
            f"(available: {known})."
        )
    raise UserError(f"No {what} named {name_or_path!r} (available: {known}).")
