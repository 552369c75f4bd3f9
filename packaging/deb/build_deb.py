"""Build the Debian/Ubuntu package from the PyInstaller bundle with dpkg-deb.

    python packaging/deb/build_deb.py [--bundle dist/latent-studio] [--out dist]

Layout of the package:
    /opt/latent-studio/                      the one-folder bundle
    /usr/bin/latent-studio                   launcher (GUI, or CLI with a command)
    /usr/share/applications/latent-studio.desktop
    /usr/share/icons/hicolor/NxN/apps/latent-studio.png, scalable/apps/latent-studio.svg
    /usr/share/doc/latent-studio/copyright
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = "latent-studio"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)

# PyInstaller copies almost every shared library into the bundle; what it
# leaves to the system is glibc, the OpenGL/EGL driver stack, libxcb and
# Wayland (found by running ldd over the bundle). Fonts come from the system.
DEPENDS = (
    "libgl1",
    "libegl1",
    "libxcb1",
    "libwayland-client0",
    "libwayland-cursor0",
    "libwayland-egl1",
)
RECOMMENDS = ("fonts-dejavu-core | fonts-liberation2 | fonts-freefont-ttf",)

DESCRIPTION = """\
Desktop studio for local generative models
 Latent Studio is a desktop application for generating with local models:
 prompting an LLM, text-to-image diffusion with guidance and negative prompts,
 VAE latent interpolation and GAN sampling, driven by one background
 inference thread. Small models trained by the project are bundled, so it
 works offline out of the box. The `latent-studio` command also runs the
 headless CLI, e.g. `latent-studio generate --prompt "..." -o out.png`."""


def project_version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def deb_architecture() -> str:
    try:
        return subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def glibc_floor(bundle: Path, default: str = "2.31") -> str:
    """The newest GLIBC_x.y symbol version any binary in the bundle needs.

    The bundle carries the build machine's libraries, so it runs only where
    glibc is at least that new: build on the oldest distribution to support.
    """
    if shutil.which("objdump") is None:
        return default
    newest = tuple(int(x) for x in default.split("."))
    for path in bundle.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        with open(path, "rb") as fh:
            if fh.read(4) != b"\x7fELF":
                continue
        out = subprocess.run(
            ["objdump", "-T", str(path)], capture_output=True, text=True, check=False
        ).stdout
        for match in re.finditer(r"GLIBC_(\d+)\.(\d+)", out):
            newest = max(newest, (int(match.group(1)), int(match.group(2))))
    return ".".join(map(str, newest))


def _tree_size_kib(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return (total + 1023) // 1024


def _copy_bundle(bundle: Path, dest: Path) -> None:
    # A real copy, not hard links: dpkg-deb's tar fails if a file's link count
    # (and so its ctime) changes while it reads, e.g. when the bundle is rebuilt.
    shutil.copytree(bundle, dest, symlinks=True)


def _install(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    dest.chmod(mode)


def stage(bundle: Path, staging: Path, version: str, arch: str) -> Path:
    """Lay out the package tree under `staging` and return it."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _copy_bundle(bundle, staging / "opt" / PACKAGE)

    _install(HERE / "launcher.sh", staging / "usr/bin" / PACKAGE, 0o755)
    _install(
        HERE / "latent-studio.desktop",
        staging / "usr/share/applications" / f"{PACKAGE}.desktop",
        0o644,
    )
    assets = ROOT / "assets"
    icons = staging / "usr/share/icons/hicolor"
    for size in ICON_SIZES:
        _install(
            assets / f"latent-studio-{size}.png",
            icons / f"{size}x{size}" / "apps" / f"{PACKAGE}.png",
            0o644,
        )
    _install(assets / "latent-studio.svg", icons / "scalable/apps" / f"{PACKAGE}.svg", 0o644)
    _install(HERE / "copyright", staging / "usr/share/doc" / PACKAGE / "copyright", 0o644)

    debian = staging / "DEBIAN"
    debian.mkdir()
    control = {
        "Package": PACKAGE,
        "Version": version,
        "Architecture": arch,
        "Maintainer": "Latent Studio developers <latent-studio@users.noreply.github.com>",
        "Installed-Size": str(_tree_size_kib(staging)),
        "Depends": ", ".join((f"libc6 (>= {glibc_floor(bundle)})", *DEPENDS)),
        "Recommends": ", ".join(RECOMMENDS),
        "Section": "graphics",
        "Priority": "optional",
        "Homepage": "https://github.com/latent-studio/latent-studio",
        "Description": DESCRIPTION,
    }
    (debian / "control").write_text("".join(f"{k}: {v}\n" for k, v in control.items()))
    for script in ("postinst", "postrm"):
        _install(HERE / script, debian / script, 0o755)

    # dpkg-deb rejects group/other-writable control files and a umask can leave
    # the staged tree that way.
    for path in [staging, *staging.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode & 0o777
        path.chmod(mode & ~0o022)
    return staging


def build_deb(
    bundle: Path,
    out_dir: Path,
    *,
    version: str | None = None,
    compression: str = "xz",
    level: int | None = None,
    staging: Path | None = None,
) -> Path:
    """Build `<out_dir>/latent-studio_<version>_<arch>.deb` from the bundle folder."""
    if not (bundle / PACKAGE).is_file():
        raise SystemExit(f"no bundle at {bundle}: run PyInstaller first (packaging/build.py)")
    if shutil.which("dpkg-deb") is None:
        raise SystemExit("dpkg-deb not found: the .deb is built on Debian or Ubuntu")
    version = version or project_version()
    arch = deb_architecture()
    staging = staging or ROOT / "build" / "deb" / f"{PACKAGE}_{version}_{arch}"
    stage(bundle, staging, version, arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    deb = out_dir / f"{PACKAGE}_{version}_{arch}.deb"
    cmd = ["dpkg-deb", "--root-owner-group", f"-Z{compression}"]
    if level is not None:
        cmd.append(f"-z{level}")
    cmd += ["--build", str(staging), str(deb)]
    subprocess.run(cmd, check=True)
    shutil.rmtree(staging)
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the .deb from the PyInstaller bundle.")
    parser.add_argument("--bundle", type=Path, default=ROOT / "dist" / PACKAGE)
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--compression", default="xz", choices=["xz", "zstd", "gzip", "none"])
    parser.add_argument("--level", type=int, default=None, help="compression level")
    args = parser.parse_args(argv)
    deb = build_deb(args.bundle, args.out, compression=args.compression, level=args.level)
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
