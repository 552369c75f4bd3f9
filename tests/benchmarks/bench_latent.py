"""Interactive-speed benchmark of the latent panes, through the real engine, bridge and panes.

    QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 python -m tests.benchmarks.bench_latent [--seconds 4]

Measures, in one run, side by side:
  * a synthetic drag of a GAN direction slider at 120 events/s: frames delivered to
    the UI per second (the pinned sample re-rendered), idle and while an image job runs;
  * a 16-frame VAE interpolation strip, from submit to the strip shown (median);
  * the UI heartbeat: worst gap between 5 ms timer ticks during each phase.
Uses the bundled models when present; otherwise random models of the same
architecture and size (said so in the table). Prints a table; not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EVENT_HZ = 120


def _bundled(name: str) -> Path | None:
    from studio.paths import models_dir

    p = models_dir() / name
    return p if (p / "config.json").is_file() or (p / "model_index.json").is_file() else None


def _gan(tmp: Path) -> tuple[str, str]:
    found = _bundled("shapes-gan")
    if found is not None:
        return str(found), "shapes-gan (bundled)"
    import torch
    from safetensors.torch import save_file

    from studio.training.gan_model import DEFAULT_CONFIG, build_generator

    folder = tmp / "gan"
    folder.mkdir()
    gen = build_generator(DEFAULT_CONFIG)
    torch.nn.init.normal_(next(gen.parameters()), std=0.05)
    (folder / "config.json").write_text(json.dumps(DEFAULT_CONFIG))
    save_file({k: v.contiguous() for k, v in gen.state_dict().items()}, str(folder / "model.safetensors"))
    return str(folder), "random DCGAN, bundled config (shapes-gan not built yet)"


def _vaes(tmp: Path) -> list[tuple[str, str]]:
    """The bundled VAEs, or a random 2-D VAE of the bundled config when none is built."""
    found = [(str(p), f"{name} (bundled)") for name in ("shapes-vae-2d", "shapes-vae") if (p := _bundled(name))]
    if found:
        return found
    import torch  # noqa: F401  (loaded before the module build below)
    from safetensors.torch import save_file

    from studio.training.vae2d_model import DEFAULT_CONFIG, build_vae2d

    folder = tmp / "vae"
    folder.mkdir()
    module = build_vae2d(DEFAULT_CONFIG)
    (folder / "config.json").write_text(json.dumps(DEFAULT_CONFIG))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(folder / "model.safetensors"))
    return [(str(folder), "random 2-D VAE, bundled config (no bundled VAE yet)")]


def _diffusion(tmp: Path) -> tuple[str, str]:
    found = _bundled("shapes-diffusion")
    if found is not None:
        return str(found), "shapes-diffusion (bundled), 64×64"
    from tests.core.tiny_pipeline import make_tiny_pipeline

    return str(make_tiny_pipeline(tmp / "tiny-sd")), "tiny random SD pipeline (shapes-diffusion not built yet)"


class Heartbeat:
    """A 5 ms timer on the UI thread; the worst gap between ticks is how long the UI froze."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.worst = 0.0

    def start(self) -> None:
        self.last = time.perf_counter()
        self.worst = 0.0
        self.timer.start()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last)
        self.last = now

    def stop(self) -> float:
        self.timer.stop()
        return self.worst * 1000


def _spin(app: Any, seconds: float, until: Any = None) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        if until is not None and until():
            return
        time.sleep(0.0005)


def drag(app: Any, pane: Any, seconds: float) -> dict[str, float]:
    """Move direction slider 0 back and forth at EVENT_HZ; count frames shown."""
    from PySide6.QtCore import QTimer

    shown: list[float] = []
    pane.editShown.connect(lambda _r: shown.append(time.perf_counter()))
    sent = [0]
    slider = pane.rows[0].slider

    def step() -> None:
        sent[0] += 1
        # A triangle wave over ±3 σ: every event is a new position.
        phase = (sent[0] % 240) / 240
        slider.setValue(round((abs(phase * 2 - 1) * 6 - 3), 2))

    timer = QTimer()
    timer.setTimerType(timer.timerType().PreciseTimer)
    timer.setInterval(round(1000 / EVENT_HZ))
    timer.timeout.connect(step)
    beat = Heartbeat()
    _spin(app, 0.3)
    beat.start()
    start = time.perf_counter()
    timer.start()
    _spin(app, seconds)
    timer.stop()
    elapsed = time.perf_counter() - start
    gap = beat.stop()
    _spin(app, 0.3)
    pane.editShown.disconnect()
    delivered = [t for t in shown if t <= start + elapsed]
    return {"events_per_s": sent[0] / elapsed, "frames_per_s": len(delivered) / elapsed, "worst_gap_ms": gap}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each drag")
    parser.add_argument("--strips", type=int, default=10, help="VAE strips to time")
    parser.add_argument("--image-model", default="", help="diffusers pipeline for the image job (default: shapes-diffusion)")
    args = parser.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from studio.core.engine import Engine
    from studio.core.jobs import GanDirections, TextToImage, VaeInterpolate
    from studio.core.settings import Settings
    from studio.ui.bridge import Bridge
    from studio.ui.panes.gan import GanPane
    from studio.ui.panes.vae import VaePane

    app = QApplication.instance() or QApplication(sys.argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-latent-"))
    gan_path, gan_label = _gan(tmp)
    vaes = _vaes(tmp)
    sd_path, sd_label = (args.image_model, f"{args.image_model}, 64×64") if args.image_model else _diffusion(tmp)
    settings = Settings(outputs_dir=str(tmp / "outputs"), scan_hf_cache=False, device="cpu")
    engine = Engine(device="cpu", options=settings.engine_options())
    bridge = Bridge(engine)
    engine.start()
    engine.wait_ready(60)
    rows: list[tuple[str, str, str]] = []

    # ---- GAN: pin a sample, give it directions, drag ---------------------------------
    pane = GanPane(bridge, settings)
    pane.resize(1200, 800)
    pane.show()
    pane.picker.add_path(gan_path)
    _spin(app, 60, lambda: pane.page is not None)
    directions = engine.run(GanDirections(model=gan_path, source="activations", count=4, samples=500))
    pane._set_directions(directions)
    pane.pin(3)
    _spin(app, 10, lambda: pane.edited is not None)
    from studio.core.engine import run_on_thread

    default_threads = run_on_thread(engine, lambda ctx: __import__("torch").get_num_threads())
    results: dict[int, dict[str, Any]] = {}
    for threads in dict.fromkeys((default_threads, 1)):
        # Intra-op threads of the inference thread for everything it runs (the image
        # job included); the small GAN itself always runs on one (latent.threads_for).
        run_on_thread(engine, lambda ctx, n=threads: __import__("torch").set_num_threads(n))
        idle = drag(app, pane, args.seconds)

        # The same drag while an image renders on the batch lane.
        size = 64 if "64×64" in sd_label else 32
        image_job = TextToImage(model=sd_path, prompt="a red circle", steps=1000, width=size, height=size, seed=1)
        step_times: list[float] = []

        def on_progress(jid: str, s: int, t: int, p: Any, job: Any = image_job, log: list = step_times) -> None:
            if jid == job.job_id:
                log.append(time.perf_counter())

        bridge.progress.connect(on_progress)
        handle = engine.submit(image_job)
        _spin(app, 120, lambda log=step_times: len(log) >= 3)
        t0 = time.perf_counter()
        busy = drag(app, pane, args.seconds)
        t1 = time.perf_counter()
        bridge.progress.disconnect(on_progress)
        during = [t for t in step_times if t0 <= t <= t1]
        busy["steps_per_s"] = len(during) / (t1 - t0)
        engine.cancel_running()
        handle.wait(120)
        _spin(app, 0.5)
        results[threads] = {"idle": idle, "busy": busy}
    run_on_thread(engine, lambda ctx: __import__("torch").set_num_threads(default_threads))

    # ---- VAE: 16-frame strip, submit → shown --------------------------------------------
    vae_pane = VaePane(bridge, settings)
    vae_pane.show()
    strips: list[tuple[str, list[float], float, float]] = []
    for vae_path, vae_label in vaes:
        vae_pane.prior = None
        vae_pane.picker.add_path(vae_path)
        _spin(app, 60, lambda: vae_pane.prior is not None)
        times: list[float] = []
        beat = Heartbeat()
        beat.start()
        for i in range(args.strips + 1):
            done: list[float] = []
            vae_pane.stripShown.connect(lambda _r, d=done: d.append(time.perf_counter()))
            t0 = time.perf_counter()
            job = VaeInterpolate(model=vae_path, a=f"prior:{i}", b=f"prior:{i + 100}", steps=16, mode="slerp")
            vae_pane._track(bridge.submit(job), "strip")
            _spin(app, 30, lambda d=done: bool(d))
            vae_pane.stripShown.disconnect()
            if i:
                times.append((done[0] - t0) * 1000)
            else:
                # The first strip loads the model (and imports diffusers, which holds
                # the GIL for a while): timed apart, as the one-off it is.
                load_gap = beat.stop()
                beat.start()
        strips.append((vae_label, times, beat.stop(), load_gap))

    engine.stop()
    bridge.close()

    for threads, r in results.items():
        idle, busy = r["idle"], r["busy"]
        tag = f"[{threads} thread{'s' if threads != 1 else ''}]"
        rows.append((f"{tag} drag GAN direction slider, idle", f"{idle['frames_per_s']:.1f} frames/s of {idle['events_per_s']:.0f} events/s",
                     f"goal ≥ 60 → {'met' if idle['frames_per_s'] >= 60 else 'missed'}"))
        rows.append(("  UI heartbeat worst gap", f"{idle['worst_gap_ms']:.1f} ms", f"goal ≤ 50 → {'met' if idle['worst_gap_ms'] <= 50 else 'missed'}"))
        rows.append((f"{tag} same drag while an image job runs", f"{busy['frames_per_s']:.1f} frames/s of {busy['events_per_s']:.0f} events/s",
                     f"goal ≥ 30 → {'met' if busy['frames_per_s'] >= 30 else 'missed'}"))
        rows.append(("  image job meanwhile", f"{busy['steps_per_s']:.1f} steps/s", "the lane is served between steps"))
        rows.append(("  UI heartbeat worst gap", f"{busy['worst_gap_ms']:.1f} ms", f"goal ≤ 50 → {'met' if busy['worst_gap_ms'] <= 50 else 'missed'}"))
        rows.append(("  busy / idle frame-rate ratio", f"{busy['frames_per_s'] / max(idle['frames_per_s'], 1e-9):.2f}", ""))
    for label, times, gap, load_gap in strips:
        med = statistics.median(times)
        rows.append((f"VAE 16-frame slerp strip, submit → shown: {label.split(' ')[0]}", f"median {med:.1f} ms, max {max(times):.1f} ms",
                     f"goal ≤ 50 → {'met' if med <= 50 else 'missed'}"))
        rows.append(("  UI heartbeat worst gap", f"{gap:.1f} ms", f"goal ≤ 50 → {'met' if gap <= 50 else 'missed'}"))
        rows.append(("  UI heartbeat worst gap, loading the model", f"{load_gap:.1f} ms", "once per model"))

    import torch

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")
    print(f"GAN: {gan_label}\nVAE: {', '.join(label for _, label in vaes)}\nImage job: {sd_label}\n")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure'.ljust(width)}  {'value'.ljust(vwidth)}  verdict")
    print(f"{'-' * width}  {'-' * vwidth}  {'-' * 20}")
    for name, value, verdict in rows:
        print(f"{name.ljust(width)}  {value.ljust(vwidth)}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
