import json
import os
import subprocess
import sys


def _env(tmp_path, **extra):
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        LATENT_STUDIO_CONFIG_DIR=str(tmp_path / "config"),
        LATENT_STUDIO_DATA_DIR=str(tmp_path / "data"),
        LATENT_STUDIO_NO_DIALOGS="1",
        **extra,
    )
    return env


def test_smoke_prints_one_json_line_and_exits_0(tmp_path, models_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "studio", "--smoke"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    timings = json.loads(lines[0])
    assert set(timings) == {"window_shown_s", "engine_ready_s"}
    assert 0 < timings["window_shown_s"] <= timings["engine_ready_s"]
    # A smoke run leaves no settings behind.
    assert not (tmp_path / "config" / "settings.json").exists()


WINDOW_BEFORE_TORCH = """
import sys
from PySide6.QtWidgets import QApplication
from studio.core.engine import Engine
from studio.core.settings import Settings
from studio.ui.bridge import Bridge
from studio.ui.main_window import MainWindow
app = QApplication([])
window = MainWindow(Bridge(Engine()), Settings(), persist=False)
window.show()
app.processEvents()
heavy = sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_the_window_is_built_and_shown_without_importing_torch(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", WINDOW_BEFORE_TORCH],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "none"
