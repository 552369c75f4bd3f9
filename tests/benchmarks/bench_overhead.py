"""Cost of the studio around a generation: job vs bare `pipe(...)`, previews, cancel latency.

    HF_HUB_OFFLINE=1 python -m tests.benchmarks.bench_overhead [--steps 30] [--repeats 5]

All three are measured in one process, on the inference thread, alternating the
two sides of each comparison so that a noisy machine affects both alike:
  * overhead: a TextToImage job from submit to its Finished event (load cached,
    preview at every step, PNG written atomically and indexed) against a bare
    `pipe(...)` call on its own copy of the same pipeline, same scheduler, steps,
    size and seed;
  * previews: the same job with a preview at every step against none;
  * cancel latency: from `cancel_running()` to the job's Cancelled event, against
    the median time of one denoising step.
Uses the pipeline folder in $BENCH_MODEL, else models/shapes-diffusion when present,
else a tiny random pipeline (said so in the table).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Row:
    number: int
    name: str
    measured: str
    baseline: str
    ratio: float
    goal: float
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.ratio <= self.goal


def print_table(rows: list[Row], header: str = "") -> None:
    if header:
        print(header)
    print(f"{'#':>2}  {'benchmark':<34} {'measured':>18} {'baseline':>18} {'ratio':>7} {'goal':>7}  ok")
    for r in rows:
        print(
            f"{r.number:>2}  {r.name:<34} {r.measured:>18} {r.baseline:>18} "
            f"{r.ratio:>7.3f} {'≤ ' + format(r.goal, 'g'):>7}  {'yes' if r.ok else 'NO'}"
        )
        if r.note:
            print(f"    {r.note}")


def text_to_image_model(tmp: Path) -> tuple[Path, str]:
    """BENCH_MODEL (a pipeline folder), else the bundled text-to-image model, else a
    tiny random pipeline built in `tmp`."""
    from studio.paths import models_dir

    chosen = os.environ.get("BENCH_MODEL")
    if chosen:
        return Path(chosen), f"{Path(chosen).name} ({chosen})"
    bundled = models_dir() / "shapes-diffusion"
    if (bundled / "model_index.json").is_file():
        return bundled, "shapes-diffusion (bundled)"
    from tests.core.tiny_pipeline import make_tiny_pipeline

    return make_tiny_pipeline(tmp / "tiny-sd"), "tiny random SD pipeline (shapes-diffusion not built yet)"


def start_engine(outputs: Path, threads: int) -> Any:
    from studio.core.engine import Engine, run_on_thread

    engine = Engine(device=os.environ.get("BENCH_DEVICE", "auto"), options={"outputs_dir": str(outputs)})
    engine.start()
    engine.wait_ready(300)
    if threads > 0:
        run_on_thread(engine, lambda ctx: __import__("torch").set_num_threads(threads))
    return engine


def _job(model: Path, steps: int, size: int, seed: int) -> Any:
    from studio.core.jobs import TextToImage

    return TextToImage(
        prompt="a red circle on the left, blue background",
        negative_prompt="blurry",
        steps=steps,
        width=size,
        height=size,
        seed=seed,
        scheduler="euler",
        guidance_scale=7.5,
        model=str(model),
    )


def studio_seconds(engine: Any, job: Any) -> float:
    start = time.perf_counter()
    engine.submit(job).result(600)
    return time.perf_counter() - start


def bare_seconds(engine: Any, model: Path, job: Any, cache: dict[str, Any]) -> float:
    from studio.core.engine import run_on_thread

    def fn(ctx: Any) -> float:
        import torch
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

        pipe = cache.get("pipe")
        if pipe is None:
            pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, dtype=ctx.dtype)
            pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
            pipe = pipe.to(ctx.device)
            pipe.set_progress_bar_config(disable=True)
            cache["pipe"] = pipe
        generator = [torch.Generator("cpu").manual_seed(job.seed)]
        start = time.perf_counter()
        with torch.inference_mode():
            pipe(
                prompt=job.prompt,
                negative_prompt=job.negative_prompt,
                num_inference_steps=job.steps,
                guidance_scale=job.guidance_scale,
                width=job.width,
                height=job.height,
                generator=generator,
                output_type="pil",
            )
        return time.perf_counter() - start

    return run_on_thread(engine, fn)


def cancel_latency(
    engine: Any, model: Path, size: int, rng: random.Random, after_steps: int = 5
) -> tuple[float, float]:
    """(seconds from cancel to Cancelled, median seconds of one step) for one job."""
    from studio.core.jobs import Cancelled, Progress

    job = _job(model, 1000, size, 1)
    stamps: list[float] = []
    ended: list[float] = []
    reached = threading.Event()

    def listen(event: Any) -> None:
        if event.job_id != job.job_id:
            return
        if isinstance(event, Progress) and event.step > 0:
            stamps.append(time.perf_counter())
            if event.step >= after_steps:
                reached.set()
        elif isinstance(event, Cancelled):
            ended.append(time.perf_counter())

    unsubscribe = engine.subscribe(listen)
    try:
        handle = engine.submit(job)
        assert reached.wait(600)
        # A person presses Cancel at no particular point of a step.
        so_far = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        time.sleep(rng.uniform(0, statistics.median(so_far)))
        asked = time.perf_counter()
        engine.cancel_running()
        handle.wait(600)
    finally:
        unsubscribe()
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return ended[0] - asked, statistics.median(steps)


def run(steps: int = 30, size: int = 64, repeats: int = 5, threads: int = 1) -> tuple[list[Row], str]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    model, label = text_to_image_model(tmp)
    engine = start_engine(tmp / "outputs", threads)
    try:
        cache: dict[str, Any] = {}
        job = _job(model, steps, size, 1)
        studio_seconds(engine, job)  # load + warm up both sides
        bare_seconds(engine, model, job, cache)
        studio, bare = [], []
        for _ in range(repeats):
            studio.append(studio_seconds(engine, _job(model, steps, size, 1)))
            bare.append(bare_seconds(engine, model, job, cache))
        cache.clear()

        with_previews, without = [], []
        for _ in range(repeats):
            engine.options["previews"] = True
            with_previews.append(studio_seconds(engine, _job(model, steps, size, 1)))
            engine.options["previews"] = False
            without.append(studio_seconds(engine, _job(model, steps, size, 1)))
        engine.options["previews"] = True

        latencies, step_times = [], []
        rng = random.Random(0)
        for _ in range(max(repeats, 10)):
            latency, step = cancel_latency(engine, model, size, rng)
            latencies.append(latency)
            step_times.append(step)
    finally:
        engine.stop()

    s, b = statistics.median(studio), statistics.median(bare)
    p, n = statistics.median(with_previews), statistics.median(without)
    lat, st = statistics.median(latencies), statistics.median(step_times)
    rows = [
        Row(3, "overhead: studio job / bare pipe()", f"{s * 1000:.0f} ms", f"{b * 1000:.0f} ms", s / b, 1.05,
            "job: submit → Finished, incl. previews and the atomic PNG save"),
        Row(4, "previews every step / none", f"{p * 1000:.0f} ms", f"{n * 1000:.0f} ms", p / n, 1.03),
        Row(5, "cancel latency / one step", f"{lat * 1000:.1f} ms", f"{st * 1000:.1f} ms", lat / st, 1.0,
            f"median of {len(latencies)} cancels at random points of a step; worst "
            f"{max(a / b for a, b in zip(latencies, step_times, strict=True)):.2f} steps"),
    ]
    return rows, f"model: {label}; {steps} steps, {size}×{size}, median of {repeats}, torch threads: {threads or 'default'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    rows, header = run(args.steps, args.size, args.repeats, args.threads)
    print_table(rows, header)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
