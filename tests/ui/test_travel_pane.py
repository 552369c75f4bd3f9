import pytest

from studio.core.jobs import TextToImage
from studio.ui.panes.travel import TravelPane


@pytest.fixture
def pane(qtbot, bridge, settings, tiny_pipeline):
    settings.default_model = str(tiny_pipeline)
    pane = TravelPane(bridge, settings)
    qtbot.addWidget(pane)
    pane.resize(1000, 650)
    pane.steps_box.setValue(2)
    pane.width_box.setValue(32)
    pane.height_box.setValue(32)
    pane.frames_box.setValue(3)
    pane.prompt_a.setPlainText("a red circle")
    return pane


def test_seed_travel_runs_with_progress_and_exports_mp4(qtbot, pane, tmp_path):
    steps = []
    pane.bridge.progress.connect(lambda jid, s, t, p: steps.append((s, t)) if jid == pane.job_id else None)
    with qtbot.waitSignal(pane.framesShown, timeout=60000) as got:
        pane.start_button.click()
    frames = got.args[0]
    assert len(frames) == 3 and frames.frames[0].shape == (32, 32, 3)
    assert steps and steps[-1] == (6, 6)
    assert pane.start_button.isEnabled() and not pane.cancel_button.isEnabled()
    pane._show_frame(1)
    assert '"t": 0.5' in pane.frame_info.text() and '"seed_b": 1' in pane.frame_info.text()
    with qtbot.waitSignal(pane.exported, timeout=20000):
        pane.export_frames(str(tmp_path / "travel.mp4"))
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(tmp_path / "travel.mp4"))
    assert next(reader)["size"] == (32, 32)
    assert len(list(reader)) == 3


def test_prompt_travel_and_bad_input(qtbot, pane):
    pane.mode_box.setCurrentIndex(1)
    pane.prompt_b.setPlainText("a red circle")
    with qtbot.waitSignal(pane.errorShown, timeout=1000) as err:
        pane.start()
    assert "two different prompts" in err.args[0]
    pane.prompt_b.setPlainText("a blue square")
    job = pane.request()
    assert job.seed_b is None and job.prompt_b == "a blue square"
    pane.travel_seeds.setChecked(True)
    assert pane.request().seed_b == pane.seed_b.value()
    with qtbot.waitSignal(pane.framesShown, timeout=60000):
        pane.start()
    pane.mode_box.setCurrentIndex(0)
    pane.seed_b.setValue(pane.seed_a.value())
    assert pane.start() == "" and "two different seeds" in pane.message.text()


def test_cancel_keeps_nothing_and_the_pane_works_after(qtbot, pane):
    pane.frames_box.setValue(200)
    with qtbot.waitSignal(pane.bridge.progress, timeout=60000):
        pane.start()
    with qtbot.waitSignal(pane.bridge.cancelled, timeout=20000):
        pane.cancel_button.click()
    assert pane.result is None and "Cancelled" in pane.message.text()
    pane.frames_box.setValue(2)
    with qtbot.waitSignal(pane.framesShown, timeout=60000):
        pane.start()


def test_copy_from_the_image_pane(qtbot, pane, monkeypatch, tiny_pipeline):
    class FakeImagePane:
        def current_model(self):
            return str(tiny_pipeline)

        def requests(self):
            return [TextToImage(prompt="a blue star", negative_prompt="red", steps=3, seed=41,
                                width=48, height=40, scheduler="euler_a", guidance_scale=5.0,
                                guidance_method="cfg")]

    monkeypatch.setattr(pane, "_image_pane", lambda: FakeImagePane())
    assert pane.copy_from_image_pane()
    job = pane.request()
    assert (job.prompt, job.negative_prompt, job.steps, job.seed_a, job.seed_b) == ("a blue star", "red", 3, 41, 42)
    assert (job.width, job.height, job.scheduler, job.guidance_scale) == (48, 40, "euler_a", 5.0)
    assert job.guidance_method == "cfg"
    assert pane.model_label.text() == str(tiny_pipeline)
