import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon

from studio.core.gallery import Gallery
from studio.ui.panes.image import ImagePane

pytestmark = pytest.mark.usefixtures("models_dir")


@pytest.fixture
def pane(qtbot, bridge, settings):
    pane = ImagePane(bridge, settings)
    qtbot.addWidget(pane)
    qtbot.waitUntil(lambda: pane.models_loaded, timeout=20000)
    pane.prompt_edit.setPlainText("a red circle on the left")
    pane.steps.setValue(3)
    pane.width_box.setValue(64)
    pane.height_box.setValue(64)
    pane.seed.set_seed(7)
    return pane


def _outputs(settings):
    return sorted(Path(settings.outputs_dir).glob("*.png"))


def test_the_picker_lists_the_models_folder(pane):
    assert [pane.model_box.itemText(i) for i in range(pane.model_box.count())] == ["tiny-sd"]
    assert pane.current_model() == "tiny-sd"
    keys = [pane.scheduler_box.itemData(i) for i in range(pane.scheduler_box.count())]
    assert {"ddim", "ddpm", "euler", "euler_a", "dpmpp_2m"} <= set(keys)
    assert "lcm" not in keys  # the tiny model is not LCM-distilled


def test_generate_previews_every_step_shows_and_saves_the_image(qtbot, pane, settings):
    previews = []
    pane.previewShown.connect(lambda step, total: previews.append((step, total)))
    with qtbot.waitSignal(pane.imagesShown, timeout=60000) as blocker:
        ids = pane.generate()
    assert len(ids) == 1
    result = blocker.args[0]
    assert previews[-1] == (3, 3) and len(previews) >= 3
    assert pane.view.has_image() and pane.view.pixmap().width() == 64
    assert pane.results.count() == 1
    # the selected thumbnail shows the image's own colours, not Qt's highlight blend
    icon = pane.results.item(0).icon()
    normal = icon.pixmap(QSize(64, 64), QIcon.Mode.Normal).toImage()
    selected = icon.pixmap(QSize(64, 64), QIcon.Mode.Selected).toImage()
    assert selected == normal
    assert [p.name for p in _outputs(settings)] == [Path(result.paths[0]).name]
    assert result.seeds == [7]
    assert pane.seed.last == 7
    assert pane.error_text() == ""
    saved = Gallery(settings.outputs_dir).list_items()
    assert saved[0].prompt == "a red circle on the left" and saved[0].seed == 7


def test_ctrl_enter_generates(qtbot, pane):
    with qtbot.waitActive(pane):
        pane.show()
        pane.activateWindow()
    pane.prompt_edit.setFocus()
    with qtbot.waitSignal(pane.bridge.started, timeout=10000, check_params_cb=lambda jid, job: jid in pane.jobs):
        qtbot.keyClick(pane.prompt_edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert pane.prompt_edit.toPlainText() == "a red circle on the left"  # no newline typed
    qtbot.waitUntil(lambda: not pane.jobs, timeout=60000)


def test_batch_count_queues_several_jobs_with_advancing_seeds(qtbot, pane, settings):
    pane.batch_count.setValue(2)
    pane.batch_size.setValue(2)
    requests = pane.requests()
    assert [r.seed for r in requests] == [7, 9]
    with qtbot.waitSignals([pane.imagesShown, pane.imagesShown], timeout=60000):
        pane.generate()
    qtbot.waitUntil(lambda: not pane.jobs, timeout=60000)
    assert pane.results.count() == 4
    assert len(_outputs(settings)) == 4


def test_bad_input_is_shown_in_the_pane_and_nothing_is_queued(qtbot, pane):
    pane.seed.set_mode("fixed")
    pane.seed.edit.setText("twelve")
    assert pane.generate() == []
    assert "seed must be a whole number" in pane.error_text()
    pane.seed.set_seed(1)
    pane.width_box.setValue(60)
    assert pane.generate() == []
    assert "multiples of 8" in pane.error_text()


def test_a_failing_job_shows_its_message_and_the_next_one_works(qtbot, pane):
    pane.model_box.addItem("gone", "no-such-model")
    pane.model_box.setCurrentIndex(pane.model_box.count() - 1)
    with qtbot.waitSignal(pane.errorShown, timeout=60000) as blocker:
        pane.generate()
    assert "no-such-model" in blocker.args[0]
    assert pane.error_text() == blocker.args[0]
    assert "Failed" in pane.caption.text()
    pane.model_box.setCurrentIndex(0)
    with qtbot.waitSignal(pane.imagesShown, timeout=60000):
        pane.generate()
    assert pane.error_text() == ""


def test_long_prompt_shows_the_token_count_and_the_truncation_notice(qtbot, pane):
    with qtbot.waitSignal(pane.tokensCounted, timeout=20000) as counted:
        pane.prompt_edit.setPlainText("a red circle " * 40)
    used, limit = counted.args
    assert used > limit == 75
    assert f"{used} / {limit}" in pane.token_label.text()
    with qtbot.waitSignal(pane.imagesShown, timeout=60000):
        pane.generate()
    assert "ignored" in pane.notice_text()


def test_cancel_from_the_status_bar_stops_the_job_and_saves_nothing(qtbot, make_window, bridge, settings):
    window = make_window()
    pane = window.image_pane
    qtbot.waitUntil(lambda: pane.models_loaded, timeout=20000)
    pane.steps.setValue(150)
    pane.prompt_edit.setPlainText("a blue square")
    gate = threading.Event()
    seen = []

    def on_progress(job_id, step, total, preview):
        seen.append(step)
        if step >= 2:
            gate.set()

    bridge.progress.connect(on_progress)
    job_id = pane.generate()[0]
    qtbot.waitUntil(gate.is_set, timeout=60000)
    with qtbot.waitSignal(bridge.cancelled, timeout=20000, check_params_cb=lambda jid: jid == job_id):
        qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    assert max(seen) < 150
    assert _outputs(settings) == []
    assert "nothing was saved" in pane.caption.text()
    assert pane.jobs == []


def test_apply_parameters_and_reuse_last_seed(qtbot, pane):
    assert pane.guidance_box.currentData() == "cfg"  # the pane's default
    pane.apply_parameters(
        {"prompt": "a green star", "negative_prompt": "dark", "steps": 5, "guidance_scale": 4.0,
         "guidance_method": "fdg", "scheduler": "ddim", "seed": 42, "width": 48, "height": 56,
         "model": "not-here"}
    )
    assert pane.prompt_edit.toPlainText() == "a green star"
    assert pane.scheduler_box.currentData() == "ddim"
    assert pane.guidance_box.currentData() == "fdg"
    assert pane.requests()[0].guidance_method == "fdg"
    assert (pane.width_box.value(), pane.height_box.value()) == (48, 56)
    assert pane.seed.next_seed() == 42
    assert "not installed" in pane.notice_text()
    pane.seed.set_last(1234)
    pane.seed.set_mode("reuse")
    assert pane.requests()[0].seed == 1234


def test_the_form_survives_a_restart(qtbot, pane, bridge, settings):
    pane.prompt_edit.setPlainText("a large star")
    pane.negative_edit.setPlainText("dark")
    pane.steps.setValue(12)
    pane.cfg.setValue(5.5)
    pane._select_scheduler("ddim")
    pane.guidance_box.setCurrentIndex(pane.guidance_box.findData("apg"))
    pane.batch_count.setValue(4)
    pane.store_settings(settings)
    again = ImagePane(bridge, settings)
    qtbot.addWidget(again)
    qtbot.waitUntil(lambda: again.models_loaded, timeout=20000)
    assert again.prompt_edit.toPlainText() == "a large star"
    assert again.negative_edit.toPlainText() == "dark"
    assert (again.steps.int_value(), again.cfg.value()) == (12, 5.5)
    assert again.scheduler_box.currentData() == "ddim"
    assert again.guidance_box.currentData() == "apg"
    assert again.batch_count.value() == 4
    assert again.seed.mode == "fixed" and again.seed.next_seed() == 7
    assert again.current_model() == "tiny-sd"
