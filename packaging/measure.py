"""Figures of the desktop build: sizes, build time, and frozen vs source start-up.

    python packaging/measure.py [--rounds 3]

Needs a built bundle (python packaging/build.py). Start-up is `--smoke` run
offscreen with a fresh home folder, alternating the source install
(`python -m studio --smoke`) and the frozen binary in the same run, so the
ratio holds on a noisy machine even when the absolute times do not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "dist" / "latent-studio"
INFO = ROOT / "build" / "build-info.json"


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def smoke_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_STATE_HOME=str(home / ".local" / "state"),
        LATENT_STUDIO_NO_DIALOGS="1",
        HF_HUB_OFFLINE="1",
    )
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    return env


def run_smoke(cmd: list[str], home: Path) -> dict[str, float]:
    out = subprocess.run(
        [*cmd, "--smoke"],
        env=smoke_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} --smoke failed:\n{out.stderr[-2000:]}")
    data = json.loads(lines[-1])
    return {k: float(data[k]) for k in ("window_shown_s", "engine_ready_s")}


def measure_startup(rounds: int, bundle: Path) -> dict[str, dict[str, float]]:
    commands = {
        "source": [sys.executable, "-m", "studio"],
        "frozen": [str(bundle / "latent-studio")],
    }
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory(prefix="ls-measure-") as tmp:
        # One warm-up each, so neither side pays for a cold disk cache alone.
        for name, cmd in commands.items():
            run_smoke(cmd, Path(tmp) / f"warm-{name}")
        for i in range(rounds):
            for name, cmd in commands.items():
                samples[name].append(run_smoke(cmd, Path(tmp) / f"{name}-{i}"))
    return {
        name: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
        for name, runs in samples.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--no-startup", action="store_true", help="sizes and build time only")
    args = parser.parse_args(argv)
    if not (args.bundle / "latent-studio").is_file():
        raise SystemExit(f"no bundle at {args.bundle}: run python packaging/build.py")

    info = json.loads(INFO.read_text()) if INFO.exists() else {}
    rows: list[tuple[str, str]] = []
    rows.append(("bundle size, unpacked", f"{folder_size(args.bundle) / 1e9:.2f} GB"))
    debs = sorted((ROOT / "dist").glob("latent-studio_*.deb"), key=lambda p: p.stat().st_mtime)
    if debs:
        compression = info.get("deb_compression", "xz")
        rows.append((f".deb size ({compression})", f"{debs[-1].stat().st_size / 1e6:.0f} MB"))
    if "bundle_seconds" in info:
        rows.append(("build time, PyInstaller bundle", f"{info['bundle_seconds'] / 60:.1f} min"))
    if "deb_seconds" in info:
        rows.append(("build time, .deb", f"{info['deb_seconds'] / 60:.1f} min"))

    if not args.no_startup:
        startup = measure_startup(args.rounds, args.bundle)
        src, frz = startup["source"], startup["frozen"]
        for key, label in (
            ("window_shown_s", "time to window"),
            ("engine_ready_s", "engine ready"),
        ):
            rows.append((f"{label}, source install", f"{src[key]:.2f} s"))
            rows.append((f"{label}, frozen bundle", f"{frz[key]:.2f} s"))
            rows.append((f"{label}, frozen / source", f"{frz[key] / src[key]:.2f}"))
        rows.append(("start-up rounds (median of)", str(args.rounds)))

    width = max(len(name) for name, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
