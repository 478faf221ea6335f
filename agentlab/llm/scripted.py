"""A scripted stand-in for a model endpoint: real HTTP, replies you write in advance.

    with ScriptedModel() as model:
        model.script = [tool_call("search", {"query": "nats"}), answer("Use JetStream.")]
        role = model_role("You are the CTO.", tools=[...], config=model.config())

It speaks the OpenAI chat-completions API as Ollama, vLLM and hosted APIs do (server-sent
events, chunked, usage in the last event), so everything in front of it, the HTTP client
included, runs as it would against a real model. The tests use it, and so does notebook 12,
which must run where no model is installed. It answers in order, whatever it is asked: it is
a script, not a model.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .config import LlmConfig

__all__ = ["ScriptedModel", "answer", "status", "tool_call"]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up mid-reply (a timeout, a cancelled task) is routine here; the
        # default prints a traceback to stderr, where a notebook would show it as an error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
           usage: tuple[int, int] | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                             "model": "test-model", "choices": []}
    if delta is not None or finish is not None:
        event["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        event["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                          "total_tokens": sum(usage)}
    return event


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str = "call_1",
              usage: tuple[int, int] = (30, 8), index: int = 0) -> list[dict[str, Any]]:
    """The events of a turn that calls one tool, its arguments streamed in two pieces."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    half = len(raw) // 2
    return [_chunk({"role": "assistant", "content": None}),
            _chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                    "function": {"name": name, "arguments": ""}}]}),
            _chunk({"tool_calls": [{"index": index, "function": {"arguments": raw[:half]}}]}),
            _chunk({"tool_calls": [{"index": index, "function": {"arguments": raw[half:]}}]}),
            _chunk(finish="tool_calls"), _chunk(usage=usage)]


def answer(text: str, usage: tuple[int, int] = (40, 12)) -> list[dict[str, Any]]:
    """The events of a turn that answers ``text``, a word at a time."""
    words = text.split(" ")
    pieces = [word if i == 0 else f" {word}" for i, word in enumerate(words)]
    return ([_chunk({"role": "assistant", "content": ""})]
            + [_chunk({"content": piece}) for piece in pieces]
            + [_chunk(finish="stop"), _chunk(usage=usage)])


def status(code: int, error: str = "") -> tuple[int, dict[str, Any]]:
    return code, {"error": {"message": error or f"HTTP {code}", "type": "test"}}


class ScriptedModel:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1: each request gets the next
    reply of ``script`` (a list of events, streamed as SSE; or ``status(code)``), and is kept
    in ``requests`` (headers and JSON body). ``with ScriptedModel() as model:`` closes it."""

    def __init__(self) -> None:
        self.script: list[Any] = []
        self.delay = 0.0  # seconds before each answer: a model thinking
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self  # the handler class below reads the script of this instance

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked transfer, as uvicorn (vLLM) streams

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body})
                    reply = fake.script.pop(0) if fake.script else status(503, "no more")
                time.sleep(fake.delay)
                if self.path != "/v1/chat/completions":
                    reply = status(404, f"no route {self.path}")
                if isinstance(reply, tuple):
                    data = json.dumps(reply[1]).encode()
                    self.send_response(reply[0])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in [*reply, "[DONE]"]:
                    text = event if isinstance(event, str) else json.dumps(event)
                    self._write_chunk(f"data: {text}\n\n".encode())
                self._write_chunk(b"")

            def _write_chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def config(self, **options: Any) -> LlmConfig:
        return LlmConfig(self.base_url, "test-model", **options)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ScriptedModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
