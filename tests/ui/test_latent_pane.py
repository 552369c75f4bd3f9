"""The job bookkeeping the VAE and GAN panes share."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from studio.ui.panes.latent_pane import LatentPane


class FakeBridge(QObject):
    finished = Signal(str, object)
    failed = Signal(str, str, str)
    cancelled = Signal(str)
    progress = Signal(str, int, int, object)

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[object] = []

    def interactive(self, job: object) -> str:
        self.sent.append(job)
        return f"job-{len(self.sent)}"


class Message:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        self.errors.append(text)


class Pane(LatentPane):
    LATEST_ONLY = ("drag",)

    def __init__(self, bridge: FakeBridge) -> None:
        super().__init__(bridge, settings=None)
        self.message = Message()
        self.shown: list[tuple[str, object]] = []
        self.failures: list[str] = []
        self.steps: list[tuple[str, int, int]] = []

    def _show(self, purpose: str, result: object) -> None:
        self.shown.append((purpose, result))

    def _failed(self, purpose: str) -> None:
        self.failures.append(purpose)

    def _progress(self, purpose: str, step: int, total: int) -> None:
        self.steps.append((purpose, step, total))


def test_an_outdated_latest_only_result_is_dropped_but_others_are_shown(qtbot) -> None:
    bridge = FakeBridge()
    pane = Pane(bridge)
    qtbot.addWidget(pane)
    for job_id, purpose in (("a", "drag"), ("b", "drag"), ("c", "export"), ("d", "export")):
        pane._track(job_id, purpose)
    bridge.finished.emit("b", "new frame")
    bridge.finished.emit("a", "old frame")  # arrives late: a newer drag is already on screen
    bridge.finished.emit("d", "second file")
    bridge.finished.emit("c", "first file")  # not latest-only: every export is reported
    bridge.finished.emit("zzz", "someone else's")
    assert pane.shown == [("drag", "new frame"), ("export", "second file"), ("export", "first file")]


def test_failure_progress_and_cancel_reach_only_the_pane_that_sent_the_job(qtbot) -> None:
    bridge = FakeBridge()
    pane = Pane(bridge)
    qtbot.addWidget(pane)
    errors: list[str] = []
    pane.errorShown.connect(errors.append)
    pane._track("a", "map")
    pane._track("b", "map")
    bridge.progress.emit("a", 3, 10, None)
    bridge.progress.emit("other", 1, 2, None)
    bridge.failed.emit("a", "Out of memory.", "")
    bridge.failed.emit("other", "not ours", "")
    bridge.cancelled.emit("b")
    bridge.finished.emit("b", "too late")
    assert pane.steps == [("map", 3, 10)]
    assert pane.failures == ["map"] and errors == ["Out of memory."]
    assert pane.message.errors == ["Out of memory."]
    assert pane.shown == []


def test_a_coalesced_request_is_sent_when_the_one_in_flight_ends(qtbot) -> None:
    bridge = FakeBridge()
    pane = Pane(bridge)
    qtbot.addWidget(pane)
    first = pane.sender.send("drag", lambda: "t=0.1")
    assert pane.sender.send("drag", lambda: "t=0.2") == ""  # waits behind the first
    assert pane.sender.send("drag", lambda: "t=0.3") == ""  # replaces the waiting one
    bridge.finished.emit(first, "frame 0.1")
    assert bridge.sent == ["t=0.1", "t=0.3"]
    assert pane.shown == [("drag", "frame 0.1")]
