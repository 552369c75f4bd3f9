"""Frames out to files: PNG strips and grids, GIF / WebP animations, MP4.

Frames are HxWx3 uint8 numpy arrays. Every file is written under a temporary
name and moved into place, so a failed export never leaves half a file.
Imports only numpy and Pillow at call time; safe for the UI to import.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.errors import UserError

ANIMATION_SUFFIXES = (".gif", ".webp", ".mp4")
STILL_SUFFIXES = (".png",)
SUFFIXES = STILL_SUFFIXES + ANIMATION_SUFFIXES


@dataclass(frozen=True)
class Frames:
    """A sequence of frames with the parameters that reproduce each one."""

    frames: tuple[Any, ...]
    params: tuple[dict[str, Any], ...] = ()
    notices: tuple[str, ...] = ()
    request: Any = None
    labels: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.frames)


def to_uint8(images: Any) -> list[Any]:
    """A (N, C, H, W) tensor in [-1, 1] → N HxWx3 uint8 arrays (greyscale repeated)."""
    import torch

    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    arr = x[:, :3].permute(0, 2, 3, 1).contiguous().numpy()
    return [arr[i] for i in range(arr.shape[0])]


def _check(frames: Sequence[Any]) -> list[Any]:
    import numpy as np

    if len(frames) == 0:
        raise UserError("Nothing to export: there are no frames yet.")
    out = [np.asarray(f, dtype=np.uint8) for f in frames]
    shape = out[0].shape
    if any(f.shape != shape for f in out):
        raise UserError("The frames differ in size and cannot go in one file.")
    return out


def _upscale(frames: list[Any], scale: int) -> list[Any]:
    if scale <= 1:
        return frames
    import numpy as np

    # Nearest neighbour keeps 64-pixel frames crisp when shown large.
    return [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) for f in frames]


def grid(frames: Sequence[Any], columns: int | None = None, pad: int = 0, background: int = 0) -> Any:
    """Tile frames into one image; `columns` defaults to a near-square layout."""
    import numpy as np

    fs = _check(frames)
    n = len(fs)
    cols = columns or math.ceil(math.sqrt(n))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    h, w, c = fs[0].shape
    out = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), background, np.uint8)
    for i, f in enumerate(fs):
        r, col = divmod(i, cols)
        y, x = r * (h + pad), col * (w + pad)
        out[y : y + h, x : x + w] = f
    return out


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    path = Path(path)
    if not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Cannot create the folder {path.parent}: {exc.strerror or exc}.") from None
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"Cannot write {path}: {exc.strerror or exc}.") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_still(frames: Sequence[Any], path: str | os.PathLike[str], columns: int | None = None, scale: int = 1) -> Path:
    """A PNG strip (columns = len(frames)) or grid."""
    from PIL import Image

    fs = _upscale(_check(frames), scale)
    image = Image.fromarray(grid(fs, columns=columns))
    return _atomic(Path(path), lambda p: image.save(p, format="PNG"))


def save_animation(
    frames: Sequence[Any],
    path: str | os.PathLike[str],
    fps: float = 12.0,
    scale: int = 1,
    loop: bool = True,
) -> Path:
    """GIF or WebP (Pillow) or MP4 (imageio-ffmpeg, H.264), chosen by the suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise UserError(f"Cannot tell the animation format from {path.name!r}: use .gif, .webp or .mp4.")
    if fps <= 0:
        raise UserError("Frames per second must be positive.")
    fs = _upscale(_check(frames), scale)
    if suffix == ".mp4":
        return _atomic(path, lambda p: _write_mp4(fs, p, fps))
    from PIL import Image

    images = [Image.fromarray(f) for f in fs]
    duration = max(1, round(1000 / fps))
    options: dict[str, Any] = {"save_all": True, "append_images": images[1:], "duration": duration}
    if loop:
        options["loop"] = 0
    if suffix == ".webp":
        options.update(lossless=True, format="WEBP")
    else:
        options.update(format="GIF", disposal=1)
    return _atomic(path, lambda p: images[0].save(p, **options))


def _write_mp4(frames: list[Any], path: Path, fps: float) -> None:
    import numpy as np

    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError("MP4 export needs the imageio-ffmpeg package (pip install imageio-ffmpeg).") from None
    h, w = frames[0].shape[:2]
    # H.264 with yuv420p needs even sides; pad with the edge rather than crop.
    ph, pw = h + h % 2, w + w % 2
    if (ph, pw) != (h, w):
        frames = [np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge") for f in frames]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (pw, ph),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-f", "mp4"],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    try:
        for f in frames:
            writer.send(np.ascontiguousarray(f))
    finally:
        writer.close()


def save(frames: Sequence[Any], path: str | os.PathLike[str], fps: float = 12.0, scale: int = 1, columns: int | None = None) -> Path:
    """Export by suffix: .png (strip or grid), .gif, .webp, .mp4."""
    suffix = Path(path).suffix.lower()
    if suffix in STILL_SUFFIXES:
        return save_still(frames, path, columns=columns, scale=scale)
    if suffix in ANIMATION_SUFFIXES:
        return save_animation(frames, path, fps=fps, scale=scale)
    raise UserError(
        f"Cannot export to {Path(path).name!r}: use .png (strip or grid), .gif, .webp or .mp4."
    )


def run_export(job: Any, ctx: Any) -> Path:
    """Handler of `ExportFrames`: writing an MP4 can take a moment, so it is a batch job."""
    ctx.check_cancel()
    return save(job.frames, job.path, fps=job.fps, scale=job.scale, columns=job.columns or None)
