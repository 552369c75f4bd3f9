import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from studio.ui.panes.vae import VaePane
from tests.core.test_vae import make_autoencoder_kl, make_images, make_vae2d


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae-pane")
    return {
        "2d": str(make_vae2d(root / "tiny-2d")),
        "kl": str(make_autoencoder_kl(root / "tiny-kl")),
        "images": make_images(root / "images"),
        "dir": root / "images",
    }


@pytest.fixture
def pane(qtbot, bridge, settings, assets):
    pane = VaePane(bridge, settings)
    qtbot.addWidget(pane)
    pane.resize(1000, 700)
    with qtbot.waitSignal(pane.priorShown, timeout=30000):
        pane.picker.add_path(assets["2d"])
    return pane


def _drop(widget, path):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(event)


def _total_ms(path):
    total = 0
    with Image.open(path) as im:
        for i in range(im.n_frames):
            im.seek(i)
            im.load()
            total += im.info.get("duration", 0)
    return total


def test_drop_two_images_interpolate_scrub_and_export(qtbot, pane, assets, tmp_path):
    pane.steps_box.setValue(8)
    _drop(pane.slot_a, assets["images"]["a"])
    with qtbot.waitSignal(pane.stripShown, timeout=10000) as got:
        _drop(pane.slot_b, assets["images"]["b"])
    strip = got.args[0]
    assert len(strip) == 8 and pane.strip_grid.count() == 8
    assert pane.player.play_button.isEnabled()
    with qtbot.waitSignal(pane.scrubShown, timeout=10000) as scrub:
        pane.player.slider.setValue(pane.player.STEPS)
    assert np.array_equal(scrub.args[0].image, strip.frames[-1])
    pane.player.fps.setValue(10)
    for suffix in (".gif", ".webp"):
        with qtbot.waitSignal(pane.exported, timeout=10000):
            pane.export_strip(str(tmp_path / f"walk{suffix}"))
        # Pillow merges identical neighbouring frames (a random VAE makes some) and
        # adds up their durations: the animation's length is what must hold.
        assert _total_ms(tmp_path / f"walk{suffix}") == 8 * 100
    with qtbot.waitSignal(pane.exported, timeout=10000):
        pane.export_strip(str(tmp_path / "strip.png"))
    assert Image.open(tmp_path / "strip.png").size == (8 * 16, 16)


def test_scrubbing_fast_renders_only_recent_positions(qtbot, pane, assets):
    pane.slot_a.set_source(str(assets["images"]["a"]))
    with qtbot.waitSignal(pane.stripShown, timeout=10000):
        pane.slot_b.set_source("prior:7")
    shown = []
    pane.scrubShown.connect(lambda f: shown.append(f.params["t"]))
    for v in range(0, 1001, 25):
        pane.player.slider.setValue(v)
    qtbot.waitUntil(lambda: bool(shown) and shown[-1] == 1.0, timeout=10000)
    assert len(shown) < 41 and shown == sorted(shown)


def test_prior_grid_feeds_endpoints(qtbot, pane):
    assert pane.prior_grid.count() == 16
    centre = pane.prior_grid.tile_rect(2).center()
    qtbot.mouseClick(pane.prior_grid, Qt.MouseButton.LeftButton, pos=QPoint(centre.x(), centre.y()))
    pane.use_a.click()
    assert pane.slot_a.source == "prior:2"
    pane.prior_grid.current = 5
    with qtbot.waitSignal(pane.stripShown, timeout=10000) as got:
        pane.use_b.click()
    assert np.array_equal(got.args[0].frames[0], pane.prior.frames[2])
    with qtbot.waitSignal(pane.exported, timeout=10000) as saved:
        pane.export_prior(str(pane.settings.resolved_outputs_dir() / "prior.png"))
    assert Image.open(saved.args[0]).size == (4 * 16, 4 * 16)


def test_latent_map_2d_marks_images_and_click_decodes(qtbot, pane, assets):
    pane.tabs.setCurrentIndex(2)
    pane.map_list.add_path(str(assets["images"]["a"]))
    pane.map_grid.setValue(5)
    with qtbot.waitSignal(pane.mapShown, timeout=10000) as got:
        pane.map_button.click()
    m = got.args[0]
    assert m.two_d and len(m.markers) == 1 and m.image.shape == (80, 80, 3)
    # A click at the centre of the top-left tile decodes that tile's point.
    rect = pane.map_view.target_rect()
    x, y = rect.x() + rect.width() // 10, rect.y() + rect.height() // 10
    with qtbot.waitSignal(pane.pointShown, timeout=10000) as point:
        qtbot.mouseClick(pane.map_view, Qt.MouseButton.LeftButton, pos=QPoint(x, y))
    assert point.args[0].params["x"] == pytest.approx(-3.0, abs=0.2)
    assert np.abs(point.args[0].image.astype(int) - m.image[:16, :16].astype(int)).mean() < 8


def test_map_of_a_larger_latent_needs_three_images(qtbot, pane, assets):
    with qtbot.waitSignal(pane.priorShown, timeout=30000):
        pane.picker.add_path(assets["kl"])
    pane.map_list.add_path(str(assets["images"]["a"]))
    with qtbot.waitSignal(pane.errorShown, timeout=10000) as err:
        pane.draw_map()
    assert "three images" in err.args[0]
    pane.map_list.add_path(str(assets["images"]["b"]))
    pane.map_list.add_path(str(assets["images"]["c"]))
    pane.map_grid.setValue(4)
    with qtbot.waitSignal(pane.mapShown, timeout=10000) as got:
        pane.draw_map()
    assert not got.args[0].two_d and len(got.args[0].markers) == 3
    x, y, _ = got.args[0].markers[1]
    with qtbot.waitSignal(pane.pointShown, timeout=10000):
        pane.decode_point(x, y)


def test_reconstruction_and_bad_inputs(qtbot, pane, assets):
    with qtbot.waitSignal(pane.reconstructionShown, timeout=10000) as got:
        pane.recon_slot.set_source(str(assets["dir"] / "grey.png"))
    assert "PSNR" in pane.psnr_label.text() and got.args[0].psnr > 0
    assert "greyscale" in pane.message.text()
    with qtbot.waitSignal(pane.errorShown, timeout=10000) as err:
        pane.recon_slot.set_source(str(assets["dir"] / "notes.png"))
    assert "not an image" in err.args[0]
    with qtbot.waitSignal(pane.stripShown, timeout=10000):
        pane.slot_a.set_source(str(assets["dir"] / "clear.png"))
        pane.slot_b.set_source(str(assets["dir"] / "wide.png"))
    assert "transparency" in pane.message.text() and "40×20" in pane.message.text()


def test_drops_in_the_real_window_reach_the_slot(qtbot, make_window, assets):
    from PySide6.QtGui import QDragEnterEvent
    from PySide6.QtWidgets import QApplication

    window = make_window(persist=False)
    window.show()
    window.show_pane("VAE")
    pane = window.panes["VAE"]
    qtbot.waitExposed(pane.slot_b)
    restored = []
    window.parametersRestored.connect(restored.append)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(assets["images"]["c"]))])
    enter = QDragEnterEvent(QPoint(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(pane.slot_b.thumb, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(pane.slot_b.thumb, drop)
    assert pane.slot_b.source == str(assets["images"]["c"])
    assert pane.isVisible() and restored == []


def test_gallery_picker_lists_the_outputs_newest_first(qtbot, tmp_path):
    import os

    from studio.ui.widgets.latent_views import GalleryPicker, gallery_images

    folder = tmp_path / "outputs"
    folder.mkdir()
    for i, name in enumerate(("old.png", "new.png")):
        Image.new("RGB", (8, 8), (i * 200, 0, 0)).save(folder / name)
        os.utime(folder / name, (1000 + i, 1000 + i))
    (folder / "notes.txt").write_text("x")
    assert [p.name for p in gallery_images(folder)] == ["new.png", "old.png"]
    picker = GalleryPicker(folder)
    qtbot.addWidget(picker)
    assert picker.list.count() == 2
    picker.list.setCurrentRow(1)
    assert picker.selected().endswith("old.png")
    assert gallery_images(tmp_path / "missing") == []


def test_endpoints_picked_before_the_model_list_arrives_wait_for_it(qtbot, bridge, settings, assets):
    pane = VaePane(bridge, settings)
    qtbot.addWidget(pane)
    errors = []
    pane.errorShown.connect(errors.append)
    assert pane.picker.listing and not pane.model
    pane.slot_a.set_source(str(assets["images"]["a"]))
    pane.slot_b.set_source(str(assets["images"]["b"]))
    assert pane.interpolate() == "" and errors == []  # nothing sent, no error flashed
    with qtbot.waitSignal(pane.stripShown, timeout=30000):
        pane.picker.add_path(assets["kl"])  # the first model re-runs the waiting strip
    assert errors == []


def test_no_model_after_the_list_arrived_is_an_error(qtbot, bridge, settings, assets):
    pane = VaePane(bridge, settings)
    qtbot.addWidget(pane)
    with qtbot.waitSignal(pane.picker.modelsListed, timeout=30000):
        pane.show()
    assert not pane.picker.listing
    pane.picker.box.clear()
    errors = []
    pane.errorShown.connect(errors.append)
    pane.slot_a.set_source(str(assets["images"]["a"]))
    pane.slot_b.set_source(str(assets["images"]["b"]))
    assert errors and "No VAE model" in errors[-1]
