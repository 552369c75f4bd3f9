"""Cost of the guidance rules: FDG and APG against the pipeline's own CFG.

    HF_HUB_OFFLINE=1 python -m tests.benchmarks.bench_guidance [--steps 30] [--repeats 7] [--batch 4]

One process, one pipeline, the same prompt, seeds, scheduler (Euler) and steps for
each rule; the rules alternate within every repeat so that a noisy machine affects
them alike, and the table gives each rule's median time per image over CFG's.
Uses the pipeline folder in $BENCH_MODEL, else models/shapes-diffusion.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GOAL = 1.05  # a rule may cost at most 5% over CFG per image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)

    import torch
    from diffusers import StableDiffusionPipeline

    from studio.core.diffusion import scheduler_from_config
    from studio.core.guidance import GUIDANCE_METHODS, guidance_rule

    torch.set_num_threads(1)
    folder = Path(os.environ.get("BENCH_MODEL") or Path(__file__).parents[2] / "models" / "shapes-diffusion")
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = scheduler_from_config("euler", pipe.scheduler.config)

    def one(rule: str) -> float:
        gens = [torch.Generator().manual_seed(i) for i in range(args.batch)]
        started = time.perf_counter()
        with torch.inference_mode(), guidance_rule(pipe, rule):
            pipe(["a black star"] * args.batch, negative_prompt=["red, blue"] * args.batch,
                 guidance_scale=7.5, num_inference_steps=args.steps, generator=gens,
                 output_type="np")
        return (time.perf_counter() - started) / args.batch

    one("cfg")  # warm-up
    times: dict[str, list[float]] = {k: [] for k in GUIDANCE_METHODS}
    for _ in range(args.repeats):
        for rule in times:
            times[rule].append(one(rule))
    base = statistics.median(times["cfg"])
    print(f"{folder.name}, Euler {args.steps} steps, batch {args.batch}, guidance 7.5, "
          f"one thread, median of {args.repeats}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'rule':<6} {'s/image':>9} {'vs CFG':>8} {'goal':>7}  ok")
    for rule, values in times.items():
        ratio = statistics.median(values) / base
        ok = rule == "cfg" or ratio <= GOAL
        print(f"{GUIDANCE_METHODS[rule]:<6} {statistics.median(values):>9.4f} {ratio:>8.3f} "
              f"{'≤ ' + format(GOAL, 'g'):>7}  {'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
