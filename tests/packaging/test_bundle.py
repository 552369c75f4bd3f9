"""The frozen app: build the PyInstaller bundle, then run it as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
SIZE_LIMIT = 1.2e9


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    existing = os.environ.get("LATENT_STUDIO_BUNDLE")
    if existing:
        return Path(existing).resolve()
    pytest.importorskip("PyInstaller")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            str(ROOT / "packaging" / "latent-studio.spec"),
            "--noconfirm",
            "--distpath",
            str(dist),
            "--workpath",
            str(ROOT / "build" / "pyinstaller"),
        ],  # fmt: skip
        cwd=ROOT,
        check=True,
        timeout=3600,
    )
    return dist / "latent-studio"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A fresh home: the frozen app must not lean on the developer's settings or caches.
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
        XDG_DATA_HOME=str(tmp_path / "home" / ".local" / "share"),
        XDG_CACHE_HOME=str(tmp_path / "home" / ".cache"),
        XDG_STATE_HOME=str(tmp_path / "home" / ".local" / "state"),
        QT_QPA_PLATFORM="offscreen",
        LATENT_STUDIO_NO_DIALOGS="1",
    )
    for var in ("PYTHONPATH", "HF_HOME", "LATENT_STUDIO_MODELS"):
        env.pop(var, None)
    return env


def test_bundle_layout_and_size(bundle: Path) -> None:
    exe = bundle / "latent-studio"
    assert exe.is_file() and os.access(exe, os.X_OK)
    internal = bundle / "_internal"
    assert (internal / "assets" / "latent-studio-256.png").is_file()
    assert (internal / "assets" / "latent-studio.svg").is_file()
    # Package metadata that transformers and diffusers check at run time.
    for dist in ("torch", "transformers", "diffusers", "tokenizers", "safetensors"):
        assert list(internal.glob(f"{dist}-*.dist-info")), dist
    names = {p.name for p in internal.rglob("*")}
    for unwanted in ("libQt6WebEngineCore.so.6", "libQt6Qml.so.6", "libQt6Quick.so.6"):
        assert unwanted not in names
    assert not (internal / "torch" / "include").exists()
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    assert size < SIZE_LIMIT, f"bundle is {size / 1e9:.2f} GB"


def test_frozen_smoke_opens_the_window(bundle: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(bundle / "latent-studio"), "--smoke"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    timings = json.loads(lines[-1])
    assert 0 < timings["window_shown_s"] <= timings["engine_ready_s"]


def test_frozen_cli_dispatches(bundle: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [str(bundle / "latent-studio"), "generate", "--help"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--prompt" in out.stdout


def test_frozen_generate_with_bundled_model(bundle: Path, tmp_path: Path) -> None:
    if not (bundle / "_internal" / "models" / "shapes-diffusion" / "model_index.json").is_file():
        pytest.skip("the bundle was built without models/shapes-diffusion")
    from PIL import Image

    target = tmp_path / "x.png"
    out = subprocess.run(
        [
            str(bundle / "latent-studio"),
            "generate",
            "--prompt",
            "a red circle on a blue background",
            "-o",
            str(target),
        ],  # fmt: skip
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    with Image.open(target) as image:
        assert image.size[0] >= 64
        assert "parameters" in image.info


@pytest.mark.parametrize("xl", [False, True], ids=["sd", "sdxl"])
def test_frozen_generate_loads_sd_and_sdxl_folders(bundle: Path, tmp_path: Path, xl: bool) -> None:
    """The lazily imported diffusers/transformers modules of both families are bundled."""
    from PIL import Image

    from tests.core.tiny_pipeline import make_tiny_pipeline

    model = make_tiny_pipeline(tmp_path / "tiny", xl=xl)
    target = tmp_path / "tiny.png"
    out = subprocess.run(
        [
            str(bundle / "latent-studio"),
            "generate",
            "--model",
            str(model),
            "--prompt",
            "a red circle",
            "--steps",
            "2",
            "-o",
            str(target),
            "--quiet",
        ],  # fmt: skip
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    with Image.open(target) as image:
        assert image.size == (64, 64)


def test_frozen_chat_with_bundled_prompt_writer(bundle: Path, tmp_path: Path) -> None:
    if not (bundle / "_internal" / "models" / "prompt-writer" / "config.json").is_file():
        pytest.skip("the bundle was built without models/prompt-writer")
    out = subprocess.run(
        [
            str(bundle / "latent-studio"),
            "chat",
            "--model",
            "prompt-writer",
            "--prompt",
            "a red circle",
            "--greedy",
            "--max-new-tokens",
            "24",
        ],  # fmt: skip
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip()


def test_missing_models_folder_is_reported_not_a_crash(bundle: Path, tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["LATENT_STUDIO_MODELS"] = str(tmp_path / "no-models-here")
    out = subprocess.run(
        [str(bundle / "latent-studio"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert str(tmp_path / "no-models-here") in out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_home_is_reported_not_a_crash(bundle: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    env = _env(tmp_path)
    for var in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env[var] = str(blocker / var.lower())
    out = subprocess.run(
        [str(bundle / "latent-studio"), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode != 0
    assert "Cannot write to the" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb: Debian/Ubuntu only")
def test_deb_contents(bundle: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "packaging" / "deb"))
    try:
        from build_deb import build_deb
    finally:
        sys.path.pop(0)
    deb = build_deb(bundle, tmp_path, compression="none", staging=tmp_path / "stage")
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./opt/latent-studio/latent-studio",
        "./usr/bin/latent-studio",
        "./usr/share/applications/latent-studio.desktop",
        "./usr/share/icons/hicolor/48x48/apps/latent-studio.png",
        "./usr/share/icons/hicolor/scalable/apps/latent-studio.svg",
    ):
        assert path in listing, path
    assert "root/root" in listing
    fields = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Package", "Depends"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Package: latent-studio" in fields
    assert "libc6 (>= 2." in fields and "libgl1" in fields
