"""``python -m studio.training MODEL [--steps N] [--batch-size B] [--device cpu|cuda]
[--out DIR] [--resume]`` — reproduce a bundled model from scratch.

Each model has a trainer module with ``train(args)``; optional module attributes
``DEFAULT_STEPS`` and ``DEFAULT_BATCH_SIZE`` fill in options left out, and an
optional ``add_arguments(parser)`` adds model-specific options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from studio.training.common import TrainError, check_args

# model name -> trainer module (in studio.training)
TRAINERS: dict[str, str] = {
    "shapes-diffusion": "train_diffusion",
    "shapes-vae": "train_vae",
    "shapes-vae-2d": "train_vae",
    "shapes-gan": "train_gan",
    "prompt-writer": "train_prompt_writer",
}


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m studio.training",
        description="Train a bundled shapes-world model from scratch.",
        add_help=add_help,
    )
    parser.add_argument("model", nargs=None if add_help else "?",
                        help="one of: " + ", ".join(TRAINERS))
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps")
    parser.add_argument("--batch-size", type=int, default=None, help="images/texts per step")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--out", default=None, help="output folder (default: models/MODEL)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in the output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed for init and data")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    return parser


def load_trainer(model: str):
    """Import the trainer module for ``model``; ``TrainError`` if unknown or missing."""
    if model not in TRAINERS:
        raise TrainError(f"unknown model {model!r}; choose one of: {', '.join(TRAINERS)}")
    name = f"studio.training.{TRAINERS[model]}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            raise TrainError(f"the trainer for {model} ({name}) is not installed") from None
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Trainers may add their own options (shown by --help too): peek at the model
    # name with a parser that neither requires it nor handles --help.
    known, _ = build_parser(add_help=False).parse_known_args(argv)
    try:
        if known.model is None:
            parser.parse_args(argv)  # prints usage (or help) and exits
        module = load_trainer(known.model)
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
        args = parser.parse_args(argv)
        if args.steps is None:
            args.steps = getattr(module, "DEFAULT_STEPS", None)
        if args.batch_size is None:
            args.batch_size = getattr(module, "DEFAULT_BATCH_SIZE", None)
        if args.out is None:
            from studio.paths import models_dir

            args.out = str(models_dir() / args.model)
        check_args(args)
        if args.device is None:
            from studio.training.common import resolve_device

            args.device = resolve_device(None)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        module.train(args)
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run again with --resume to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
