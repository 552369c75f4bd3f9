import time

import pytest

from studio.core.engine import Engine, run_on_thread
from studio.core.settings import Settings
from studio.ui.bridge import Bridge


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # Nothing a test does may touch the user's real config, data or HF cache.
    monkeypatch.setenv("LATENT_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LATENT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    return Settings(outputs_dir=str(tmp_path / "outputs"), scan_hf_cache=False, device="cpu")


@pytest.fixture(scope="session")
def _engine():
    # One inference thread for the whole run, as in the app: pipelines load once.
    engine = Engine(device="cpu")
    engine.start()
    assert engine.wait_ready(120)
    # The CPU is shared (with other tests, with training): one torch thread makes a
    # tiny model's step take milliseconds instead of waiting on busy cores.
    run_on_thread(engine, lambda ctx: __import__("torch").set_num_threads(1))
    yield engine
    engine.stop()


@pytest.fixture
def engine(_engine, settings):
    _engine.options.clear()
    _engine.options.update(settings.engine_options())
    yield _engine
    # Leave the thread idle for the next test.
    _engine.clear_queue()
    _engine.cancel_running()
    deadline = time.monotonic() + 30
    while _engine.running_job is not None and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def bridge(qtbot, engine):
    bridge = Bridge(engine)
    qtbot.waitUntil(lambda: bridge.ready, timeout=10000)
    yield bridge
    bridge.close()


@pytest.fixture
def make_window(qtbot, bridge, settings, tmp_path):
    """Build a main window on the shared engine; closed (and its state saved) at teardown."""
    from studio.ui.main_window import MainWindow

    windows = []

    def make(settings_obj=None, settings_path=None, persist=True):
        window = MainWindow(
            bridge,
            settings_obj or settings,
            settings_path=settings_path or tmp_path / "config" / "settings.json",
            persist=persist,
        )
        qtbot.addWidget(window)
        windows.append(window)
        return window

    yield make
    for window in windows:
        window.close()


@pytest.fixture
def models_dir(tiny_pipeline, monkeypatch):
    """The tiny pipeline stands in for the bundled models (as `tiny-sd`)."""
    monkeypatch.setenv("LATENT_STUDIO_MODELS", str(tiny_pipeline.parent))
    return tiny_pipeline.parent
