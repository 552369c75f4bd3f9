import pytest

from studio.core.engine import Engine
from studio.core.settings import Settings
from studio.ui.bridge import Bridge


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # Nothing a test does may touch the user's real config, data or HF cache.
    monkeypatch.setenv("LATENT_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LATENT_STUDIO_DATA_DIR", str(tmp_path / "data"))
    return Settings(outputs_dir=str(tmp_path / "outputs"), scan_hf_cache=False, device="cpu")


@pytest.fixture
def engine(settings):
    engine = Engine(device="cpu", options=settings.engine_options())
    yield engine
    engine.stop()


@pytest.fixture
def bridge(qtbot, engine):
    bridge = Bridge(engine)
    with qtbot.waitSignal(bridge.engineReady, timeout=60000):
        engine.start()
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
