"""A small OpenAI-compatible chat server on 127.0.0.1 for tests.

It speaks the documented `/v1/chat/completions` streaming format (server-sent
events of `chat.completion.chunk` objects, ended by `data: [DONE]`), and the
model name picks a behaviour, including the faults a client must survive.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ["A ", "castle ", "on ", "a ", "hill, ", "golden ", "hour"]


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer

    def log_message(self, *args) -> None:
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _event(self, payload: str) -> None:
        self.wfile.write(f"data: {payload}\n\n".encode())
        self.wfile.flush()

    def _chunk(self, delta: dict, finish: str | None = None, usage: dict | None = None) -> None:
        body = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "test",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if usage:
            body["usage"] = usage
        self._event(json.dumps(body))

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "ok"}, {"id": "slow"}]})
        else:
            self._json(404, {"error": {"message": "no such route"}})

    def do_POST(self) -> None:
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError):
            self.server.client_went_away.set()

    def _post(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"route {self.path} not found"}})
            return
        if self.server.api_key and self.headers.get("Authorization") != f"Bearer {self.server.api_key}":
            self._json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
            return
        model = body.get("model")
        if model == "boom":
            self._json(500, {"error": {"message": "CUDA error: device-side assert"}})
            return
        if model == "hang":
            time.sleep(3)
        if model == "json":
            self._json(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "whole answer"}, "finish_reason": "stop"}]})
            return
        if model not in ("ok", "slow", "no-done", "malformed", "truncated", "hang", "error-event"):
            self._json(404, {"error": {"message": f"model '{model}' not found"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        self.wfile.write(b": keep-alive\n\n")
        self._chunk({"role": "assistant"})
        delay = 0.05 if model == "slow" else 0.0
        words = WORDS * (8 if model == "slow" else 1)
        for i, word in enumerate(words):
            if model == "malformed" and i == 2:
                self._event("{not json")
                return
            if model == "error-event" and i == 2:
                self._event(json.dumps({"error": {"message": "model crashed"}}))
                return
            if model == "truncated" and i == 3:
                return
            self._chunk({"content": word})
            time.sleep(delay)
        self._chunk({}, "stop", usage={"prompt_tokens": 9, "completion_tokens": len(words)})
        if model != "no-done":
            self._event("[DONE]")


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api_key: str = "") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api_key = api_key
        self.requests: list[dict] = []
        self.client_went_away = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
