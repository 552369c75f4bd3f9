"""Render the app icon's PNG sizes, Windows .ico and macOS .icns from the SVG master.

    python packaging/render_icons.py

Writes assets/latent-studio-{16..512}.png, assets/latent-studio.ico and
assets/latent-studio.icns next to assets/latent-studio.svg. Rendering uses Qt's
SVG renderer, so no extra dependency is needed.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
MASTER = ASSETS / "latent-studio.svg"
SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)


def png_path(size: int, assets: Path = ASSETS) -> Path:
    return assets / f"latent-studio-{size}.png"


def render_png(svg: Path, size: int) -> bytes:
    """The SVG drawn at `size` x `size` pixels, as PNG bytes with alpha."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication([])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise ValueError(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(0)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.convertToFormat(QImage.Format.Format_ARGB32).save(buffer, "PNG")
    buffer.close()
    return bytes(data)


def render_all(svg: Path = MASTER, assets: Path = ASSETS) -> list[Path]:
    from PIL import Image

    written: list[Path] = []
    images: dict[int, Image.Image] = {}
    for size in SIZES:
        data = render_png(svg, size)
        path = png_path(size, assets)
        path.write_bytes(data)
        images[size] = Image.open(io.BytesIO(data)).convert("RGBA")
        written.append(path)

    # Each .ico entry is its own rendering rather than a downscale of 256, so
    # the small sizes stay crisp.
    ico = assets / "latent-studio.ico"
    images[256].save(
        ico,
        format="ICO",
        sizes=[(s, s) for s in ICO_SIZES],
        append_images=[images[s] for s in ICO_SIZES if s != 256],
    )
    written.append(ico)
    icns = assets / "latent-studio.icns"
    images[512].save(icns, format="ICNS")
    written.append(icns)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--svg", type=Path, default=MASTER)
    parser.add_argument("--out", type=Path, default=ASSETS)
    args = parser.parse_args(argv)
    for path in render_all(args.svg, args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
