"""The Synadia Agent Protocol v0.3, both ways, with agentlab's durability behind it.

    gateway = serve_organisation(org)              # CEO, CTO, CFO: protocol agents now
    # any protocol caller: Agents(nc=nc).discover() lists agentlab/acme/{ceo,cto,cfo}

    org = Organisation(lab, "acme", roles={**REFERENCE_ROLES,
                                           "analyst": remote_role("echo", owner="bob")})
    # the CEO delegates to "analyst": the task prompts the remote agent, and its answer is
    # the task's result, recorded in the ledger and announced on tasks.completed

**Hosting.** :class:`SynadiaGateway` registers one protocol agent per role with the host
SDK (``synadia-ai-agent-service``): ``agents.prompt.agentlab.{org}.{role}``, service
``agents``, metadata ``org`` and ``role`` beside the protocol's. A prompt does not run in
the gateway: it becomes a :class:`~agentlab.org.models.Task` published with
``publish_task`` (Nats-Msg-Id = the task id), so it waits durably in AGENT_TASKS for the
role's agents, however long they are busy, scaled to zero or restarting. The task id is
derived from the prompt's ``prompt_id`` (an envelope field, or the request's Nats-Msg-Id
header), so a retried prompt finds its task (the stream drops the resend; the ledger holds
the answer once it is recorded) instead of running it again. While the task waits, the
SDK's keep-alive ``ack`` status chunks hold the caller's stream open; the agent's
``ctx.progress`` notes arrive as ``progress:`` status chunks; the recorded result is the
one response chunk (its JSON), and the terminator ends the stream.

**Calling** is :mod:`agentlab.protocol.synadia_remote` (re-exported here).

The SDKs need Python 3.11 and the ``synadia`` extra: ``pip install 'agentlab-nats[synadia]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic

try:
    from synadia_ai.agent_service import (
        AgentService,
        CallNext,
        PromptStream,
        RequestInterceptorContext,
        RequestRejectedError,
    )
    from synadia_ai.agents import Envelope, ProtocolError, StatusChunk
except ImportError as missing:  # say how to get them, not just that a module is missing
    raise ImportError("agentlab.protocol.synadia needs the Synadia Agent Protocol SDKs "
                      "(Python 3.11+): pip install 'agentlab-nats[synadia]'") from missing

from ..core.client import Client
from ..core.lifecycle import Service
from ..core.received import Message
from ..core.subjects import Subjects, validate_token
from ..core.subscription import Subscription
from ..org.delegation import apublish_task
from ..org.ledger import TaskLedger
from ..org.models import Task
from ..org.organisation import Organisation
from ..org.streams import TASK_STREAM
from ..wire.messages import new_id
from .synadia_remote import RemoteAgent, RemoteAgentUnavailable, remote_role

__all__ = ["AGENT_NAME", "DETAILS_FIELD", "PROMPT_ID_FIELD", "PROMPT_ID_HEADER",
           "REQUESTED_BY", "RemoteAgent", "RemoteAgentUnavailable", "SynadiaGateway",
           "prompt_task_id", "remote_role", "serve_organisation"]

log = logging.getLogger("agentlab")

AGENT_NAME = "agentlab"           # the subjects' {agent} token and metadata.agent
PROMPT_ID_FIELD = "prompt_id"     # envelope extension field (§5.6): the caller's retry key
PROMPT_ID_HEADER = "Nats-Msg-Id"  # ... or this request header, for `nats req -H`
DETAILS_FIELD = "details"         # envelope extension field: the task's details (an object)
REQUESTED_BY = "synadia-gateway"  # the tasks' requested_by: their progress notes come here

# The request's headers, for the handler: the host SDK hands them to interceptors only.
_headers: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "agentlab_synadia_headers", default=None)


def prompt_task_id(org: str, role: str, prompt_id: str) -> str:
    """The task id behind a prompt with ``prompt_id``: the same prompt, the same task.

    A hash, so any caller's id becomes a valid ledger key and Nats-Msg-Id; the org and the
    role are in it, so one prompt id sent to two roles makes two tasks.
    """
    digest = hashlib.sha256(f"{org}\0{role}\0{prompt_id}".encode()).hexdigest()
    return f"sap-{digest[:32]}"


class _KeepHeaders:
    """A request interceptor that lets the handler read the request's headers."""

    async def around_request(self, ctx: RequestInterceptorContext, call_next: CallNext) -> None:
        token = _headers.set(ctx.headers)
        try:
            await call_next()
        finally:
            _headers.reset(token)


@dataclass
class _Waiter:
    """The prompts waiting on one task (a retry can join the first), and its outcome:
    ("done", record) or ("failed", why). A tuple, not an exception: a future's exception
    that no prompt is left to read would be logged as never retrieved."""

    role: str
    outcome: asyncio.Future[tuple[str, Any]]
    listeners: list[asyncio.Queue[str]] = field(default_factory=list)


class SynadiaGateway(Service):
    """Every role of ``org`` as a protocol agent, each prompt a durable task (module doc).

    ``org`` is an :class:`~agentlab.org.Organisation` (its roles and subjects are used) or
    an org name with ``roles``. ``keepalive_interval`` is how often an ``ack`` status chunk
    goes to a caller whose task is still waiting (keep it well under the caller's inactivity
    timeout, 60 s by default); ``max_wait`` is how long a prompt waits for its task before
    it answers a 500 (the task stays queued: the same ``prompt_id`` waits again);
    ``ledger_poll`` is how often a waiting prompt also reads the ledger, in case its
    completion was announced while this connection was reconnecting.
    """

    def __init__(self, client: Client, org: Organisation | str = "acme", *,
                 roles: Iterable[str] | None = None, subjects: Subjects | None = None,
                 heartbeat_interval: int = 30, keepalive_interval: float = 15.0,
                 max_wait: float = 600.0, ledger_poll: float = 2.0,
                 max_concurrent_prompts: int = 64, max_payload: str = "256KB"):
        self.organisation = org if isinstance(org, Organisation) else None
        self.org = validate_token(org.org if isinstance(org, Organisation) else org, "org")
        if roles is None:
            roles = org.roles if isinstance(org, Organisation) else ()
        self.roles = [validate_token(role, "role") for role in roles]
        if not self.roles:
            raise ValueError("SynadiaGateway needs roles: pass an Organisation or roles=[...]")
        self.subjects = subjects or (org.subjects if isinstance(org, Organisation)
                                     else Subjects())
        self.lab = client
        self.heartbeat_interval, self.keepalive_interval = heartbeat_interval, keepalive_interval
        self.max_wait, self.ledger_poll = max_wait, ledger_poll
        self.max_concurrent_prompts, self.max_payload = max_concurrent_prompts, max_payload
        self.services: dict[str, AgentService] = {}
        self._bridge = client._bridge
        self._client: Client | None = None
        self._ledger: TaskLedger | None = None
        self._subscriptions: list[Subscription] = []
        self._waiters: dict[str, _Waiter] = {}

    # -- lifecycle -------------------------------------------------------------------
    async def _astart_service(self) -> None:
        self._client = client = await self.lab.aconnect(f"{self.org}-synadia")
        self._ledger = await TaskLedger.adeclare(client, self.subjects)
        # Listening before any prompt is taken: a completion cannot slip past a waiter.
        for subject, handler in ((self.subjects.tasks_completed(self.org), self._on_completed),
                                 (self.subjects.inbox(REQUESTED_BY), self._on_progress),
                                 (self.subjects.dlq(TASK_STREAM, "*"), self._on_dead_letter)):
            self._subscriptions.append(await client.asubscribe(subject, handler))
        for role in self.roles:
            service = AgentService(
                agent=AGENT_NAME, owner=self.org, session_name=role, nc=client.nc,
                description=(f"agentlab {self.org}/{role}: each prompt is a durable task "
                             f"on {self.subjects.tasks(role)}"),
                heartbeat_interval_s=self.heartbeat_interval,
                keepalive_interval_s=self.keepalive_interval, max_payload=self.max_payload,
                attachments_ok=False,  # a task carries JSON, not files
                extra_metadata={"org": self.org, "role": role, "framework": "agentlab",
                                "tasks_subject": self.subjects.tasks(role),
                                "completions_subject": self.subjects.tasks_completed(self.org)},
                heartbeat_extras=self._extras_for(role), interceptors=[_KeepHeaders()],
                max_concurrent_prompts=self.max_concurrent_prompts)
            service.on_prompt(self._handler_for(role))
            self.services[role] = service
            await service.start()
        log.info("synadia gateway for %s: %s", self.org, ", ".join(self.roles))

    async def _astop_service(self) -> None:
        # The prompts in flight are cancelled (their callers get the terminator); their
        # tasks stay in AGENT_TASKS and a retried prompt finds them.
        services, self.services = list(self.services.values()), {}
        for service in services:
            with contextlib.suppress(Exception):  # a connection already gone: nothing to undo
                await service.stop()
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            with contextlib.suppress(Exception):
                await sub.aunsubscribe()
        client, self._client, self._ledger = self._client, None, None
        if client is not None:
            await client.aclose()

    def _extras_for(self, role: str) -> Callable[[], Mapping[str, object]]:
        def extras() -> Mapping[str, object]:
            waiting = sum(1 for waiter in self._waiters.values() if waiter.role == role)
            found: dict[str, object] = {"org": self.org, "role": role, "waiting_tasks": waiting}
            if self.organisation is not None:
                found["instances"] = len(self.organisation.agents.get(role, []))
            return found
        return extras

    def _handler_for(self, role: str) -> Callable[[Envelope, PromptStream], Awaitable[None]]:
        async def handler(envelope: Envelope, stream: PromptStream) -> None:
            await self._serve(role, envelope, stream)
        return handler

    # -- a prompt ----------------------------------------------------------------------
    def task_for(self, role: str, envelope: Envelope,
                 headers: Mapping[str, str] | None = None) -> Task:
        """The task a prompt to ``role`` becomes (ProtocolError, a 400, if it cannot)."""
        extras = envelope.extras
        prompt_id = extras.get(PROMPT_ID_FIELD) or (headers or {}).get(PROMPT_ID_HEADER)
        if prompt_id is not None and not (isinstance(prompt_id, str) and prompt_id):
            raise ProtocolError(f"'{PROMPT_ID_FIELD}' must be a non-empty string")
        details = extras.get(DETAILS_FIELD, {})
        if not isinstance(details, dict):
            raise ProtocolError(f"'{DETAILS_FIELD}' must be a JSON object")
        task_id = prompt_task_id(self.org, role, prompt_id) if prompt_id else f"sap-{new_id()}"
        try:
            return Task(id=task_id, org=self.org, role=role, title=envelope.prompt,
                        details=details, requested_by=REQUESTED_BY)
        except pydantic.ValidationError as error:
            raise ProtocolError(f"not a task: {error.errors()[0]['msg']}") from None

    async def _serve(self, role: str, envelope: Envelope, stream: PromptStream) -> None:
        client, ledger = self._client, self._ledger
        if client is None or ledger is None:
            raise RequestRejectedError(500, "the gateway is stopping")
        task = self.task_for(role, envelope, _headers.get())
        waiter = self._waiters.get(task.id)
        if waiter is None:  # a retry that lands while the first still waits joins it
            waiter = self._waiters[task.id] = _Waiter(
                role, asyncio.get_running_loop().create_future())
        notes: asyncio.Queue[str] = asyncio.Queue()
        waiter.listeners.append(notes)
        try:
            record = await ledger.aget(self.org, task.id)
            if record is not None:  # a retry of a prompt already answered: never run twice
                await stream.send(StatusChunk(status=f"recorded:{task.id}"))
            else:
                # Stored once per id within the stream's duplicate window, however often the
                # caller retries; then the role's agents take it whenever they can.
                await apublish_task(client, self.subjects, task)
                await stream.send(StatusChunk(status=f"queued:{task.id}"))
                record = await self._wait(task, waiter, notes, stream, ledger)
            await stream.send(json.dumps(record.get("result", {})))
        finally:
            waiter.listeners.remove(notes)
            if not waiter.listeners:
                self._waiters.pop(task.id, None)

    async def _wait(self, task: Task, waiter: _Waiter, notes: asyncio.Queue[str],
                    stream: PromptStream, ledger: TaskLedger) -> dict[str, Any]:
        """Forward progress until the task's record arrives; the SDK's keep-alive acks
        hold the caller's stream open meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        next_poll = loop.time() + self.ledger_poll
        while not waiter.outcome.done():
            now = loop.time()
            if now >= deadline:
                raise RequestRejectedError(
                    500, f"task {task.id} was not taken within {self.max_wait:g} s; it stays "
                         f"queued: prompt again with the same {PROMPT_ID_FIELD} to wait for it")
            if now >= next_poll:
                next_poll = now + self.ledger_poll
                record = await ledger.aget(self.org, task.id)
                if record is not None and not waiter.outcome.done():
                    waiter.outcome.set_result(("done", record))
                continue
            note = asyncio.ensure_future(notes.get())
            either: set[asyncio.Future[Any]] = {waiter.outcome, note}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED,
                                   timeout=min(next_poll, deadline) - now)
            finally:
                if not note.done():
                    note.cancel()
            if note.done() and not note.cancelled():
                await stream.send(StatusChunk(status=f"progress:{note.result()}"))
        while not notes.empty():  # progress noted before the record came goes out first
            await stream.send(StatusChunk(status=f"progress:{notes.get_nowait()}"))
        kind, value = waiter.outcome.result()
        if kind == "failed":
            raise RequestRejectedError(500, f"task {task.id} failed for good: {value}")
        return dict(value)

    # -- what the organisation says ------------------------------------------------------
    def _settle(self, task_id: Any, outcome: tuple[str, Any]) -> None:
        waiter = self._waiters.get(task_id) if isinstance(task_id, str) else None
        if waiter is not None and not waiter.outcome.done():
            waiter.outcome.set_result(outcome)

    async def _on_completed(self, msg: Message) -> None:
        try:
            record = msg.json()
        except ValueError:
            return
        if isinstance(record, dict):
            self._settle(record.get("task_id"), ("done", record))

    async def _on_progress(self, msg: Message) -> None:
        try:
            note = msg.json()
            payload = note.get("payload") or {}
            task_id, text = str(payload.get("task_id")), str(payload.get("text", ""))
        except (ValueError, AttributeError, TypeError):
            return
        waiter = self._waiters.get(task_id)
        if waiter is not None and note.get("type") == "task.progress":
            for listener in waiter.listeners:
                listener.put_nowait(text)

    async def _on_dead_letter(self, msg: Message) -> None:
        try:
            letter = msg.json()
            task_id = json.loads(letter["payload"]).get("id")
            why = f"{letter.get('reason')}: {letter.get('error')}"
        except (ValueError, KeyError, AttributeError, TypeError):
            return  # a base64 payload is no Task of ours
        self._settle(task_id, ("failed", why))

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<SynadiaGateway {self.org} {state}: {', '.join(self.roles)}>"


def serve_organisation(org: Organisation, **options: Any) -> SynadiaGateway:
    """Start a :class:`SynadiaGateway` for every role of ``org``, on ``org.lab``."""
    return SynadiaGateway(org.lab, org, **options).start()
