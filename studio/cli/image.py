"""`generate`, `models` and `info`: text-to-image from the command line.

Numbers are parsed here rather than by argparse, so a bad value gets the same
one-line message the window shows instead of a usage dump.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from studio.core.errors import UserError
from studio.core.settings import Settings, load_settings


def register(sub: Any) -> None:
    gen = sub.add_parser("generate", help="text to image, saved as PNG with its parameters")
    gen.add_argument("--model", default=None, help="model name (see `models`) or folder")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--negative", default="", help="negative prompt")
    gen.add_argument("--cfg", default="7.5", help="guidance (CFG) scale, default 7.5")
    gen.add_argument(
        "--guidance",
        default=None,
        help="cfg (classifier-free guidance), fdg (frequency-decoupled) or apg (adaptive "
        f"projected); default: the Image pane's choice, {Settings.guidance_method} unless changed",
    )
    gen.add_argument("--steps", default="30", help="denoising steps, default 30")
    gen.add_argument(
        "--scheduler",
        default="euler",
        help="ddim, ddpm, euler, euler_a, dpmpp_2m or lcm (A1111 names work too)",
    )
    gen.add_argument("--seed", default="-1", help="seed; -1 (default) picks one at random")
    gen.add_argument("--width", default="64")
    gen.add_argument("--height", default="64")
    gen.add_argument("--batch-size", default="1")
    gen.add_argument("-o", "--output", default=None, help="also write the image(s) here")
    gen.add_argument("--outputs-dir", default=None, help="gallery folder (default: settings)")
    gen.add_argument("--device", default=None, help="auto, cuda, mps or cpu")
    gen.add_argument("--quiet", action="store_true", help="no progress on stderr")
    gen.set_defaults(func=cmd_generate)

    models = sub.add_parser("models", help="list the models found (offline)")
    models.add_argument("--kind", default=None, help="only this kind, e.g. diffusers-pipeline")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    info = sub.add_parser("info", help="print the generation parameters stored in a PNG")
    info.add_argument("file")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)


def _int(value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise UserError(f"{what} must be a whole number, not {value!r}.") from None


def _float(value: str, what: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise UserError(f"{what} must be a number, not {value!r}.") from None
    if not math.isfinite(number):
        raise UserError(f"{what} must be a finite number, not {value!r}.")
    return number


def _output_paths(output: str, count: int) -> list[Path]:
    base = Path(output).expanduser()
    if base.suffix.lower() != ".png":
        base = base.with_suffix(base.suffix + ".png") if base.suffix else base.with_suffix(".png")
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i + 1}{base.suffix}") for i in range(count)]


def cmd_generate(args: argparse.Namespace) -> int:
    from studio.core.jobs import Progress, TextToImage

    # The libraries' import-time chatter (optional backends missing) is not the user's concern.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = load_settings()
    job = TextToImage(
        prompt=args.prompt,
        negative_prompt=args.negative,
        guidance_scale=_float(args.cfg, "The CFG scale"),
        guidance_method=args.guidance or settings.guidance_method,
        steps=_int(args.steps, "Steps"),
        scheduler=args.scheduler,
        seed=_int(args.seed, "The seed"),
        width=_int(args.width, "The width"),
        height=_int(args.height, "The height"),
        batch_size=_int(args.batch_size, "The batch size"),
        model=args.model or settings.default_model,
    )
    from studio.core.diffusion import validate_request

    validate_request(job)
    options = settings.engine_options()
    if args.outputs_dir:
        options["outputs_dir"] = str(Path(args.outputs_dir).expanduser())

    from studio.core.engine import Engine

    engine = Engine(device=args.device or settings.device, options=options)

    shown = []

    def show(event: Any) -> None:
        if isinstance(event, Progress) and event.total:
            shown.append(event.step)
            print(f"\rstep {event.step}/{event.total}", end="", file=sys.stderr, flush=True)

    if not args.quiet:
        engine.subscribe(show)
    engine.start()
    try:
        handle = engine.submit(job)
        try:
            result = handle.result()
        except KeyboardInterrupt:
            engine.cancel_running()
            handle.wait(30)
            raise
        finally:
            if shown:
                print(file=sys.stderr)
    finally:
        engine.stop()

    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    paths = list(result.paths)
    if args.output:
        from studio.core.gallery import atomic_write_bytes, write_error

        written = []
        for src, dest in zip(paths, _output_paths(args.output, len(paths)), strict=True):
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dest, src.read_bytes())
            except OSError as exc:
                raise write_error(exc, dest.parent) from exc
            written.append(dest)
        paths = written
    for path, seed in zip(paths, result.seeds, strict=True):
        print(f"{path}\tseed {seed}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from studio.core.registry import KINDS, discover

    if args.kind and args.kind not in KINDS:
        raise UserError(f"Unknown kind {args.kind!r}: choose one of {', '.join(KINDS)}.")
    entries = discover(load_settings(), kinds=[args.kind] if args.kind else None)
    if args.json:
        print(
            json.dumps(
                [
                    {"name": e.name, "kind": e.kind, "source": e.source, "path": str(e.path)}
                    for e in entries
                ],
                indent=2,
            )
        )
        return 0
    if not entries:
        print("No models found.", file=sys.stderr)
        return 0
    width = max(len(e.name) for e in entries)
    kind_width = max(len(e.kind) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.kind:<{kind_width}}  {e.source:<8}  {e.path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from studio.core.metadata import (
        PARAMETERS_KEY,
        parse_parameters,
        read_png_request,
        read_png_text,
    )

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"No such file: {path}")
    text = read_png_text(path).get(PARAMETERS_KEY)
    request = read_png_request(path)
    if not text and request is None:
        raise UserError(f"{path.name} carries no generation parameters.")
    params = parse_parameters(text) if text else {}
    if args.json:
        print(json.dumps({"parameters": params, "request": request}, indent=2, ensure_ascii=False))
        return 0
    if params:
        print(f"Prompt: {params.get('Prompt', '')}")
        if params.get("Negative prompt"):
            print(f"Negative prompt: {params['Negative prompt']}")
        for key, value in params.items():
            if key in ("Prompt", "Negative prompt") or key.endswith("-2"):
                continue
            if key.endswith("-1") and key[:-2] + "-2" in params:
                print(f"{key[:-2]}: {value}x{params[key[:-2] + '-2']}")
                continue
            print(f"{key}: {value}")
    else:
        for key, value in request.items():
            print(f"{key}: {value}")
    return 0
