"""A role handler that asks a model, turning its tool calls into delegations and async tools.

    search = ToolSpec("search", "Search the docs", {"type": "object",
                      "properties": {"query": {"type": "string"}}, "required": ["query"]})
    cto = model_role("You are the CTO. Decide, in two sentences.", tools=[search])
    Organisation(lab, "acme", roles={**REFERENCE_ROLES, "cto": cto}).start()

The handler sends the task (its title, and its details as JSON) after the instructions, and
loops: each tool call the model makes is run (``delegate_task`` through ``ctx.adelegate``, a
ToolSpec through ``ctx.acall_tool``) and its result, or its error, told to the model, until
it answers without tool calls. That answer, with the tokens, the latency and the calls, is
the task's result (the agent records it as the TaskCompleted). It keeps the task alive
meanwhile and reports each turn and the streamed text with ``ctx.progress``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .chat import ModelError, ToolCallRequest, Usage, achat
from .config import ROLES, LlmConfig, LlmConfigError

log = logging.getLogger("agentlab")

DELEGATE_TOOL = "delegate_task"


class TaskLike(Protocol):
    """What the handler reads of a task (an ``agentlab.org.Task`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def details(self) -> Mapping[str, Any]: ...
    @property
    def role(self) -> str: ...
    @property
    def org(self) -> str: ...


class HasId(Protocol):
    @property
    def id(self) -> str: ...


class ContextLike(Protocol):
    """What the handler uses of its context (an ``agentlab.org.TaskContext`` is one)."""

    def progress(self, text: str, **data: Any) -> None: ...
    def in_progress(self) -> None: ...
    async def adelegate(self, role: str, title: str,
                        details: dict[str, Any] | None = None) -> HasId: ...
    async def acall_tool(self, tool: str, /, *, timeout: float = 30.0,
                         **arguments: Any) -> Any: ...


@dataclass(frozen=True)
class ToolSpec:
    """An async tool the model may call: its name (the tool workers' ``tools.execute.<name>``),
    what it does, and its arguments' JSON Schema. ``timeout``: seconds to wait for a result."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}})
    timeout: float = 30.0

    def as_openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name,
                                                 "description": self.description,
                                                 "parameters": dict(self.parameters)}}


def _delegate_tool(roles: Sequence[str]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": DELEGATE_TOOL,
        "description": "Hand a piece of work to another role of the organisation. Returns "
                       "the new task's id; the role works on it on its own.",
        "parameters": {"type": "object", "properties": {
            "role": {"type": "string", "enum": list(roles)},
            "title": {"type": "string", "description": "What the role should do"},
            "details": {"type": "object", "description": "Any facts the role needs"}},
            "required": ["role", "title"]}}}


def _error(text: str) -> tuple[str, bool]:
    return json.dumps({"error": text}), False


class ModelRole:
    """``handler(task, ctx)`` for an Agent: the task answered by a model (see the module).

    ``config`` defaults to ``LlmConfig.from_env()``; with neither, this raises at once.
    ``max_turns`` bounds the requests per task (a model that keeps calling tools fails the
    attempt); ``keep_alive_every`` is how often (s) ``ctx.in_progress()`` is sent meanwhile.
    """

    def __init__(self, instructions: str, *, delegates_to: Sequence[str] = (),
                 tools: Sequence[ToolSpec] = (), config: LlmConfig | None = None,
                 max_turns: int = 6, keep_alive_every: float = 1.0):
        resolved = config or LlmConfig.from_env()
        if resolved is None:
            raise LlmConfigError("A model role needs a model: pass config=LlmConfig(base_url, "
                                 "model), or set AGENTLAB_LLM_BASE_URL and AGENTLAB_LLM_MODEL.")
        names = [spec.name for spec in tools]
        if DELEGATE_TOOL in names or len(set(names)) != len(names):
            raise ValueError(f"tool names must be unique and not {DELEGATE_TOOL!r}: {names}")
        if max_turns < 1 or keep_alive_every <= 0:
            raise ValueError("max_turns must be at least 1 and keep_alive_every above 0")
        self.instructions = instructions
        self.delegates_to = tuple(delegates_to)
        self.tools = {spec.name: spec for spec in tools}
        self.config = resolved
        self.max_turns = max_turns
        self.keep_alive_every = keep_alive_every
        self.offered = [spec.as_openai() for spec in tools]
        if self.delegates_to:
            self.offered.insert(0, _delegate_tool(self.delegates_to))

    def messages(self, task: TaskLike) -> list[dict[str, Any]]:
        """The conversation's start: the instructions, then the task."""
        prompt = task.title
        if task.details:
            prompt += "\n\nDetails (JSON):\n" + json.dumps(dict(task.details), default=str)
        return [{"role": "system", "content": self.instructions},
                {"role": "user", "content": prompt}]

    async def __call__(self, task: TaskLike, ctx: ContextLike) -> dict[str, Any]:
        messages = self.messages(task)
        usage, latency_ms = Usage(), 0.0
        calls: list[dict[str, Any]] = []
        delegated: list[str] = []
        beater = asyncio.ensure_future(self._keep_alive(ctx))
        try:
            import httpx  # here, not at import: see chat.py

            # One client per task: it is bound to the loop the handler runs on.
            async with httpx.AsyncClient() as http:
                for turn_no in range(1, self.max_turns + 1):
                    ctx.progress(f"asking {self.config.model} (turn {turn_no})", turn=turn_no,
                                 model=self.config.model)
                    turn = await achat(http, self.config, messages, self.offered,
                                       on_text=functools.partial(self._streamed, ctx, turn_no))
                    usage.add(turn.usage)
                    latency_ms += turn.latency_ms
                    if not turn.tool_calls:
                        result: dict[str, Any] = {
                            "answer": turn.content, "model": self.config.model,
                            "usage": usage.as_dict(), "latency_ms": round(latency_ms, 1),
                            "turns": turn_no, "tool_calls": calls}
                        if delegated:
                            result["delegated"] = delegated
                        return result
                    messages.append(turn.assistant_message())
                    for call in turn.tool_calls:
                        content, ok = await self._run_tool(call, ctx, delegated)
                        calls.append({"name": call.name, "ok": ok, "arguments":
                                      call.raw_arguments if call.arguments is None
                                      else call.arguments})
                        messages.append({"role": "tool", "tool_call_id": call.id,
                                         "content": content})
        finally:
            beater.cancel()
        raise ModelError(f"{self.config.model} still called tools after max_turns="
                         f"{self.max_turns} turns on task {task.id} ({task.title!r}): raise "
                         "max_turns, or tell it in the instructions when to answer.")

    @staticmethod
    def _streamed(ctx: ContextLike, turn_no: int, text: str) -> None:
        ctx.progress(text, turn=turn_no, streamed=True)

    async def _keep_alive(self, ctx: ContextLike) -> None:
        # A model may think for longer than ack_wait before its first byte: keep the task.
        while True:
            await asyncio.sleep(self.keep_alive_every)
            try:
                ctx.in_progress()
            except Exception as error:  # a closed connection: the redelivery says it
                log.info("model role: in_progress not sent (%s)", error)

    async def _run_tool(self, call: ToolCallRequest, ctx: ContextLike,
                        delegated: list[str]) -> tuple[str, bool]:
        """The tool result for the model (JSON text) and whether the call worked. The
        model's mistakes and a tool's failure are told to the model; a failure to delegate
        (no connection) is raised: the attempt fails and the task is retried."""
        args = call.arguments
        if args is None:
            return _error(f"{call.name}: {call.error}")
        if call.name == DELEGATE_TOOL and self.delegates_to:
            role, title, details = args.get("role"), args.get("title"), args.get("details")
            if role not in self.delegates_to:
                return _error(f"role must be one of {list(self.delegates_to)}, not {role!r}")
            if not isinstance(title, str) or not title.strip():
                return _error("title must be a non-empty string")
            if details is not None and not isinstance(details, dict):
                return _error("details must be a JSON object")
            ctx.progress(f"delegating to {role}: {title}", tool=DELEGATE_TOOL, role=role)
            sub = await ctx.adelegate(role, title, details or {})
            delegated.append(sub.id)
            return json.dumps({"task_id": sub.id, "role": role, "status": "delegated"}), True
        spec = self.tools.get(call.name)
        if spec is None:
            offered = [tool["function"]["name"] for tool in self.offered]
            return _error(f"there is no tool {call.name!r}; the tools are {offered}")
        ctx.progress(f"calling tool {spec.name}", tool=spec.name)
        try:
            value = await ctx.acall_tool(spec.name, timeout=spec.timeout, **args)
        except Exception as error:  # ToolError, ToolTimeout, bad arguments: the model may adapt
            return _error(f"{type(error).__name__}: {error}")
        return json.dumps(value, default=str), True

    def __repr__(self) -> str:
        return (f"<ModelRole model={self.config.model!r} at {self.config.base_url} "
                f"delegates_to={list(self.delegates_to)} tools={list(self.tools)}>")


def model_role(instructions: str, *, delegates_to: Sequence[str] = (),
               tools: Sequence[ToolSpec] = (), config: LlmConfig | None = None,
               max_turns: int = 6, keep_alive_every: float = 1.0) -> ModelRole:
    """A :class:`ModelRole` (the handler to give an Agent or an Organisation's ``roles``)."""
    return ModelRole(instructions, delegates_to=delegates_to, tools=tools, config=config,
                     max_turns=max_turns, keep_alive_every=keep_alive_every)


REFERENCE_PROMPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ceo": ("You are the CEO of a small company. Split the goal you are given into a "
            "technical question for the CTO and a budget question for the CFO: call "
            "delegate_task once for each, then answer with a short plan that names both.",
            ("cto", "cfo")),
    "cto": ("You are the CTO. Answer the technical question with a decision (build it "
            "in-house, use a managed service, or prototype first), an estimate in days and "
            "one sentence of reasoning.", ()),
    "cfo": ("You are the CFO. Answer the budget question: approve asks up to 5000, question "
            "bigger ones. Give the amount and one sentence of reasoning.", ()),
}


def reference_model_roles(config: LlmConfig | None = None,
                          roles: Sequence[str] | None = None) -> dict[str, ModelRole]:
    """Model-backed CEO, CTO and CFO (the reference roles' jobs, as prompts).

    ``roles`` picks some of them; it defaults to ``config.roles`` (``AGENTLAB_LLM_ROLES``),
    and to all three when that is unset too.
    """
    resolved = config or LlmConfig.from_env()
    if resolved is None:
        raise LlmConfigError("reference_model_roles() needs a model: pass an LlmConfig, or "
                             "set AGENTLAB_LLM_BASE_URL and AGENTLAB_LLM_MODEL.")
    wanted = tuple(roles if roles is not None else resolved.roles or REFERENCE_PROMPTS)
    unknown = [role for role in wanted if role not in REFERENCE_PROMPTS]
    if unknown:
        raise LlmConfigError(f"{ROLES} (or LlmConfig.roles) names {unknown}, which have no "
                             f"reference prompt: use some of {', '.join(REFERENCE_PROMPTS)}, "
                             "or give those roles your own model_role().")
    return {role: ModelRole(REFERENCE_PROMPTS[role][0], delegates_to=REFERENCE_PROMPTS[role][1],
                            config=resolved) for role in wanted}


__all__ = ["ModelRole", "model_role", "ToolSpec", "TaskLike", "ContextLike",
           "reference_model_roles", "REFERENCE_PROMPTS", "DELEGATE_TOOL"]
