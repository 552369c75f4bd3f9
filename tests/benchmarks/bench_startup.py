"""Start-up: `latent-studio --smoke` time-to-window against a bare PySide6 window.

    HF_HUB_OFFLINE=1 python -m tests.benchmarks.bench_startup [--runs 5]

Both are fresh processes, run alternately in the same session, each timing itself
from its own process creation (as the OS counts it) to its window shown and
painted. The bare window is a QMainWindow with one label: the least a Qt app
shows. The studio also reports when its engine was ready (torch imported, device
chosen, model list loaded), which the window does not wait for. Goal: ratio ≤ 2.
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

from tests.benchmarks.bench_overhead import Row, print_table

BARE_WINDOW = """
import os, time
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow
app = QApplication([])
window = QMainWindow()
window.setCentralWidget(QLabel("Hello"))
window.resize(1200, 800)
window.show()
app.processEvents()
with open("/proc/self/stat") as fh:
    start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
with open("/proc/uptime") as fh:
    uptime = float(fh.read().split()[0])
print(uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
"""


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["LATENT_STUDIO_CONFIG_DIR"] = str(tmp / "config")
    env["LATENT_STUDIO_DATA_DIR"] = str(tmp / "data")
    env["LATENT_STUDIO_NO_DIALOGS"] = "1"
    return env


def bare_window_s(env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", BARE_WINDOW], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def studio_smoke(env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "studio", "--smoke"], env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"--smoke failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(runs: int = 5) -> tuple[list[Row], str]:
    if not Path("/proc/self/stat").exists():
        raise SystemExit("bench_startup times processes from /proc (Linux only)")
    env = _env(Path(tempfile.mkdtemp(prefix="bench-startup-")))
    bare_window_s(env)  # warm the OS file cache for both sides
    studio_smoke(env)
    bare, shown, ready = [], [], []
    for _ in range(runs):
        bare.append(bare_window_s(env))
        smoke = studio_smoke(env)
        shown.append(smoke["window_shown_s"])
        ready.append(smoke["engine_ready_s"])
    b, s, r = statistics.median(bare), statistics.median(shown), statistics.median(ready)
    rows = [
        Row(1, "start-up: studio window / bare", f"{s * 1000:.0f} ms", f"{b * 1000:.0f} ms", s / b, 2.0,
            f"engine ready (torch loaded, models listed): {r * 1000:.0f} ms after process start"),
    ]
    return rows, f"median of {runs} runs each, alternating, QT_QPA_PLATFORM={env['QT_QPA_PLATFORM']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    rows, header = run(args.runs)
    print_table(rows, header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
