"""`chat`: one message to a local causal LM (or an OpenAI-compatible server), streamed to stdout.

The reply goes to stdout as it forms; figures and notices go to stderr, so
`python -m studio chat ... > reply.txt` captures the text alone. Ctrl+C stops
the reply, keeps what was written, and exits 130.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from typing import Any

from studio.core.errors import UserError


def register(sub: Any) -> None:
    chat = sub.add_parser("chat", help="chat with a local LLM or an OpenAI-compatible endpoint")
    chat.add_argument("--model", default=None, help="model name, HF repo id in the local cache, or folder (default: settings, else prompt-writer); with --endpoint, the server's model name")
    chat.add_argument("--prompt", required=True, help='the message; "-" reads it from stdin')
    chat.add_argument("--system", default=None, help="system prompt")
    chat.add_argument("--preset", default=None, help="Precise, Balanced, Creative or one you saved (default: settings)")
    chat.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    chat.add_argument("--temperature", default=None, help="sampling temperature; 0 means greedy")
    chat.add_argument("--top-k", default=None, help="sample from the k likeliest tokens (0: off)")
    chat.add_argument("--top-p", default=None, help="nucleus sampling: smallest set with this probability (1: off)")
    chat.add_argument("--beams", default=None, help="beam search with this many beams (no streaming)")
    chat.add_argument("--repetition-penalty", default=None, help="1.0 is off")
    chat.add_argument("--seed", default=None, help="seed; -1 picks one at random")
    chat.add_argument("--max-new-tokens", default=None)
    chat.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    chat.add_argument("--endpoint", default=None, help="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1")
    chat.add_argument("--trust-remote-code", action="store_true", help="run the model folder's own code (only for authors you trust)")
    chat.add_argument("--device", default=None, help="auto, cuda, mps or cpu")
    chat.add_argument("--quiet", action="store_true", help="no figures on stderr")
    chat.set_defaults(func=cmd_chat)


def _number(value: str, what: str, kind: type) -> Any:
    try:
        number = kind(value.strip())
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise UserError(f"{what} must be {noun}, not {value!r}.") from None
    if kind is float and not math.isfinite(number):
        raise UserError(f"{what} must be a finite number, not {value!r}.")
    return number


def decoding_from_args(args: argparse.Namespace, preset_name: str) -> Any:
    from studio.core.conversations import PresetStore

    decoding = PresetStore().get(preset_name)
    changes: dict[str, Any] = {}
    if args.temperature is not None:
        changes["temperature"] = _number(args.temperature, "The temperature", float)
    if args.top_k is not None:
        changes["top_k"] = _number(args.top_k, "Top-k", int)
    if args.top_p is not None:
        changes["top_p"] = _number(args.top_p, "Top-p", float)
    if args.repetition_penalty is not None:
        changes["repetition_penalty"] = _number(args.repetition_penalty, "The repetition penalty", float)
    if args.seed is not None:
        changes["seed"] = _number(args.seed, "The seed", int)
    if args.max_new_tokens is not None:
        changes["max_new_tokens"] = _number(args.max_new_tokens, "Max new tokens", int)
        if changes["max_new_tokens"] < 1:
            raise UserError("Max new tokens must be at least 1.")
    if args.stop:
        changes["stop"] = tuple(s.encode().decode("unicode_escape") for s in args.stop)
    beams = _number(args.beams, "Beams", int) if args.beams is not None else 1
    if beams > 1:
        changes.update(method="beam", num_beams=beams)
    elif args.greedy or changes.get("temperature") == 0:
        changes["method"] = "greedy"
    elif {"temperature", "top_k", "top_p"} & changes.keys():
        changes["method"] = "sample"
    return replace(decoding, **changes)


def _figures(result: Any) -> str:
    line = f"{result.new_tokens} tokens, {result.tokens_per_s:.1f} tokens/s, first token {result.ttft_s * 1000:.0f} ms"
    if result.seed >= 0:
        line += f", seed {result.seed}"
    if result.stopped:
        line += ", stopped"
    return line


def cmd_chat(args: argparse.Namespace) -> int:
    from studio.core.settings import load_settings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    settings = load_settings()
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise UserError("The prompt is empty.")
    system = args.system if args.system is not None else settings.llm_system_prompt
    decoding = decoding_from_args(args, args.preset or settings.llm_preset)
    messages = (("user", prompt),)

    def write(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.endpoint:
        result = _chat_endpoint(args, settings, system, messages, decoding, write)
    else:
        result = _chat_local(args, settings, system, messages, decoding, write)
    if result is None:
        return 130
    sys.stdout.write("\n")
    sys.stdout.flush()
    if not args.quiet:
        for notice in result.notices:
            print(f"note: {notice}", file=sys.stderr)
        print(_figures(result), file=sys.stderr)
    return 130 if result.stopped else 0


def _chat_local(args: Any, settings: Any, system: str, messages: Any, decoding: Any, write: Any) -> Any:
    from transformers.utils import logging as hf_logging

    from studio.core.engine import Engine
    from studio.core.jobs import ChatRequest, Token

    hf_logging.disable_progress_bar()
    saved = settings.llm_model if not settings.llm_model.startswith("endpoint:") else ""
    model = args.model or saved or "prompt-writer"
    job = ChatRequest(
        model=model,
        system=system,
        messages=messages,
        decoding=decoding,
        trust_remote_code=args.trust_remote_code,
    )
    engine = Engine(device=args.device or settings.device, options=settings.engine_options())
    engine.subscribe(lambda ev: write(ev.text) if isinstance(ev, Token) and ev.job_id == job.job_id else None)
    engine.start()
    try:
        handle = engine.submit(job)
        try:
            return handle.result()
        except KeyboardInterrupt:
            # Stop keeps the partial reply: the job still finishes, marked stopped.
            engine.cancel_running()
            return handle.result(30)
    finally:
        engine.stop()


def _chat_endpoint(args: Any, settings: Any, system: str, messages: Any, decoding: Any, write: Any) -> Any:
    from studio.core.endpoints import Endpoint, load_api_key, stream_chat

    key = os.environ.get("LATENT_STUDIO_API_KEY") or load_api_key(args.endpoint)
    endpoint = Endpoint(
        args.endpoint,
        args.model or settings.llm_endpoint_model,
        key,
        send_extras=settings.llm_endpoint_extras,
    )
    try:
        return stream_chat(endpoint, system, messages, decoding, write)
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        return None
