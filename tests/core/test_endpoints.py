"""Endpoint client against a real HTTP server on 127.0.0.1 (tests/core/sse_server.py)."""

import asyncio
import os
import socket
import stat

import pytest

from studio.core.endpoints import (
    Endpoint,
    EndpointError,
    alist_models,
    astream_chat,
    load_api_key,
    save_api_key,
    stream_chat,
)
from studio.core.jobs import Decoding
from tests.core.sse_server import WORDS, ChatServer

MESSAGES = (("user", "a castle"),)
DEFAULT = Decoding()


@pytest.fixture(scope="module")
def server():
    with ChatServer(api_key="sekret") as s:
        yield s


def _endpoint(server, model="ok", key="sekret", **kw):
    return Endpoint(server.base_url, model, key, **kw)


def _sync(endpoint, decoding=DEFAULT, **kw):
    pieces = []
    result = stream_chat(endpoint, "be brief", MESSAGES, decoding, pieces.append, **kw)
    return result, pieces


def _async(endpoint, decoding=DEFAULT, **kw):
    pieces = []

    async def go():
        return await astream_chat(endpoint, "be brief", MESSAGES, decoding, pieces.append, **kw)

    return asyncio.run(go()), pieces


@pytest.mark.parametrize("run", [_sync, _async], ids=["sync", "async"])
def test_streams_pieces_and_figures(server, run):
    result, pieces = run(_endpoint(server))
    assert pieces == WORDS
    assert result.text == "".join(WORDS) and result.source == "endpoint"
    assert result.new_tokens == len(WORDS)  # from the final usage block
    assert result.finish_reason == "eos" and not result.stopped
    request = server.requests[-1]
    assert request["headers"]["Authorization"] == "Bearer sekret"
    assert request["body"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert request["body"]["stream"] is True


def test_decoding_settings_map_to_the_protocol(server):
    sampling = Decoding(method="sample", temperature=0.9, top_k=20, top_p=0.8, seed=5,
                        repetition_penalty=1.2, stop=("\n",), max_new_tokens=33)
    _sync(_endpoint(server), sampling)
    body = server.requests[-1]["body"]
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.9, 0.8, 5)
    assert body["stop"] == ["\n"] and body["max_tokens"] == 33
    # Non-OpenAI fields only when asked for: strict servers refuse unknown fields.
    assert "top_k" not in body and "repetition_penalty" not in body
    _sync(_endpoint(server, send_extras=True), sampling)
    body = server.requests[-1]["body"]
    assert (body["top_k"], body["repetition_penalty"]) == (20, 1.2)
    result, _ = _sync(_endpoint(server), Decoding(method="beam", num_beams=4))
    assert server.requests[-1]["body"]["temperature"] == 0.0
    assert any("Beam search" in n for n in result.notices)


def test_streams_without_done_marker_and_whole_json_answers(server):
    # `transformers serve` ends its stream with a finish_reason and no [DONE].
    result, pieces = _sync(_endpoint(server, "no-done"))
    assert result.text == "".join(WORDS)
    result, pieces = _sync(_endpoint(server, "json"))
    assert pieces == ["whole answer"] and result.text == "whole answer"


@pytest.mark.parametrize("run", [_sync, _async], ids=["sync", "async"])
def test_stop_keeps_the_text_so_far(server, run):
    pieces_seen = []
    endpoint = _endpoint(server, "slow")
    if run is _sync:
        result = stream_chat(
            endpoint, "", MESSAGES, Decoding(), pieces_seen.append, should_stop=lambda: len(pieces_seen) >= 3
        )
    else:
        async def go():
            stop = asyncio.Event()

            def on_token(piece):
                pieces_seen.append(piece)
                if len(pieces_seen) == 3:
                    stop.set()

            return await astream_chat(endpoint, "", MESSAGES, Decoding(), on_token, stop=stop)

        result = asyncio.run(go())
    assert result.stopped and result.finish_reason == "stopped"
    assert result.text == "".join(WORDS[:3]) == "".join(pieces_seen)
    # The connection is closed, so the server stops producing.
    assert server.client_went_away.wait(5)
    server.client_went_away.clear()


@pytest.mark.parametrize("run", [_sync, _async], ids=["sync", "async"])
def test_http_errors_have_clear_messages(server, run):
    with pytest.raises(EndpointError, match=r"refused the request \(401\).*API key.*Incorrect API key"):
        run(_endpoint(server, key="wrong"))
    with pytest.raises(EndpointError, match=r"Not found \(404\).*model name 'nope'.*not found"):
        run(_endpoint(server, "nope"))
    with pytest.raises(EndpointError, match=r"internal error \(500\).*device-side assert"):
        run(_endpoint(server, "boom"))
    # After every failure the next request works.
    result, _ = run(_endpoint(server))
    assert result.text == "".join(WORDS)


@pytest.mark.parametrize("run", [_sync, _async], ids=["sync", "async"])
def test_broken_streams_keep_the_partial_text(server, run):
    with pytest.raises(EndpointError, match="malformed stream event") as info:
        run(_endpoint(server, "malformed"))
    assert info.value.partial == "".join(WORDS[:2])
    with pytest.raises(EndpointError, match="error mid-stream: model crashed"):
        run(_endpoint(server, "error-event"))
    with pytest.raises(EndpointError, match="closed the stream before") as info:
        run(_endpoint(server, "truncated"))
    assert info.value.partial == "".join(WORDS[:3])


@pytest.mark.parametrize("run", [_sync, _async], ids=["sync", "async"])
def test_down_and_timeout(server, run):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(EndpointError, match="Cannot reach .*is the server running"):
        run(Endpoint(f"http://127.0.0.1:{port}", "ok"))
    with pytest.raises(EndpointError, match=r"did not answer within 0.3 s"):
        run(_endpoint(server, "hang", read_timeout_s=0.3))


def test_base_url_forms_and_model_list(server):
    assert Endpoint("localhost:11434").url() == "http://localhost:11434/v1/chat/completions"
    assert Endpoint("http://h/v1/").url() == "http://h/v1/chat/completions"
    assert Endpoint("http://h/v1/chat/completions").url("models") == "http://h/v1/models"
    with pytest.raises(EndpointError):
        Endpoint("").url()
    assert asyncio.run(alist_models(_endpoint(server))) == ["ok", "slow"]


def test_api_keys_are_stored_readable_only_by_the_user(tmp_path):
    path = tmp_path / "keys.json"
    save_api_key("http://h/v1/", "sk-1", path)
    save_api_key("http://other/v1", "sk-2", path)
    assert load_api_key("http://h/v1", path) == "sk-1"
    assert load_api_key("http://other/v1", path) == "sk-2"
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    save_api_key("http://h/v1", "", path)
    assert load_api_key("http://h/v1", path) == ""


@pytest.mark.skipif(not os.environ.get("LATENT_STUDIO_SLOW"), reason="set LATENT_STUDIO_SLOW=1")
@pytest.mark.slow
def test_against_transformers_serve(tmp_path):
    """The real `transformers serve` (needs transformers[serving]); ~20 s to start."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import shutil
    import subprocess
    import sys
    import time

    import httpx

    from tests.core.tiny_llm import build_tiny_lm

    model = build_tiny_lm(tmp_path / "llama", "llama", chat_template=True)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    exe = shutil.which("transformers") or sys.executable
    proc = subprocess.Popen(
        [exe, "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        result, pieces = _sync(Endpoint(f"http://127.0.0.1:{port}", str(model)), Decoding(method="greedy", max_new_tokens=8))
        assert result.new_tokens == 8 and "".join(pieces) == result.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_cli_talks_to_an_endpoint(server, tmp_path, capsys, monkeypatch):
    from studio.cli import main

    monkeypatch.setenv("LATENT_STUDIO_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("LATENT_STUDIO_API_KEY", "sekret")
    assert main(["chat", "--endpoint", server.base_url, "--model", "ok", "--prompt", "a castle"]) == 0
    assert capsys.readouterr().out == "".join(WORDS) + "\n"
    assert server.requests[-1]["body"]["messages"][-1] == {"role": "user", "content": "a castle"}
    monkeypatch.setenv("LATENT_STUDIO_API_KEY", "wrong")
    assert main(["chat", "--endpoint", server.base_url, "--model", "ok", "--prompt", "a castle"]) == 1
    assert "refused the request (401)" in capsys.readouterr().err
