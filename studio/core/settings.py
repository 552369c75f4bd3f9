"""Typed settings, saved as JSON under the user config dir with a schema version.

Unknown keys from a newer file are kept (so a downgrade does not drop them);
a value of the wrong type falls back to its default instead of failing start-up.
Each feature adds its fields in its own marked section, always with a default.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

APP_NAME = "latent-studio"
SCHEMA_VERSION = 1


def config_dir() -> Path:
    override = os.environ.get("LATENT_STUDIO_CONFIG_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    override = os.environ.get("LATENT_STUDIO_DATA_DIR")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_outputs_dir() -> Path:
    return data_dir() / "outputs"


def default_settings_path() -> Path:
    return config_dir() / "settings.json"


@dataclass
class Settings:
    schema_version: int = SCHEMA_VERSION

    # ---- core: device, outputs, models -------------------------------------
    outputs_dir: str = ""  # empty: default_outputs_dir()
    model_folders: list[str] = field(default_factory=list)
    device: str = "auto"  # auto, cuda, mps, cpu
    half_precision: bool = True
    attention_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False
    default_model: str = "shapes-diffusion"
    scan_hf_cache: bool = True
    # Pickle checkpoints (.ckpt/.pt/.bin) are refused unless the user opts in.
    allow_pickle_checkpoints: bool = False
    live_previews: bool = True
    # An AutoencoderTiny folder (e.g. TAESD) for sharper previews; empty: linear fit.
    preview_decoder: str = ""

    # ---- image pane ------------------------------------------------------------
    last_prompt: str = ""
    last_negative_prompt: str = ""
    guidance_scale: float = 7.5
    # CFG: on the bundled model (stage 20) it is ahead of FDG on colour and the negative
    # prompt (MODEL_CARD.md of shapes-diffusion, "Stage 20").
    guidance_method: str = "cfg"
    steps: int = 30
    scheduler: str = "euler"
    width: int = 64
    height: int = 64
    batch_size: int = 1
    batch_count: int = 1

    # ---- ui: window ------------------------------------------------------------
    theme: str = "dark"
    window_geometry: str = ""  # base64 of QWidget.saveGeometry()
    window_state: str = ""
    current_pane: str = ""

    # ---- other features add their fields below, each with a default ------------

    # ---- prompt pane (LLM) -------------------------------------------------------
    llm_model: str = "prompt-writer"  # a picker name or folder; ENDPOINT_MODEL for the server
    llm_preset: str = "Balanced"
    llm_system_prompt: str = ""
    # Models the user ticked "trust remote code" for; nothing else runs model code.
    llm_trusted_models: list[str] = field(default_factory=list)
    llm_endpoint_url: str = ""  # e.g. http://127.0.0.1:11434/v1 (the API key is kept apart)
    llm_endpoint_model: str = ""
    llm_endpoint_extras: bool = False  # also send top_k / repetition_penalty
    llm_enhance_model: str = ""  # empty: the bundled prompt-writer
    llm_enhance_instruction: str = (
        "Rewrite the user's image prompt into one richer prompt for a text-to-image model: "
        "keep the subject, add style, lighting, composition and detail as short comma-separated "
        "phrases. Answer with the prompt only."
    )

    extra: dict[str, Any] = field(default_factory=dict)

    def resolved_outputs_dir(self) -> Path:
        return Path(self.outputs_dir).expanduser() if self.outputs_dir else default_outputs_dir()

    def engine_options(self) -> dict[str, Any]:
        """The switches `Engine.options` carries to the handlers."""
        return {
            "outputs_dir": str(self.resolved_outputs_dir()),
            "attention_slicing": self.attention_slicing,
            "vae_tiling": self.vae_tiling,
            "cpu_offload": self.cpu_offload,
            "half_precision": self.half_precision,
            "allow_pickle_checkpoints": self.allow_pickle_checkpoints,
            "model_folders": list(self.model_folders),
            "previews": self.live_previews,
            "preview_decoder": self.preview_decoder,
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        return {**extra, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {f.name: f for f in fields(cls) if f.name != "extra"}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            f = known.get(key)
            if f is None:
                extra[key] = value
                continue
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            if _same_kind(value, default):
                values[key] = float(value) if isinstance(default, float) else value
        values["schema_version"] = SCHEMA_VERSION
        return cls(**values, extra=extra)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, list):
        return isinstance(value, list)
    return isinstance(value, type(default))


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Settings from `path` (default: the user config file); defaults if absent or corrupt."""
    p = Path(path) if path is not None else default_settings_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Settings()
    if not isinstance(data, dict):
        return Settings()
    return Settings.from_dict(_migrate(data))


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    # Version 1 is the first schema; later versions convert older files here.
    return data


def save_settings(settings: Settings, path: str | os.PathLike[str] | None = None) -> Path:
    """Write atomically, so a crash mid-save keeps the previous file."""
    p = Path(path) if path is not None else default_settings_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.to_dict(), indent=2, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=".settings-", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
