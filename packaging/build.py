"""Build the desktop app: the PyInstaller bundle, then (on Debian/Ubuntu) the .deb.

    python packaging/build.py                 # dist/latent-studio/ and dist/latent-studio_*.deb
    python packaging/build.py --no-deb        # the bundle only (also on Windows and macOS)
    python packaging/build.py --deb-only      # re-package an existing bundle

Timings and sizes go to build/build-info.json, which packaging/measure.py reads.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEC = HERE / "latent-studio.spec"
DIST = ROOT / "dist"
WORK = ROOT / "build" / "pyinstaller"
INFO = ROOT / "build" / "build-info.json"
BUNDLE = DIST / "latent-studio"


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def ensure_icons() -> None:
    """Re-render the PNG/ICO/ICNS icons when the SVG master is newer than them."""
    svg = ROOT / "assets" / "latent-studio.svg"
    outputs = [ROOT / "assets" / f"latent-studio-{s}.png" for s in (16, 256, 512)]
    outputs.append(ROOT / "assets" / "latent-studio.ico")
    if all(p.exists() and p.stat().st_mtime >= svg.stat().st_mtime for p in outputs):
        return
    subprocess.run([sys.executable, str(HERE / "render_icons.py")], check=True)


def build_bundle(*, models: bool = True, clean: bool = False) -> float:
    """Run PyInstaller on the spec; returns the seconds it took."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        raise SystemExit("PyInstaller is not installed: pip install -e '.[package]'") from None
    env = dict(os.environ)
    if not models:
        env["LATENT_STUDIO_NO_MODELS"] = "1"
    cmd = [
        sys.executable, "-m", "PyInstaller", str(SPEC), "--noconfirm",
        "--distpath", str(DIST), "--workpath", str(WORK),
    ]  # fmt: skip
    if clean:
        cmd.append("--clean")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-deb", action="store_true", help="build the bundle only")
    parser.add_argument("--deb-only", action="store_true", help="package the existing bundle")
    parser.add_argument("--no-models", action="store_true", help="leave models/ out")
    parser.add_argument("--clean", action="store_true", help="discard PyInstaller's cache")
    parser.add_argument("--compression", default="xz", choices=["xz", "zstd", "gzip", "none"])
    args = parser.parse_args(argv)

    info: dict[str, object] = {}
    if INFO.exists():
        info = json.loads(INFO.read_text())
    ensure_icons()
    if not args.deb_only:
        seconds = build_bundle(models=not args.no_models, clean=args.clean)
        info.update(bundle_seconds=round(seconds, 1), bundle_models=not args.no_models)
        info.pop("deb_seconds", None)
    if not BUNDLE.is_dir():
        raise SystemExit(f"no bundle at {BUNDLE}")
    info["bundle_bytes"] = folder_size(BUNDLE)
    print(f"bundle: {BUNDLE} ({info['bundle_bytes'] / 1e6:.0f} MB)")

    want_deb = not args.no_deb and sys.platform.startswith("linux")
    if want_deb and shutil.which("dpkg-deb") is None:
        print("dpkg-deb not found: skipping the .deb (build it on Debian or Ubuntu)")
        want_deb = False
    if want_deb:
        sys.path.insert(0, str(HERE / "deb"))
        from build_deb import build_deb

        start = time.perf_counter()
        deb = build_deb(BUNDLE, DIST, compression=args.compression)
        info.update(
            deb=str(deb.relative_to(ROOT)),
            deb_bytes=deb.stat().st_size,
            deb_seconds=round(time.perf_counter() - start, 1),
            deb_compression=args.compression,
        )
        print(f"deb: {deb} ({info['deb_bytes'] / 1e6:.0f} MB)")
    INFO.parent.mkdir(parents=True, exist_ok=True)
    INFO.write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
