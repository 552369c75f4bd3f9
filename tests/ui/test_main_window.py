import threading
import time
import warnings

import pytest
from PIL import Image
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QWidget

from studio.core.engine import CallJob
from studio.core.settings import load_settings
from studio.ui.main_window import PaneError, format_eta
from studio.ui.panes import PANES

A1111_PARAMETERS = (
    "masterpiece, a red circle on a blue background, (detailed:1.2)\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 24, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234567, Size: 512x768, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.7.0, Lora hashes: "a: 1, b: 2"'
)


def _gated(gate, steps=3, step_s=0.0):
    def fn(ctx):
        for i in range(steps):
            gate.wait(10)
            time.sleep(step_s)
            ctx.progress(i + 1, steps)
        return "done"

    return fn


def test_status_bar_shows_the_device_and_every_pane_is_there(make_window):
    window = make_window()
    assert window.device_label.text() == "CPU"
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles == [title for title, _ in PANES]
    assert {"Prompt", "Image", "VAE", "GAN", "Gallery"} <= set(titles)
    window.build_all_panes()
    assert not any(isinstance(p, PaneError) for p in window.panes.values())
    assert set(window.panes) == set(titles)


def test_panes_not_on_screen_are_built_right_after_the_window_shows(qtbot, make_window):
    window = make_window()
    assert window.panes == {}
    with qtbot.waitExposed(window):
        window.show()
    qtbot.waitUntil(lambda: len(window.panes) == len(PANES), timeout=10000)


def test_status_bar_follows_the_running_job_and_cancel_stops_it(qtbot, make_window, bridge):
    window = make_window()
    gate = threading.Event()
    job = CallJob(fn=_gated(gate, steps=1000, step_s=0.005))
    with qtbot.waitSignal(bridge.started, timeout=10000, check_params_cb=lambda jid, j: jid == job.job_id):
        bridge.submit(job)
    assert window.cancel_button.isEnabled()
    assert window.job_label.text() == job.title
    gate.set()
    qtbot.waitUntil(lambda: window.progress_bar.value() > 0, timeout=10000)
    assert window.progress_bar.maximum() == 1000
    assert window.eta_label.text().startswith("ETA ")
    with qtbot.waitSignal(bridge.cancelled, timeout=10000, check_params_cb=lambda jid: jid == job.job_id):
        qtbot.mouseClick(window.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.job_label.text() == "Idle")
    assert not window.cancel_button.isEnabled()
    assert window.progress_bar.isHidden()


def test_escape_cancels_the_running_job(qtbot, make_window, bridge):
    window = make_window()
    with qtbot.waitActive(window):
        window.show()
        window.activateWindow()
    window.image_pane.prompt_edit.setFocus()
    gate = threading.Event()
    gate.set()
    job = CallJob(fn=_gated(gate, steps=100000, step_s=0.001))
    with qtbot.waitSignal(bridge.started, timeout=10000, check_params_cb=lambda jid, j: jid == job.job_id):
        bridge.submit(job)
    with qtbot.waitSignal(bridge.cancelled, timeout=10000, check_params_cb=lambda jid: jid == job.job_id):
        qtbot.keyClick(window.image_pane.prompt_edit, Qt.Key.Key_Escape)


def test_queue_lists_pending_jobs_and_removes_one(qtbot, make_window, bridge):
    window = make_window()
    gate = threading.Event()
    first = CallJob(fn=_gated(gate))
    second = CallJob(fn=lambda ctx: "second")
    third = CallJob(fn=lambda ctx: "third")
    with qtbot.waitSignal(bridge.started, timeout=10000, check_params_cb=lambda jid, j: jid == first.job_id):
        bridge.submit(first)
    bridge.submit(second)
    bridge.submit(third)
    jobs = window.job_list
    qtbot.waitUntil(lambda: jobs.queued_ids() == [second.job_id, third.job_id])
    assert jobs.list.count() == 3  # the running one first
    assert window.queue_label.text() == "Queue: 2"

    jobs.select_job(second.job_id)
    assert jobs.remove_button.isEnabled()
    with qtbot.waitSignal(bridge.cancelled, timeout=5000, check_params_cb=lambda jid: jid == second.job_id):
        qtbot.mouseClick(jobs.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: jobs.queued_ids() == [third.job_id])
    assert window.queue_label.text() == "Queue: 1"

    finished = []
    bridge.finished.connect(lambda jid, result: finished.append(result))
    gate.set()
    qtbot.waitUntil(lambda: finished == ["done", "third"], timeout=10000)
    qtbot.waitUntil(lambda: jobs.list.count() == 0)


def test_geometry_pane_and_dock_are_restored_on_restart(qtbot, make_window, bridge, settings, tmp_path):
    path = tmp_path / "config" / "settings.json"
    window = make_window(settings_path=path)
    with qtbot.waitExposed(window):
        window.show()
    window.queue_dock.hide()
    window.show_pane("Gallery")
    window.resize(760, 520)
    qtbot.waitUntil(lambda: window.width() == 760)
    window.close()

    restored = load_settings(path)
    assert restored.current_pane == "Gallery"
    again = make_window(settings_obj=restored, settings_path=path)
    with qtbot.waitExposed(again):
        again.show()
    assert (again.width(), again.height()) == (760, 520)
    assert again.current_pane() is again.pane("Gallery")
    assert again.queue_dock.isHidden()


def _drop(widget: QWidget, path) -> None:
    """What a file manager's drag does: enter (must be accepted), then drop."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    pos = widget.rect().center()
    with warnings.catch_warnings():
        # PySide marks the QPoint constructor deprecated but offers no other.
        warnings.simplefilter("ignore", DeprecationWarning)
        enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)


def test_dropping_an_a1111_png_restores_its_parameters(qtbot, make_window, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", A1111_PARAMETERS)
    path = tmp_path / "00001-1234567.png"
    Image.new("RGB", (8, 8), "red").save(path, pnginfo=info)
    window = make_window()
    window.show_pane("Gallery")
    image = window.image_pane
    with qtbot.waitSignal(window.parametersRestored, timeout=5000):
        _drop(image.prompt_edit.viewport(), path)
    assert image.prompt_edit.toPlainText() == "masterpiece, a red circle on a blue background, (detailed:1.2)"
    assert image.negative_edit.toPlainText() == "blurry, lowres"
    assert image.steps.int_value() == 24
    assert image.cfg.value() == pytest.approx(6.5)
    assert (image.width_box.value(), image.height_box.value()) == (512, 768)
    assert image.seed.mode == "fixed" and image.seed.next_seed() == 1234567
    assert image.scheduler_box.currentData() == "dpmpp_2m"
    assert window.current_pane() is image


def test_dropping_our_png_restores_the_exact_request(qtbot, make_window, tmp_path):
    from studio.core.jobs import TextToImage
    from studio.core.metadata import format_parameters, png_info

    request = TextToImage(
        prompt="a star, top: left", negative_prompt="", guidance_scale=3.0, steps=7,
        scheduler="ddim", seed=99, width=48, height=40, batch_size=2, model="shapes-diffusion",
    ).to_dict()
    path = tmp_path / "ours.png"
    Image.new("RGB", (48, 40)).save(path, pnginfo=png_info(format_parameters(request), request))
    window = make_window()
    image = window.image_pane
    image.prompt_edit.setPlainText("something else")
    image.negative_edit.setPlainText("old negative")
    with qtbot.waitSignal(window.parametersRestored, timeout=5000):
        _drop(window.tabs, path)
    assert image.prompt_edit.toPlainText() == "a star, top: left"
    assert image.negative_edit.toPlainText() == ""
    assert (image.steps.int_value(), image.batch_size.value()) == (7, 2)
    assert image.scheduler_box.currentData() == "ddim"


def test_dropping_a_png_without_parameters_says_so(qtbot, make_window, tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(path)
    window = make_window()
    window.image_pane.prompt_edit.setPlainText("kept")
    _drop(window.tabs, path)
    assert "no generation parameters" in window.statusBar().currentMessage()
    assert window.image_pane.prompt_edit.toPlainText() == "kept"


class PromptSender(QWidget):
    sendPrompt = Signal(str)

    def __init__(self, bridge, settings, parent=None):
        super().__init__(parent)


def test_a_pane_that_fails_to_load_shows_why_and_send_prompt_reaches_the_image_pane(
    qtbot, make_window, monkeypatch
):
    import studio.ui.main_window as mw

    monkeypatch.setattr(
        mw,
        "PANES",
        [
            ("Writer", f"{__name__}:PromptSender"),
            ("Image", "studio.ui.panes.image:ImagePane"),
            ("Broken", "studio.ui.panes.does_not_exist:Nothing"),
        ],
    )
    window = make_window()
    broken = window.pane("Broken")
    assert isinstance(broken, PaneError)
    assert "does_not_exist" in broken.detail
    window.show_pane("Writer")
    window.pane("Writer").sendPrompt.emit("a blue triangle")
    assert window.image_pane.prompt_edit.toPlainText() == "a blue triangle"
    assert window.current_pane() is window.image_pane


def test_format_eta():
    assert format_eta(0) == "0:00"
    assert format_eta(75.4) == "1:15"
    assert format_eta(3725) == "1:02:05"


def test_settings_dialog_changes_reach_the_engine_panes_and_the_file(make_window, bridge, tmp_path, monkeypatch):
    from studio.ui.settings_dialog import SettingsDialog

    new_outputs = tmp_path / "elsewhere"

    def accept(dialog):
        dialog.outputs_edit.setText(str(new_outputs))
        dialog.tiling.setChecked(True)
        dialog.slicing.setChecked(True)
        dialog.folders.addItem(str(tmp_path / "my-models"))
        return 1

    monkeypatch.setattr(SettingsDialog, "exec", accept)
    path = tmp_path / "config" / "settings.json"
    window = make_window(settings_path=path)
    gallery = window.pane("Gallery")
    window.open_settings()
    assert bridge.engine.options["vae_tiling"] is True
    assert bridge.engine.options["attention_slicing"] is True
    assert bridge.engine.options["outputs_dir"] == str(new_outputs)
    assert bridge.engine.options["model_folders"] == [str(tmp_path / "my-models")]
    assert gallery.gallery.folder == new_outputs
    saved = load_settings(path)
    assert saved.vae_tiling and saved.outputs_dir == str(new_outputs)
