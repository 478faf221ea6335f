"""One streamed turn of an OpenAI-compatible chat completion, over plain HTTP (httpx).

    async with httpx.AsyncClient() as http:
        turn = await achat(http, config, [{"role": "user", "content": "Hi"}],
                           on_text=lambda text: print(text, end=""))
    turn.content, turn.tool_calls, turn.usage, turn.latency_ms

The request asks for ``stream: true`` with ``stream_options.include_usage``; the answer's
server-sent events are put back together here: content deltas, tool-call deltas (by index:
id, name, argument pieces) and the usage. A server that answers with one JSON body
instead is understood too. 429, 5xx and a broken connection raise ModelUnavailable (a retry
may help); 401, 403, 404 and other refusals raise ModelRejected, naming what to fix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import AgentlabError
from .config import API_KEY, BASE_URL, MODEL, LlmConfig

if TYPE_CHECKING:  # imported when a model is asked: `import agentlab.org` stays ~0.1 s faster
    import httpx

# Streamed text reaches on_text at most this often (a token at a time would flood the inbox).
TEXT_EVERY = 0.5


class ModelError(AgentlabError, RuntimeError):
    """The model could not give an answer."""


class ModelUnavailable(ModelError):
    """The endpoint is overloaded, failing or unreachable: a retry may succeed."""


class ModelRejected(ModelError):
    """The endpoint refused the request (key, URL, model name): a retry will not help."""


@dataclass
class ToolCallRequest:
    """A tool call the model asked for. ``arguments`` is None when the model's JSON was not
    a JSON object; ``error`` then says why (it is told to the model, not raised)."""

    id: str
    name: str
    raw_arguments: str
    arguments: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens}


@dataclass
class ChatTurn:
    """What one request gave: the text, the tool calls, the tokens and the time it took."""

    content: str = ""
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    finish_reason: str | None = None

    def assistant_message(self) -> dict[str, Any]:
        """The turn as the assistant message the next request must repeat."""
        message: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": call.id, "type": "function",
                 "function": {"name": call.name, "arguments": call.raw_arguments}}
                for call in self.tool_calls]
        return message


def _parse_arguments(call_id: str, name: str, raw: str) -> ToolCallRequest:
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as error:
        return ToolCallRequest(call_id, name, raw, error=f"the arguments are not valid JSON "
                                                         f"({error}); send a JSON object")
    if not isinstance(arguments, dict):
        return ToolCallRequest(call_id, name, raw, error="the arguments must be a JSON object")
    return ToolCallRequest(call_id, name, raw, arguments)


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    prompt, completion = int(data.get("prompt_tokens") or 0), int(
        data.get("completion_tokens") or 0)
    return Usage(prompt, completion, int(data.get("total_tokens") or prompt + completion))


class _Assembler:
    """Puts a streamed answer back together, chunk by chunk."""

    def __init__(self, on_text: Callable[[str], None] | None):
        self.turn = ChatTurn()
        self._calls: dict[int, dict[str, str]] = {}
        self._on_text = on_text
        self._unsent = ""
        self._sent_at = 0.0

    def chunk(self, data: dict[str, Any]) -> None:
        if isinstance(data.get("error"), dict | str):  # some servers report errors mid-stream
            raise ModelUnavailable(f"the model stopped with an error: {data['error']}")
        if data.get("usage"):
            self.turn.usage = _usage(data["usage"])
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or choice.get("message") or {}
            if delta.get("content"):
                self.turn.content += delta["content"]
                self._unsent += delta["content"]
            for piece in delta.get("tool_calls") or []:
                call = self._calls.setdefault(int(piece.get("index", len(self._calls))),
                                              {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                function = piece.get("function") or {}
                call["name"] += function.get("name") or ""
                arguments = function.get("arguments") or ""
                # A whole (non-streamed) message may carry the arguments as an object.
                call["arguments"] += arguments if isinstance(arguments, str) else json.dumps(
                    arguments)
            if choice.get("finish_reason"):
                self.turn.finish_reason = choice["finish_reason"]
        self._report(final=False)

    def _report(self, final: bool) -> None:
        if self._on_text is None or not self._unsent:
            return
        now = time.monotonic()
        if final or now - self._sent_at >= TEXT_EVERY:
            text, self._unsent, self._sent_at = self._unsent, "", now
            self._on_text(text)

    def finish(self, started: float) -> ChatTurn:
        self._report(final=True)
        self.turn.tool_calls = [
            _parse_arguments(call["id"] or f"call_{index}", call["name"], call["arguments"])
            for index, call in sorted(self._calls.items())]
        self.turn.latency_ms = (time.perf_counter() - started) * 1e3
        return self.turn


def _refusal(config: LlmConfig, status: int, body: str) -> ModelError:
    said = f": {body[:300]}" if body else ""
    where = f"{config.url} (model '{config.model}') answered HTTP {status}{said}"
    if status == 429 or status >= 500:
        return ModelUnavailable(f"{where}. The endpoint is busy or failing; the task is "
                                "retried.")
    if status in (401, 403):
        return ModelRejected(f"{where}. Check the API key: set {API_KEY} (or "
                             "LlmConfig(api_key=...)) to a key this endpoint accepts.")
    if status == 404:
        return ModelRejected(f"{where}. Check {BASE_URL} (the URL before /chat/completions, "
                             f"often ending in /v1) and {MODEL} (a model this server has).")
    return ModelRejected(f"{where}. The endpoint refused the request.")


async def achat(http: httpx.AsyncClient, config: LlmConfig, messages: Sequence[dict[str, Any]],
                tools: Sequence[dict[str, Any]] = (), *,
                on_text: Callable[[str], None] | None = None) -> ChatTurn:
    """Ask for one completion of ``messages``, offering ``tools`` (OpenAI function tools)."""
    import httpx

    body: dict[str, Any] = {"model": config.model, "messages": list(messages), "stream": True,
                            "stream_options": {"include_usage": True}}
    if tools:
        body["tools"] = list(tools)
    if config.temperature is not None:
        body["temperature"] = config.temperature
    headers = {"Accept": "text/event-stream"}
    if config.api_key:  # local servers take none; an empty Bearer confuses some of them
        headers["Authorization"] = f"Bearer {config.api_key}"
    assembler = _Assembler(on_text)
    started = time.perf_counter()
    try:
        async with http.stream("POST", config.url, json=body, headers=headers,
                               timeout=config.timeout) as response:
            if response.status_code >= 400:
                raw = (await response.aread()).decode("utf-8", "replace").strip()
                raise _refusal(config, response.status_code, raw)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                assembler.chunk(json.loads(await response.aread()))  # a server that won't stream
                return assembler.finish(started)
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments (": keep-alive"), event names
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    break
                assembler.chunk(json.loads(data))
    except httpx.TransportError as error:  # refused, reset, timed out mid-answer
        raise ModelUnavailable(f"{config.url} (model '{config.model}') could not be reached "
                               f"or stopped answering: {type(error).__name__}: {error}. Is "
                               f"the server running, and is {BASE_URL} right?") from error
    except json.JSONDecodeError as error:
        raise ModelUnavailable(f"{config.url} sent something that is not JSON in its answer "
                               f"({error})") from error
    return assembler.finish(started)


__all__ = ["achat", "ChatTurn", "ToolCallRequest", "Usage", "ModelError", "ModelUnavailable",
           "ModelRejected", "TEXT_EVERY"]
