import numpy as np
import pytest
from PIL import Image

from studio.core.errors import UserError
from studio.core.export import grid, save, save_animation, save_still


def _frames(n, h=16, w=16):
    return [np.full((h, w, 3), (i * 20) % 256, np.uint8) for i in range(n)]


def test_png_strip_and_grid_sizes(tmp_path):
    strip = save_still(_frames(5), tmp_path / "strip.png", columns=5)
    assert Image.open(strip).size == (80, 16)
    g = save(_frames(16), tmp_path / "grid.png", scale=2)
    assert Image.open(g).size == (128, 128)
    assert grid(_frames(5), columns=2).shape == (48, 32, 3)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animations_have_every_frame(tmp_path, suffix):
    path = save_animation(_frames(7), tmp_path / f"walk{suffix}", fps=10, scale=2)
    with Image.open(path) as im:
        assert im.n_frames == 7
        assert im.size == (32, 32)
        im.seek(3)
        assert np.asarray(im.convert("RGB"))[0, 0, 0] == pytest.approx(60, abs=2)


def test_mp4_frame_count_and_size(tmp_path):
    import imageio_ffmpeg

    path = save_animation(_frames(6, 17, 17), tmp_path / "walk.mp4", fps=12)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = list(reader)
    assert meta["size"] == (18, 18)
    assert len(frames) == 6


def test_bad_export_requests_are_clear(tmp_path):
    with pytest.raises(UserError, match="no frames"):
        save([], tmp_path / "x.gif")
    with pytest.raises(UserError, match=r"\.gif"):
        save(_frames(2), tmp_path / "x.bmp")
    with pytest.raises(UserError, match="differ in size"):
        save([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 5, 3), np.uint8)], tmp_path / "x.png")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="Cannot"):
        save(_frames(2), blocker / "sub" / "x.png")
    assert not list(tmp_path.glob(".export-*"))
