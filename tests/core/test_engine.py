import threading
import time

import pytest

from studio.core.engine import CallJob, Engine, run_on_thread
from studio.core.errors import UserError
from studio.core.jobs import Cancelled, Failed, Finished, Progress, Started


@pytest.fixture
def engine():
    e = Engine(device="cpu")
    e.start()
    assert e.wait_ready(30)
    yield e
    e.stop()


def _stepper(n, delay=0.01, log=None, name=""):
    def fn(ctx):
        for i in range(n):
            time.sleep(delay)
            if log is not None:
                log.append((name, i))
            ctx.progress(i + 1, n)
        return name

    return fn


def test_jobs_run_in_submission_order(engine):
    log = []
    handles = [engine.submit(CallJob(fn=_stepper(3, 0.001, log, str(i)))) for i in range(4)]
    assert [h.result(10) for h in handles] == ["0", "1", "2", "3"]
    assert [name for name, _ in log] == [n for n in "0123" for _ in range(3)]


def test_cancel_stops_within_one_step(engine):
    steps = []
    gate = threading.Event()

    def fn(ctx):
        for i in range(1000):
            steps.append(i)
            if i == 5:
                gate.set()
            time.sleep(0.005)
            ctx.progress(i + 1, 1000)
        return "finished"

    handle = engine.submit(CallJob(fn=fn))
    assert gate.wait(5)
    engine.cancel_running()
    seen = len(steps)
    assert isinstance(handle.wait(5), Cancelled)
    assert len(steps) <= seen + 1


def test_removing_a_queued_job_leaves_the_running_one(engine):
    gate = threading.Event()
    first = engine.submit(CallJob(fn=lambda ctx: gate.wait(5) and "first"))
    second = engine.submit(CallJob(fn=lambda ctx: "second"))
    third = engine.submit(CallJob(fn=lambda ctx: "third"))
    assert engine.remove_queued(second.job.job_id)
    gate.set()
    assert first.result(5) == "first"
    assert isinstance(second.wait(5), Cancelled)
    assert third.result(5) == "third"


def test_thread_survives_failures_and_oom(engine):
    def oom(ctx):
        ctx.models.get("big", lambda: object())
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = engine.submit(CallJob(fn=oom))
    end = handle.wait(5)
    assert isinstance(end, Failed)
    assert "memory" in end.message and "Settings" in end.message
    assert engine.models.keys() == []
    with pytest.raises(UserError, match="ZeroDivisionError"):
        run_on_thread(engine, lambda ctx: 1 / 0)
    assert run_on_thread(engine, lambda ctx: "alive") == "alive"


def test_events_in_order(engine):
    events = []
    engine.subscribe(lambda e: events.append(e))
    handle = engine.submit(CallJob(fn=_stepper(2, 0.0)))
    handle.wait(5)
    mine = [type(e) for e in events if e.job_id == handle.job.job_id]
    assert mine == [Started, Progress, Progress, Finished]


def test_model_cache_switching_frees_previous():
    from studio.core.engine import ModelCache

    released = []
    cache = ModelCache(on_release=lambda: released.append(1))
    a = cache.get("a", lambda: "A", group="pipe")
    assert cache.get("a", lambda: "other", group="pipe") is a
    cache.get("b", lambda: "B", group="pipe")
    cache.get("v", lambda: "V", group="vae")
    assert cache.keys() == ["b", "v"]
    assert released == [1]
