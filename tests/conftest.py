import os

# Offline and headless for every test, set before Qt, transformers or diffusers load.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# ---- text to image: user folders and the tiny pipeline ---------------------------
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402

# Settings, outputs and caches of a test run never touch the user's own folders.
_user_dirs = tempfile.mkdtemp(prefix="latent-studio-tests-")
atexit.register(shutil.rmtree, _user_dirs, ignore_errors=True)
os.environ.setdefault("LATENT_STUDIO_DATA_DIR", os.path.join(_user_dirs, "data"))
os.environ.setdefault("LATENT_STUDIO_CONFIG_DIR", os.path.join(_user_dirs, "config"))


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """Path of a tiny random StableDiffusionPipeline folder (64×64 output, built once)."""
    from tests.core.tiny_pipeline import make_tiny_pipeline

    return make_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")
