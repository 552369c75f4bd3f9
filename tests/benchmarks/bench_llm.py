"""Streaming benchmark of the Prompt pane, through the real pane, bridge and engine.

    QT_QPA_PLATFORM=offscreen HF_HUB_OFFLINE=1 python -m tests.benchmarks.bench_llm [--runs 6]

For each model, in one process and interleaved run by run (bare, pane, bare, ...):
  * tokens/s of the pane's path (PromptPane.send → ChatRequest on the inference
    thread → Token events → Qt signals → the chat view, until the reply is shown)
    against a bare `model.generate` on the same prompt ids, settings and seed;
  * time to first token: send → first token on the UI thread, against
    generate() → first new token in a bare streamer; the difference is the overhead;
  * the UI heartbeat: worst gap between 5 ms timer ticks while the pane streams.
Models: the bundled prompt-writer (short replies, 128-token context) and a
random GPT-2 of 6 layers × 512 wide, whose replies run to the token limit.
Prints a table; not part of the tests.
"""

from __future__ import annotations

import argparse
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

PROMPT = "a castle on a hill"


def _models(tmp: Path, which: str) -> list[tuple[str, str, int, int]]:
    """(folder, description, max new tokens, runs multiplier)."""
    from studio.paths import models_dir
    from tests.core.tiny_llm import build_tiny_lm

    found = []
    writer = models_dir() / "prompt-writer"
    if which in ("all", "prompt-writer") and (writer / "config.json").is_file():
        # Its replies take ~50 ms: many more pairs are needed for a stable median.
        found.append((str(writer), "prompt-writer (bundled, 4×160)", 100, 5))
    if which in ("all", "random"):
        folder = build_tiny_lm(tmp / "gpt2-6x512", "gpt2", chat_template=True, context=1024, hidden=512, layers=6)
        found.append((str(folder), "random GPT-2 6×512", 128, 1))
    return found


class Heartbeat:
    """Worst gap between ticks of a 5 ms timer on the UI thread."""

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)
        self.last = 0.0
        self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last:
            self.worst = max(self.worst, now - self.last)
        self.last = now

    def start(self) -> None:
        self.last = 0.0
        self.worst = 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return self.worst


def _bare(lm: Any, ids: list[int], decoding: Any, max_new: int) -> tuple[float, float, float, int]:
    """(seconds, ttft, last token time, new tokens) of a bare generate on the same settings.

    The streamer only notes the time of the first and last new token (a few
    microseconds per token), so the run is `model.generate` and nothing else.
    """
    import torch

    from studio.core.llm import _generation_config

    config = _generation_config(lm, decoding, max_new)
    input_ids = torch.tensor([ids])

    class Clock:
        def __init__(self) -> None:
            self.calls = 0
            self.first = 0.0
            self.last = 0.0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:  # the first call is the prompt
                self.first = time.perf_counter()
            self.last = time.perf_counter()

        def end(self) -> None:
            pass

    clock = Clock()
    torch.manual_seed(decoding.seed)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = lm.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            streamer=clock,
        )
    seconds = time.perf_counter() - t0
    return seconds, clock.first - t0, clock.last - t0, out.shape[1] - len(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--models", default="all", choices=["all", "prompt-writer", "random"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the same for both paths)")
    args = parser.parse_args(argv)

    import torch
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    torch.set_num_threads(args.threads)
    app = QApplication.instance() or QApplication(sys.argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-llm-"))
    os.environ["LATENT_STUDIO_CONFIG_DIR"] = str(tmp / "config")
    os.environ["LATENT_STUDIO_DATA_DIR"] = str(tmp / "data")

    from studio.core.engine import Engine, run_on_thread
    from studio.core.jobs import Decoding
    from studio.core.llm import build_prompt, load_llm
    from studio.core.settings import Settings
    from studio.ui.bridge import Bridge
    from studio.ui.panes.prompt import PromptPane

    settings = Settings(scan_hf_cache=False, device="cpu")
    engine = Engine(device="cpu", options=settings.engine_options())
    bridge = Bridge(engine)
    engine.start()
    engine.wait_ready(60)
    pane = PromptPane(bridge, settings)
    pane.resize(1100, 700)
    pane.show()
    heartbeat = Heartbeat()
    rows = []

    def pane_run(decoding: Decoding, beat: bool) -> tuple[float, float, float, int, float]:
        """(seconds, ttft, last token, tokens, worst heartbeat gap from first token to reply shown)."""
        pane.new_conversation()
        pane.set_decoding(decoding)
        loop = QEventLoop()
        got: dict[str, Any] = {}

        def first(_text: str) -> None:
            got["last"] = time.perf_counter()
            if "first" not in got:
                got["first"] = got["last"]
                heartbeat.worst = 0.0

        def done(result: Any) -> None:
            got["end"] = time.perf_counter()
            got["gap"] = heartbeat.worst
            got["result"] = result
            loop.quit()

        def failed(message: str) -> None:
            got["error"] = message
            loop.quit()

        pane.replyToken.connect(first)
        pane.replyFinished.connect(done)
        pane.replyFailed.connect(failed)
        QTimer.singleShot(120_000, loop.quit)
        if beat:
            heartbeat.start()
        t0 = time.perf_counter()
        pane.send(PROMPT)
        loop.exec()
        heartbeat.stop()
        for signal, slot in ((pane.replyToken, first), (pane.replyFinished, done), (pane.replyFailed, failed)):
            signal.disconnect(slot)
        if "error" in got or "result" not in got:
            raise SystemExit(f"pane run failed: {got.get('error', 'timeout')}")
        first_at = got.get("first", got["end"])
        return (
            got["end"] - t0, first_at - t0, got.get("last", first_at) - t0, got["result"].new_tokens, got["gap"]
        )

    def idle_gap(seconds: float) -> float:
        loop = QEventLoop()
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        heartbeat.start()
        loop.exec()
        return heartbeat.stop()

    def decoding_for(seed: int, max_new: int) -> Decoding:
        # Sampling at temperature 1 with a fixed seed: both paths draw the same tokens.
        return Decoding(
            method="sample", seed=seed, max_new_tokens=max_new,
            temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0,
        )

    for folder, label, max_new, multiplier in _models(tmp, args.models):
        pane.select_model(folder)
        lm = run_on_thread(engine, lambda ctx, f=folder: load_llm(ctx, f))
        ids = build_prompt(lm, "", [("user", PROMPT)], max_new).ids

        def bare(decoding: Decoding, lm: Any = lm, ids: list[int] = ids, max_new: int = max_new) -> Any:
            # On the inference thread too, so both paths run on the same thread.
            return run_on_thread(engine, lambda ctx: _bare(lm, ids, decoding, max_new))

        bare_tps, pane_tps, bare_ttft, pane_ttft, gaps, counts = [], [], [], [], [], []
        bare_decode, pane_decode = [], []
        bare(decoding_for(0, max_new))  # warm-up: first allocations, template compile
        pane_run(decoding_for(0, max_new), beat=False)
        # Phase 1, interleaved: speed and time to first token, with no timer
        # ticking, since a 5 ms Python timer competes for the GIL itself.
        for i in range(args.runs * multiplier):
            decoding = decoding_for(100 + i, max_new)
            # Alternate which path goes first, so neither always follows the other.
            if i % 2:
                p_seconds, p_ttft, p_last, p_n, _ = pane_run(decoding, beat=False)
                seconds, ttft, last, n = bare(decoding)
            else:
                seconds, ttft, last, n = bare(decoding)
                p_seconds, p_ttft, p_last, p_n, _ = pane_run(decoding, beat=False)
            if p_n != n:
                raise SystemExit(f"paths disagree: {n} bare tokens, {p_n} through the pane (seed {decoding.seed})")
            bare_tps.append(n / seconds)
            pane_tps.append(p_n / p_seconds)
            bare_ttft.append(ttft)
            pane_ttft.append(p_ttft)
            if n >= 32:
                # Streaming rate: tokens after the first over the time they took. Short
                # replies are left out: their few tokens reach the UI in one burst.
                bare_decode.append((n - 1) / (last - ttft))
                pane_decode.append((p_n - 1) / (p_last - p_ttft))
            counts.append(n)
        # Phase 2: the heartbeat while the pane streams, and with nothing running.
        streaming = 0.0
        for i in range(max(2, args.runs * multiplier // 2)):
            seconds, _, _, _, gap = pane_run(decoding_for(200 + i, max_new), beat=True)
            gaps.append(gap)
            streaming += seconds
        idle = idle_gap(min(streaming, 10.0))
        rows.append(
            (
                label,
                statistics.median(counts),
                statistics.median(bare_tps),
                statistics.median(pane_tps),
                statistics.median(p / b for p, b in zip(pane_tps, bare_tps, strict=True)),
                statistics.median(p / b for p, b in zip(pane_decode, bare_decode, strict=True))
                if bare_decode
                else float("nan"),
                statistics.median(bare_ttft) * 1000,
                statistics.median(pane_ttft) * 1000,
                statistics.median(p - b for p, b in zip(pane_ttft, bare_ttft, strict=True)) * 1000,
                max(gaps) * 1000,
                statistics.median(gaps) * 1000,
                idle * 1000,
            )
        )

    pane.close()
    bridge.close()
    engine.stop()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores (load average {load:.1f}), "
        f"torch {torch.__version__}, {args.threads} torch thread(s), Python {platform.python_version()}; "
        f"{args.runs} interleaved run pairs per model (x5 for prompt-writer)"
    )
    head = (
        f"{'model':32} {'tokens':>6} {'bare tok/s':>10} {'pane tok/s':>10} {'ratio':>6} {'stream':>6} "
        f"{'bare TTFT':>9} {'pane TTFT':>9} {'overhead':>8} {'UI gap worst/median':>19} {'idle gap':>8}"
    )
    print(head)
    print("-" * len(head))
    for label, n, b, p, r, rs, bt, pt, ov, gap, gap_median, idle in rows:
        stream = f"{rs:6.3f}" if rs == rs else f"{'—':>6}"
        print(
            f"{label:32} {n:6.0f} {b:10.1f} {p:10.1f} {r:6.3f} {stream} {bt:7.1f}ms {pt:7.1f}ms {ov:6.1f}ms "
            f"{gap:9.1f} / {gap_median:5.1f}ms {idle:6.1f}ms"
        )
    print(
        "tok/s: send to reply shown (pane) and the generate call (bare); ratio: pane/bare of those; "
        "stream: the same ratio for the rate after the first token.\n"
        "ratio, stream and overhead: medians of per-run pairs. UI gap: worst (and median run's worst) gap "
        "between 5 ms ticks while streaming; idle gap: the same with nothing running."
    )
    print("goals: ratio >= 0.95, TTFT overhead <= 30 ms, UI worst gap while streaming <= 50 ms")
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
