import asyncio
import threading

import pytest
import qasync
from PySide6.QtCore import QThread

from studio.core.engine import CallJob, Engine
from studio.core.errors import UserError
from studio.ui.bridge import Bridge


@pytest.fixture
def bridge(qtbot):
    engine = Engine(device="cpu")
    bridge = Bridge(engine)
    with qtbot.waitSignal(bridge.engineReady, timeout=30000):
        engine.start()
    yield bridge
    bridge.close()
    engine.stop()


def _steps(n, gate=None):
    def fn(ctx):
        for i in range(n):
            if gate is not None:
                gate.wait(5)
            ctx.progress(i + 1, n)
        return "done"

    return fn


def test_events_arrive_as_signals_on_the_qt_thread(qtbot, bridge):
    threads = []
    seen = []
    main = QThread.currentThread()
    bridge.progress.connect(lambda jid, s, t, p: (threads.append(QThread.currentThread()), seen.append(s)))
    job = CallJob(fn=_steps(3))
    with qtbot.waitSignal(bridge.finished, timeout=10000, check_params_cb=lambda jid, r: jid == job.job_id) as blocker:
        bridge.submit(job)
    assert blocker.args[1] == "done"
    assert seen == [1, 2, 3]
    assert threads and all(t is main for t in threads)
    assert bridge.running is None


def test_engine_ready_reports_the_device(bridge):
    assert bridge.ready
    assert bridge.device == "cpu"
    assert bridge.device_name.startswith("CPU")


def test_ready_is_replayed_for_a_late_bridge(qtbot):
    engine = Engine(device="cpu")
    engine.start()
    assert engine.wait_ready(30)
    try:
        late = Bridge(engine)
        with qtbot.waitSignal(late.engineReady, timeout=5000) as blocker:
            pass
        assert blocker.args[0] == "cpu"
        late.close()
    finally:
        engine.stop()


def _run(coro):
    from PySide6.QtWidgets import QApplication

    loop = qasync.QEventLoop(QApplication.instance(), already_running=False)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_await_run_returns_the_result(qtbot, bridge):
    assert _run(bridge.run(CallJob(fn=lambda ctx: 41 + 1))) == 42


def test_await_run_raises_user_error_on_failure(qtbot, bridge):
    def boom(ctx):
        raise UserError("The model folder is missing.")

    errors = []
    bridge.error.connect(errors.append)
    with pytest.raises(UserError, match="model folder is missing"):
        _run(bridge.run(CallJob(fn=boom)))
    assert errors == ["The model folder is missing."]


def test_await_run_raises_cancelled_when_the_job_is_cancelled(qtbot, bridge):
    gate = threading.Event()

    async def scenario():
        task = asyncio.ensure_future(bridge.run(CallJob(fn=_steps(100, gate))))
        while bridge.running is None:
            await asyncio.sleep(0.005)
        bridge.cancel_running()
        gate.set()
        return await task

    with pytest.raises(asyncio.CancelledError):
        _run(scenario())


def test_cancelling_the_awaiting_task_cancels_the_job(qtbot, bridge):
    gate = threading.Event()
    job = CallJob(fn=_steps(100, gate))

    async def scenario():
        task = asyncio.ensure_future(bridge.run(job))
        while bridge.running is None:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()

    with qtbot.waitSignal(bridge.cancelled, timeout=10000, check_params_cb=lambda jid: jid == job.job_id):
        _run(scenario())


def test_queue_changes_and_remove_queued(qtbot, bridge):
    gate = threading.Event()
    first = CallJob(fn=lambda ctx: gate.wait(5))
    second = CallJob(fn=lambda ctx: "second")
    with qtbot.waitSignal(bridge.started, timeout=5000):
        bridge.submit(first)
    with qtbot.waitSignal(bridge.queueChanged, timeout=5000) as blocker:
        bridge.submit(second)
    assert [j.job_id for j in blocker.args[0]] == [second.job_id]
    with qtbot.waitSignal(bridge.cancelled, timeout=5000, check_params_cb=lambda jid: jid == second.job_id):
        assert bridge.remove_queued(second.job_id)
    qtbot.waitUntil(lambda: bridge.pending == [])
    gate.set()
    with qtbot.waitSignal(bridge.finished, timeout=5000):
        pass
