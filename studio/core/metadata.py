"""PNG metadata: the A1111 `parameters` text chunk, written and parsed, plus our request JSON.

The `parameters` text follows AUTOMATIC1111's infotext format exactly, so images
made here open in A1111, ComfyUI and civitai tools, and theirs open here:

    a red circle
    Negative prompt: blurry
    Steps: 30, Sampler: Euler, CFG scale: 7.5, Seed: 1, Size: 64x64, Model hash: 0123456789, Model: shapes-diffusion

A second chunk (`latent-studio`) holds the full request as JSON, which restores
every setting exactly; A1111 text is the fallback for images from elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from studio.core.errors import UserError
from studio.core.guidance import GUIDANCE_METHODS, guidance_key

PARAMETERS_KEY = "parameters"
REQUEST_KEY = "latent-studio"

# A1111 modules/infotext_utils.py: `key: value` pairs, a value either JSON-quoted or up to the next comma.
re_param_code = r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)'
re_param = re.compile(re_param_code)
re_imagesize = re.compile(r"^(\d+)x(\d+)$")

# Our scheduler keys and the names A1111 writes after "Sampler:".
SAMPLER_NAMES: dict[str, str] = {
    "ddim": "DDIM",
    "ddpm": "DDPM",
    "euler": "Euler",
    "euler_a": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "lcm": "LCM",
}
# Spellings other tools (and older A1111 versions) write for the same samplers.
_SAMPLER_ALIASES = {
    "euler ancestral": "euler_a",
    "euler_ancestral": "euler_a",
    "k_euler": "euler",
    "k_euler_a": "euler_a",
    "k_euler_ancestral": "euler_a",
    # DPM++ 2M with Karras sigmas restores as plain DPM++ 2M, the nearest we run.
    "dpm++ 2m karras": "dpmpp_2m",
    "dpmpp_2m_karras": "dpmpp_2m",
    "dpm++ 2m sde": "dpmpp_2m",
    "plms": "ddim",
}


def sampler_name(key: str) -> str:
    return SAMPLER_NAMES.get(key, key)


def sampler_key(name: str) -> str | None:
    """Our scheduler key for an A1111 sampler name (or our own key); None if unknown."""
    wanted = name.strip().lower()
    for key, display in SAMPLER_NAMES.items():
        if wanted in (key, display.lower()):
            return key
    return _SAMPLER_ALIASES.get(wanted)


# ---- writing -------------------------------------------------------------------


def quote(text: Any) -> Any:
    """A1111's quoting: JSON-quote a value holding a comma, a colon or a newline."""
    s = str(text)
    if "," not in s and "\n" not in s and ":" not in s:
        return text
    return json.dumps(s, ensure_ascii=False)


def _format_number(value: float) -> str:
    value = float(value)
    return str(int(value)) + ".0" if value.is_integer() else repr(value)


def format_parameters(
    request: Any,
    model_hash: str = "",
    model_name: str = "",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The A1111 infotext for a TextToImage request (or its `to_dict()`)."""
    data = request if isinstance(request, Mapping) else request.to_dict()
    params: dict[str, Any] = {
        "Steps": int(data["steps"]),
        "Sampler": sampler_name(str(data["scheduler"])),
        "CFG scale": _format_number(data["guidance_scale"]),
        # CFG is what A1111 always does, so only the other rule is written down.
        "Guidance": _guidance_label(data),
        "Seed": int(data["seed"]),
        "Size": f"{int(data['width'])}x{int(data['height'])}",
        "Model hash": model_hash or None,
        "Model": model_name or _model_label(str(data.get("model", ""))) or None,
    }
    if extra:
        params.update(extra)
    generation = ", ".join(
        k if k == v else f"{k}: {quote(v)}" for k, v in params.items() if v is not None
    )
    prompt = str(data.get("prompt", ""))
    negative = str(data.get("negative_prompt", ""))
    negative_text = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{negative_text}\n{generation}".strip()


def _guidance_label(data: Mapping[str, Any]) -> str | None:
    method = str(data.get("guidance_method") or "cfg")
    return None if method == "cfg" else GUIDANCE_METHODS.get(method, method)


def _model_label(model: str) -> str:
    # A path names the model by its folder, as A1111 names a checkpoint by its file.
    if model and Path(model).exists():
        return Path(model).resolve().name
    return model


def png_info(parameters: str, request: Mapping[str, Any] | None = None) -> Any:
    """A PIL PngInfo holding both chunks (iTXt where the text is not Latin-1)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    if request is not None:
        info.add_itxt(REQUEST_KEY, json.dumps(dict(request), ensure_ascii=False, sort_keys=True))
    return info


# ---- reading -------------------------------------------------------------------


def _unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_parameters(text: str) -> dict[str, Any]:
    """A1111's `parse_generation_parameters`: "Prompt", "Negative prompt", and every
    `key: value` of the last line ("Size" becomes "Size-1"/"Size-2")."""
    res: dict[str, Any] = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = text.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for k, v in re_param.findall(lastline):
        if v and v[0] == '"' and v[-1] == '"':
            v = _unquote(v)
        m = re_imagesize.match(v)
        if m is not None:
            res[f"{k}-1"] = m.group(1)
            res[f"{k}-2"] = m.group(2)
        else:
            res[k] = v

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    return res


def read_png_text(path: str | os.PathLike[str]) -> dict[str, str]:
    """Every text chunk of a PNG (tEXt, zTXt, iTXt); {} for an image without any."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            text = dict(getattr(im, "text", {}) or {})
            if not text:
                text = {k: v for k, v in im.info.items() if isinstance(v, str)}
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise UserError(f"Cannot read {path}: {exc}") from exc
    return {str(k): str(v) for k, v in text.items()}


def read_png_parameters(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed A1111 parameters of a PNG; {} when it carries none."""
    text = read_png_text(path).get(PARAMETERS_KEY)
    return parse_parameters(text) if text else {}


def read_png_request(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Our request JSON chunk, or None (images from other tools)."""
    raw = read_png_text(path).get(REQUEST_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


_REQUEST_FIELDS = (
    "prompt",
    "negative_prompt",
    "guidance_scale",
    "guidance_method",
    "steps",
    "scheduler",
    "seed",
    "width",
    "height",
    "batch_size",
    "model",
)


def parameters_to_request(params: Mapping[str, Any]) -> dict[str, Any]:
    """TextToImage keyword arguments from parsed A1111 parameters; fields that are
    absent or unreadable are left out, so the caller keeps its own values for them."""
    kwargs: dict[str, Any] = {
        "prompt": str(params.get("Prompt", "")),
        "negative_prompt": str(params.get("Negative prompt", "")),
    }

    def number(key: str, kind: type) -> Any:
        try:
            value = kind(float(str(params[key]).strip())) if kind is int else kind(params[key])
        except (KeyError, TypeError, ValueError):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    for field_name, key, kind in (
        ("steps", "Steps", int),
        ("guidance_scale", "CFG scale", float),
        ("seed", "Seed", int),
        ("width", "Size-1", int),
        ("height", "Size-2", int),
    ):
        value = number(key, kind)
        if value is not None:
            kwargs[field_name] = value
    sampler = params.get("Sampler")
    if sampler:
        key = sampler_key(str(sampler))
        if key is not None:
            kwargs["scheduler"] = key
    # No "Guidance" entry: the image was made with classifier-free guidance.
    try:
        kwargs["guidance_method"] = guidance_key(str(params.get("Guidance") or "cfg"))
    except UserError:
        pass
    if params.get("Model"):
        kwargs["model"] = str(params["Model"])
    return kwargs


def request_from_png(path: str | os.PathLike[str]) -> dict[str, Any]:
    """TextToImage keyword arguments for "use these settings": our JSON chunk when the
    image is ours, else its A1111 parameters. UserError if the PNG carries neither."""
    request = read_png_request(path)
    if request is not None:
        # Images saved before the guidance rule was recorded were all made with CFG.
        return {"guidance_method": "cfg"} | {k: request[k] for k in _REQUEST_FIELDS if k in request}
    params = read_png_parameters(path)
    if not params:
        raise UserError(f"{Path(path).name} carries no generation parameters.")
    return parameters_to_request(params)


# ---- model hash ------------------------------------------------------------------

_hash_lock = threading.Lock()
_hash_memory: dict[tuple[str, int, int], str] = {}


def _hash_cache_file() -> Path:
    from studio.core.settings import data_dir

    return data_dir() / "hashes.json"


def short_hash(path: str | os.PathLike[str]) -> str:
    """A1111's short model hash: the first 10 hex digits of the file's sha256. Cached in
    memory and on disk by (path, size, mtime), since hashing gigabytes takes seconds."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_memory:
            return _hash_memory[key]
        disk = _load_hash_cache()
        entry = disk.get(key[0])
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            _hash_memory[key] = entry["sha256"][:10]
            return _hash_memory[key]
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    full = digest.hexdigest()
    with _hash_lock:
        _hash_memory[key] = full[:10]
        disk = _load_hash_cache()
        disk[key[0]] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": full}
        _save_hash_cache(disk)
    return full[:10]


def _load_hash_cache() -> dict[str, Any]:
    try:
        data = json.loads(_hash_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_hash_cache(data: dict[str, Any]) -> None:
    # A cache: failing to write it only costs a rehash next time.
    try:
        from studio.core.gallery import atomic_write_bytes

        path = _hash_cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(data).encode("utf-8"))
    except OSError:
        pass


def weights_file(model_path: str | os.PathLike[str]) -> Path | None:
    """The file a model's hash is taken from: a single checkpoint file, or the UNet
    (or transformer) weights of a diffusers folder, which is what sets a fine-tune apart."""
    p = Path(model_path)
    if p.is_file():
        return p
    for sub in ("unet", "transformer", ""):
        folder = p / sub if sub else p
        for name in (
            "diffusion_pytorch_model.safetensors",
            "model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
            "diffusion_pytorch_model.bin",
        ):
            if (folder / name).is_file():
                return folder / name
    return None


def model_hash(model_path: str | os.PathLike[str]) -> str:
    f = weights_file(model_path)
    return short_hash(f) if f is not None else ""
