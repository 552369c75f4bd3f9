from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt

from studio.core.gallery import Gallery
from studio.core.jobs import TextToImage
from studio.core.metadata import format_parameters
from studio.ui.panes.gallery import GalleryPane


def _save(folder, prompt, seed):
    request = TextToImage(prompt=prompt, seed=seed, steps=5, scheduler="ddim", model="tiny-sd").to_dict()
    image = Image.new("RGB", (64, 64), (seed * 40 % 255, 80, 120))
    return Gallery(folder).save(image, format_parameters(request), request)


def _pane(qtbot, bridge, settings):
    pane = GalleryPane(bridge, settings)
    qtbot.addWidget(pane)
    return pane


def test_newest_first_and_survives_a_restart(qtbot, bridge, settings):
    folder = settings.resolved_outputs_dir()
    first = _save(folder, "first", 1)
    second = _save(folder, "second", 2)
    pane = _pane(qtbot, bridge, settings)
    assert pane.paths() == [second.path, first.path]
    qtbot.waitUntil(lambda: pane.thumbnails_pending() == 0)
    assert not pane.list.item(0).icon().isNull()
    pane.close()
    pane.shutdown()

    # A restart: a new pane on the same outputs folder, and an image that was
    # written but never indexed (a crash between the two) is found too.
    orphan = Path(folder) / "orphan.png"
    Image.new("RGB", (8, 8)).save(orphan)
    again = _pane(qtbot, bridge, settings)
    assert set(again.paths()) == {first.path, second.path, orphan}
    assert again.paths().index(second.path) < again.paths().index(first.path)


def test_select_shows_the_image_and_use_these_settings(qtbot, bridge, settings):
    item = _save(settings.resolved_outputs_dir(), "a yellow star, large", 3)
    pane = _pane(qtbot, bridge, settings)
    pane.select(item.path)
    assert pane.view.has_image()
    assert "a yellow star, large" in pane.info.toPlainText()
    with qtbot.waitSignal(pane.useSettings, timeout=2000) as blocker:
        qtbot.mouseClick(pane.use_button, Qt.MouseButton.LeftButton)
    params = blocker.args[0]
    assert params["prompt"] == "a yellow star, large"
    assert params["seed"] == 3 and params["scheduler"] == "ddim" and params["steps"] == 5


def test_delete_removes_file_and_row(qtbot, bridge, settings):
    folder = settings.resolved_outputs_dir()
    keep = _save(folder, "keep", 4)
    gone = _save(folder, "gone", 5)
    pane = _pane(qtbot, bridge, settings)
    pane.select(gone.path)
    assert pane.delete_selected(confirm=False)
    assert not gone.path.exists() and keep.path.exists()
    assert pane.paths() == [keep.path]
    assert Gallery(folder).count() == 1


def test_use_these_settings_in_the_window_fills_the_image_pane(qtbot, make_window, settings):
    item = _save(settings.resolved_outputs_dir(), "a green triangle", 11)
    window = make_window()
    gallery = window.pane("Gallery")
    window.show_pane("Gallery")
    gallery.select(item.path)
    gallery.use_selected()
    assert window.current_pane() is window.image_pane
    assert window.image_pane.prompt_edit.toPlainText() == "a green triangle"
    assert window.image_pane.seed.next_seed() == 11


def test_refreshes_when_an_image_job_finishes(qtbot, make_window, settings, models_dir):
    window = make_window()
    gallery = window.pane("Gallery")
    image = window.image_pane
    qtbot.waitUntil(lambda: image.models_loaded, timeout=20000)
    image.steps.setValue(2)
    image.prompt_edit.setPlainText("a small circle")
    assert gallery.paths() == []
    with qtbot.waitSignal(image.imagesShown, timeout=60000) as blocker:
        image.generate()
    qtbot.waitUntil(lambda: gallery.paths() == [Path(blocker.args[0].paths[0])], timeout=5000)
