import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QPoint, Qt

from studio.ui.panes.gan import GanPane
from tests.core.test_gan import _Raising, make_dcgan, make_torchscript


@pytest.fixture
def pane(qtbot, bridge, settings, tmp_path):
    pane = GanPane(bridge, settings)
    qtbot.addWidget(pane)
    pane.resize(1000, 700)
    model = str(make_dcgan(tmp_path / "tiny-gan"))
    with qtbot.waitSignal(pane.gridShown, timeout=30000):
        pane.picker.add_path(model)
    return pane


def _click_tile(qtbot, pane, index):
    centre = pane.grid.tile_rect(index).center()
    qtbot.mouseClick(pane.grid, Qt.MouseButton.LeftButton, pos=QPoint(centre.x(), centre.y()))


def test_page_of_seeds_pin_and_truncation(qtbot, pane):
    assert pane.grid.count() == 16
    assert pane.page.labels[:2] == ("0", "1")
    with qtbot.waitSignal(pane.editShown, timeout=10000) as edit:
        _click_tile(qtbot, pane, 3)
    assert pane.pins == [3] and edit.args[0].seed == 3
    assert np.array_equal(edit.args[0].image, pane.page.frames[3])
    with qtbot.waitSignal(pane.gridShown, timeout=10000):
        pane.next_button.click()
    assert pane.page.labels[0] == "16" and pane.grid.pins == []
    with qtbot.waitSignal(pane.gridShown, timeout=10000):
        pane.psi.setValue(0.0)
    first = pane.page.frames[0]
    assert all(np.array_equal(first, f) for f in pane.page.frames)


def test_dragging_psi_renders_only_the_newest(qtbot, pane):
    shown = []
    pane.gridShown.connect(lambda r: shown.append(r.request.truncation))
    values = [round(1.0 - i * 0.02, 2) for i in range(40)]
    for v in values:
        pane.psi.setValue(v)
    qtbot.waitUntil(lambda: bool(shown) and shown[-1] == values[-1], timeout=10000)
    qtbot.wait(100)
    assert shown[-1] == values[-1]
    assert len(shown) < len(values)
    assert shown == sorted(shown, reverse=True)  # never an older position after a newer one


def test_directions_bend_the_pinned_sample_and_save(qtbot, pane, tmp_path):
    with qtbot.waitSignal(pane.editShown, timeout=10000):
        pane.pin(5)
    base = pane.edited.image
    pane.count_box.setValue(3)
    pane.pca_samples = 400
    with qtbot.waitSignal(pane.directionsShown, timeout=30000):
        pane.compute_button.click()
    assert len(pane.rows) == 3
    with qtbot.waitSignal(pane.editShown, timeout=10000):
        pane.rows[0].slider.setValue(3.0)
    qtbot.waitUntil(lambda: pane.edited.amounts[:1] == (3.0,), timeout=10000)
    assert not np.array_equal(base, pane.edited.image)
    pane.rows[0].name.setText("roundness")
    saved = pane.save_directions(str(tmp_path / "dirs.json"))
    assert saved is not None and saved.is_file()
    with qtbot.waitSignal(pane.editShown, timeout=10000):
        pane.reset_button.click()
    assert np.array_equal(pane.edited.image, base)
    assert pane.load_directions(str(saved))
    assert pane.rows[0].name.text() == "roundness"
    (tmp_path / "junk.json").write_text("[1, 2")
    assert not pane.load_directions(str(tmp_path / "junk.json"))
    assert "not a saved set" in pane.message.text()


def test_slerp_between_pins_and_export(qtbot, pane, tmp_path):
    pane.pin(1)
    pane.pin(2)
    assert pane.slerp_button.isEnabled()
    pane.frames_box.setValue(6)
    with qtbot.waitSignal(pane.framesShown, timeout=10000) as got:
        pane.slerp_button.click()
    frames = got.args[0]
    assert len(frames) == 6
    assert np.array_equal(frames.frames[0], pane.page.frames[1])
    assert np.array_equal(frames.frames[-1], pane.page.frames[2])
    with qtbot.waitSignal(pane.exported, timeout=10000):
        pane.export_frames(str(tmp_path / "slerp.gif"))
    with Image.open(tmp_path / "slerp.gif") as im:
        assert im.n_frames == 6
    with qtbot.waitSignal(pane.exported, timeout=10000):
        pane.export_page(str(tmp_path / "page.png"))
    assert Image.open(tmp_path / "page.png").size == (4 * 16, 4 * 16)
    with qtbot.waitSignal(pane.framesShown, timeout=10000) as walk:
        pane.walk_button.click()
    assert len(walk.args[0]) == 6
    pane.player.play_button.click()
    assert pane.player.playing
    pane.player.play_button.click()


def test_bad_generators_show_a_message_and_the_pane_keeps_working(qtbot, pane, tmp_path, monkeypatch):
    good = pane.model
    raising = str(make_torchscript(tmp_path / "raise.pt", z_dim=4, module=_Raising()))
    with qtbot.waitSignal(pane.errorShown, timeout=10000) as err:
        pane.picker.add_path(raising)
    assert "broken on purpose" in err.args[0]
    from PySide6.QtWidgets import QInputDialog

    asked = []
    monkeypatch.setattr(QInputDialog, "getInt", lambda *a, **k: (asked.append(1), (5, True))[1])
    bare = str(make_torchscript(tmp_path / "bare.pt", z_dim=5, metadata=False))
    with qtbot.waitSignal(pane.gridShown, timeout=10000):
        pane.picker.add_path(bare)
    assert pane.grid.count() == 16 and asked == [1]
    pane.refresh()
    assert asked == [1]  # asked once
    with qtbot.waitSignal(pane.gridShown, timeout=10000):
        pane.picker.add_path(good)
    assert pane.message.kind != "error"


def test_bundled_generator_is_listed_and_loaded_when_the_pane_opens(qtbot, bridge, settings, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_STUDIO_MODELS", str(tmp_path / "models"))
    make_dcgan(tmp_path / "models" / "shapes-gan")
    pane = GanPane(bridge, settings)
    qtbot.addWidget(pane)
    changes = []
    pane.picker.modelChanged.connect(changes.append)
    with qtbot.waitSignal(pane.gridShown, timeout=30000):
        pane.show()
    assert pane.picker.box.count() == 1 and pane.model == "shapes-gan"
    assert changes == ["shapes-gan"]
    assert pane.grid.count() == 16
