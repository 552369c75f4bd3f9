"""The app icon: an SVG master and PNG, ICO and ICNS files rendered from it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.paths import assets_dir

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


@pytest.mark.parametrize("size", SIZES)
def test_png_icon_exists_at_every_size(size: int) -> None:
    path = assets_dir() / f"latent-studio-{size}.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (size, size)
        assert image.mode == "RGBA"
        rgba = np.asarray(image.convert("RGBA"))
    # Transparent rounded corners, an opaque body: the icon was really drawn.
    assert rgba[0, 0, 3] == 0
    assert rgba[size // 2, size // 2, 3] == 255
    assert len(np.unique(rgba.reshape(-1, 4), axis=0)) > 3


def test_svg_master_renders_with_qt(qapp) -> None:
    from PySide6.QtGui import QIcon
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(assets_dir() / "latent-studio.svg"))
    assert renderer.isValid()
    assert renderer.defaultSize().width() == 512
    icon = QIcon(str(assets_dir() / "latent-studio-256.png"))
    assert not icon.isNull()
    assert icon.pixmap(64, 64).width() == 64


def test_png_matches_the_svg_master(qapp) -> None:
    """The committed PNGs are current renderings of the SVG, not stale copies."""
    import io
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "packaging"))
    try:
        from render_icons import render_png
    finally:
        sys.path.pop(0)
    fresh = Image.open(io.BytesIO(render_png(assets_dir() / "latent-studio.svg", 64)))
    committed = Image.open(assets_dir() / "latent-studio-64.png")
    diff = np.abs(
        np.asarray(fresh.convert("RGBA"), dtype=np.int16)
        - np.asarray(committed.convert("RGBA"), dtype=np.int16)
    )
    assert diff.max() <= 2


def test_windows_ico_holds_every_size_to_256() -> None:
    with Image.open(assets_dir() / "latent-studio.ico") as ico:
        assert {(s, s) for s in SIZES if s <= 256} <= set(ico.ico.sizes())


def test_macos_icns_loads() -> None:
    with Image.open(assets_dir() / "latent-studio.icns") as icns:
        assert icns.format == "ICNS"
        assert max(icns.size) >= 512
