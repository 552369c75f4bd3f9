"""The five benchmarks of the studio's foundation, one table of ratios.

    QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 python -m tests.benchmarks.bench_foundation

1. start-up: `--smoke` time-to-window against a bare PySide6 window (goal ≤ 2);
2. responsiveness: worst and 99th-percentile gap of a 5 ms UI heartbeat while
   images render (goals 50 ms and 17 ms, shown as measured / goal ≤ 1);
3. overhead: a studio job against a bare `pipe(...)` call (goal ≤ 1.05);
4. previews at every step against none (goal ≤ 1.03);
5. cancel latency against one step's time (goal ≤ 1).
Each comparison is measured side by side in this one run; see the modules
bench_startup, bench_responsiveness and bench_overhead for what each times.
"""

from __future__ import annotations

import argparse
import os
import platform

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        if names:
            cpu = f"{names[0]} ({len(names)} logical CPUs)"
    except OSError:
        pass
    gpu = "no CUDA GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f}"
    return f"{platform.system()} {platform.release()}, {cpu}, {gpu}, Python {platform.python_version()}{load}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="start-up runs of each side")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of each job comparison")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    from tests.benchmarks import bench_overhead, bench_responsiveness, bench_startup

    print(f"machine: {machine()}")
    rows = []
    startup_rows, startup_note = bench_startup.run(args.runs)
    rows += startup_rows
    ui_rows, ui_note = bench_responsiveness.run(args.steps, args.size, 3, args.threads)
    rows += ui_rows
    job_rows, job_note = bench_overhead.run(args.steps, args.size, args.repeats, args.threads)
    rows += job_rows
    print(f"start-up: {startup_note}")
    print(f"heartbeat: {ui_note}")
    print(f"jobs: {job_note}")
    bench_overhead.print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
