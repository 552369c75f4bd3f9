"""OpenAI-compatible chat endpoints (`/v1/chat/completions` with server-sent events).

Ollama, llama.cpp's server, vLLM, LM Studio and `transformers serve` all speak
this protocol. The async path runs on the UI's qasync loop (no thread, no
device); the sync path serves the CLI. Both share one SSE parser and one
table of error messages. API keys live in a file only the user can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.conversations import _atomic_write
from studio.core.errors import UserError
from studio.core.jobs import Decoding
from studio.core.llm import ChatResult

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # "http://127.0.0.1:11434/v1"; "/v1" is added when missing
    model: str = ""
    api_key: str = ""
    read_timeout_s: float = READ_TIMEOUT_S
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    # top_k and repetition_penalty are not OpenAI fields: Ollama, llama.cpp and
    # vLLM read them, while strict servers (OpenAI, `transformers serve`) refuse
    # the whole request, so they are sent only when asked for.
    send_extras: bool = False

    def url(self, route: str = "chat/completions") -> str:
        base = self.base_url.strip().rstrip("/")
        if not base:
            raise EndpointError("No endpoint URL set: enter the server's base URL, e.g. http://127.0.0.1:11434/v1.")
        if not base.startswith(("http://", "https://")):
            base = "http://" + base
        if base.endswith("/chat/completions"):
            base = base[: -len("/chat/completions")]
        if not base.endswith("/v1"):
            base += "/v1"
        return f"{base}/{route}"

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def timeout(self) -> Any:
        import httpx

        return httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)


class EndpointError(UserError):
    """A failed endpoint request; `partial` is any text streamed before the failure."""

    def __init__(self, message: str, detail: str = "", partial: str = "") -> None:
        super().__init__(message, detail)
        self.partial = partial


# ---- request ------------------------------------------------------------------------


def build_payload(
    endpoint: Endpoint, system: str, messages: Sequence[tuple[str, str]], decoding: Decoding
) -> tuple[dict[str, Any], list[str]]:
    """The JSON body, and notices for settings the protocol cannot carry."""
    chat = ([{"role": "system", "content": system}] if system.strip() else []) + [
        {"role": role, "content": content} for role, content in messages
    ]
    payload: dict[str, Any] = {
        "model": endpoint.model,
        "messages": chat,
        "stream": True,
        "max_tokens": decoding.max_new_tokens,
    }
    notices: list[str] = []
    method = decoding.method
    if method == "beam":
        notices.append("Beam search is not part of the OpenAI API; the endpoint decoded greedily.")
    if method == "sample" and decoding.temperature > 0:
        payload["temperature"] = decoding.temperature
        payload["top_p"] = decoding.top_p
        if decoding.top_k > 0 and endpoint.send_extras:
            payload["top_k"] = decoding.top_k
    else:
        payload["temperature"] = 0.0
    if decoding.repetition_penalty != 1.0 and endpoint.send_extras:
        payload["repetition_penalty"] = decoding.repetition_penalty
    if decoding.seed >= 0:
        payload["seed"] = decoding.seed
    if decoding.stop:
        payload["stop"] = list(decoding.stop)[:4]  # the API's limit
    return payload, notices


# ---- errors -------------------------------------------------------------------------


def _server_message(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)
        if err:
            return str(err)[:300]
    return text[:300]


def status_error(endpoint: Endpoint, status: int, body: bytes) -> EndpointError:
    said = _server_message(body)
    suffix = f" The server said: {said}" if said else ""
    url = endpoint.url()
    if status in (401, 403):
        return EndpointError(
            f"The endpoint refused the request ({status}): check the API key for {endpoint.base_url}.{suffix}"
        )
    if status == 404:
        return EndpointError(
            f"Not found (404) at {url}: check the base URL (it usually ends in /v1) "
            f"and the model name {endpoint.model!r}.{suffix}"
        )
    if status == 429:
        return EndpointError(f"The endpoint is busy or over its rate limit (429); try again shortly.{suffix}")
    if status >= 500:
        return EndpointError(f"The endpoint failed with an internal error ({status}).{suffix}")
    return EndpointError(f"The endpoint rejected the request ({status}).{suffix}")


def transport_error(endpoint: Endpoint, exc: Exception, partial: str = "") -> EndpointError:
    import httpx

    url = endpoint.url()
    if isinstance(exc, httpx.ConnectTimeout):
        msg = f"Connecting to {url} timed out after {endpoint.connect_timeout_s:g} s: is the server up?"
    elif isinstance(exc, httpx.TimeoutException):
        msg = f"{url} did not answer within {endpoint.read_timeout_s:g} s."
    elif isinstance(exc, httpx.ConnectError):
        msg = f"Cannot reach {url}: is the server running and the URL right? ({exc})"
    elif isinstance(exc, httpx.RemoteProtocolError):
        msg = f"The connection to {url} broke off mid-answer ({exc})."
    else:
        msg = f"Request to {url} failed: {type(exc).__name__}: {exc}"
    return EndpointError(msg, partial=partial)


# ---- the stream --------------------------------------------------------------------


class StreamParser:
    """Server-sent events of a chat completion stream → text pieces."""

    def __init__(self) -> None:
        self.text = ""
        self.pieces = 0
        self.done = False
        self.finish_reason = ""
        self.completion_tokens: int | None = None
        self._data: list[str] = []

    def feed_line(self, line: str) -> str:
        """One line of the stream; returns the text it completes (often "")."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return ""  # a comment, used as keep-alive
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return ""

    def close(self) -> str:
        return self._dispatch()

    def _dispatch(self) -> str:
        if not self._data:
            return ""
        data = "\n".join(self._data)
        self._data = []
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise EndpointError(
                f"The endpoint sent a malformed stream event (not JSON): {data[:80]!r}",
                partial=self.text,
            ) from exc
        if not isinstance(event, dict):
            raise EndpointError(f"The endpoint sent a malformed stream event: {data[:80]!r}", partial=self.text)
        if "error" in event:
            err = event["error"]
            said = err.get("message") if isinstance(err, dict) else err
            raise EndpointError(f"The endpoint reported an error mid-stream: {said}", partial=self.text)
        usage = event.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.completion_tokens = usage["completion_tokens"]
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise EndpointError(
                f"The endpoint sent a stream event without choices: {data[:80]!r}", partial=self.text
            )
        piece = ""
        for choice in choices[:1]:
            delta = choice.get("delta") or choice.get("message") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                piece = content
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if piece:
            self.text += piece
            self.pieces += 1
        return piece


class _Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first: float | None = None

    def saw_text(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def result(
        self, parser: StreamParser, endpoint: Endpoint, stopped: bool, notices: list[str]
    ) -> ChatResult:
        end = time.perf_counter()
        n = parser.completion_tokens if parser.completion_tokens is not None else parser.pieces
        first = self.first if self.first is not None else end
        speed = (n - 1) / (end - first) if n > 1 and end > first else 0.0
        reason = "stopped" if stopped else {"stop": "eos", "length": "length"}.get(parser.finish_reason, "eos")
        return ChatResult(
            text=parser.text,
            stopped=stopped,
            finish_reason=reason,
            new_tokens=n,
            tokens_per_s=speed,
            ttft_s=first - self.start,
            seconds=end - self.start,
            notices=tuple(notices),
            model=endpoint.model,
            source="endpoint",
        )


def _check_content_type(response: Any) -> bool:
    """True for an SSE stream; False for a server that answered with one JSON body."""
    kind = response.headers.get("content-type", "")
    return "json" not in kind


def _whole_answer(parser: StreamParser, body: bytes) -> str:
    # Some servers ignore "stream": the answer comes as one JSON body instead.
    parser.feed_line("data: " + body.decode("utf-8", "replace").replace("\n", " "))
    piece = parser.close()
    parser.done = True
    return piece


async def astream_chat(
    endpoint: Endpoint,
    system: str,
    messages: Sequence[tuple[str, str]],
    decoding: Decoding,
    on_token: Callable[[str], None],
    stop: asyncio.Event | None = None,
) -> ChatResult:
    """Stream a reply on the running asyncio loop; setting `stop` ends it and keeps the text so far.

    Stop cancels the reading task where it waits on the socket, so the
    cancellation unwinds httpx's async generators. Leaving them suspended (a
    `break`) would hand their clean-up to the garbage collector, which cannot
    run it on loops without async-generator hooks, such as qasync's.
    """
    import httpx

    payload, notices = build_payload(endpoint, system, messages, decoding)
    parser = StreamParser()
    timer = _Timer()

    def take(piece: str) -> None:
        if piece:
            timer.saw_text()
            on_token(piece)

    async def read() -> None:
        async with (
            httpx.AsyncClient(timeout=endpoint.timeout()) as client,
            client.stream("POST", endpoint.url(), json=payload, headers=endpoint.headers()) as response,
        ):
            if response.status_code >= 400:
                raise status_error(endpoint, response.status_code, await response.aread())
            if not _check_content_type(response):
                take(_whole_answer(parser, await response.aread()))
                return
            async for line in response.aiter_lines():
                if not parser.done:  # after [DONE], read on to the end of the body
                    take(parser.feed_line(line))
            if not parser.done:
                take(parser.close())

    reader = asyncio.ensure_future(read())
    stopped = False
    try:
        if stop is None:
            await reader
        else:
            waiter = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            if not reader.done():
                stopped = True
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            else:
                reader.result()
    except httpx.HTTPError as exc:
        raise transport_error(endpoint, exc, parser.text) from exc
    except asyncio.CancelledError:
        reader.cancel()
        raise
    _check_finished(parser, stopped)
    return timer.result(parser, endpoint, stopped, notices)


def stream_chat(
    endpoint: Endpoint,
    system: str,
    messages: Sequence[tuple[str, str]],
    decoding: Decoding,
    on_token: Callable[[str], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> ChatResult:
    """The blocking twin of `astream_chat`, for the CLI."""
    import httpx

    payload, notices = build_payload(endpoint, system, messages, decoding)
    parser = StreamParser()
    timer = _Timer()
    stopped = False
    try:
        with (
            httpx.Client(timeout=endpoint.timeout()) as client,
            client.stream("POST", endpoint.url(), json=payload, headers=endpoint.headers()) as response,
        ):
            if response.status_code >= 400:
                raise status_error(endpoint, response.status_code, response.read())
            if not _check_content_type(response):
                piece = _whole_answer(parser, response.read())
                if piece:
                    timer.saw_text()
                    on_token(piece)
            else:
                for line in response.iter_lines():
                    piece = parser.feed_line(line)
                    if piece:
                        timer.saw_text()
                        on_token(piece)
                    if should_stop():
                        stopped = True
                        break
                    if parser.done:
                        break
                else:
                    piece = parser.close()
                    if piece:
                        timer.saw_text()
                        on_token(piece)
    except httpx.HTTPError as exc:
        raise transport_error(endpoint, exc, parser.text) from exc
    _check_finished(parser, stopped)
    return timer.result(parser, endpoint, stopped, notices)


def _check_finished(parser: StreamParser, stopped: bool) -> None:
    if stopped or parser.done or parser.finish_reason:
        return
    raise EndpointError(
        "The endpoint closed the stream before the answer was finished (no [DONE]); "
        "the text so far is kept.",
        partial=parser.text,
    )


async def alist_models(endpoint: Endpoint) -> list[str]:
    """Model ids the server offers (`GET /v1/models`)."""
    import httpx

    try:
        async with httpx.AsyncClient(timeout=endpoint.timeout()) as client:
            response = await client.get(endpoint.url("models"), headers=endpoint.headers())
    except httpx.HTTPError as exc:
        raise transport_error(endpoint, exc) from exc
    if response.status_code >= 400:
        raise status_error(endpoint, response.status_code, response.content)
    try:
        data = response.json()
        return [str(m["id"]) for m in data.get("data", [])]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EndpointError(f"{endpoint.url('models')} did not answer with a model list.") from exc


# ---- API keys ---------------------------------------------------------------------------


def default_keys_path() -> Path:
    from studio.core.settings import config_dir

    return config_dir() / "endpoint-keys.json"


def _read_keys(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _key_id(base_url: str) -> str:
    return base_url.strip().rstrip("/")


def load_api_key(base_url: str, path: str | os.PathLike[str] | None = None) -> str:
    return _read_keys(Path(path) if path else default_keys_path()).get(_key_id(base_url), "")


def save_api_key(base_url: str, key: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Store (or with an empty key, forget) the key for `base_url`; the file is mode 600."""
    p = Path(path) if path else default_keys_path()
    keys = _read_keys(p)
    if key:
        keys[_key_id(base_url)] = key
    else:
        keys.pop(_key_id(base_url), None)
    _atomic_write(p, json.dumps(keys, indent=1), mode=0o600)
    return p
