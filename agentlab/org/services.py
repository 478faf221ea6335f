"""Every agent instance and tool worker pool as a NATS micro service (ADR-32, ``nats.micro``).

    $ nats micro ls                          # agentlab-agent-ceo, agentlab-agent-cto, ...
    $ nats req genbrain.agents.cto.svc.acme.delegate '{"title": "Design the API",
                                                      "requested_by": "billing"}'

An Agent registers when it starts and deregisters when it stops (``kill()`` too, as the
crash it stands for would end its connection); a ToolWorkerPool likewise. Registration is
best effort: a server that refuses ``$SRV`` subjects (a users-model tenant may subscribe to
its own root only) leaves the agent working but undiscoverable, never stopped.

Why here, in ``agentlab.org``, and not in ``agentlab.protocol`` above it: registration is
part of the agent's own lifecycle (start, stop, kill, a start that fails), and every Agent
must be findable however it was made, by an Organisation or by hand. The org may not import
the protocol layer, so the part that lives inside the lifecycle lives here; reading the
services back (``$SRV.PING``/``STATS`` over a server, the ``agentlab status`` table) is
``agentlab.protocol.services``.

Names, subjects and metadata (``nats micro info agentlab-agent-cto`` shows them):

- service ``agentlab-agent-{role}`` per role (ADR-32 names one interchangeable kind of
  service; a role's instances are that), ``agentlab-tool-{tool}`` per tool; characters
  outside ``[A-Za-z0-9_-]`` become ``_``. Version: agentlab's. Metadata:
  ``agentlab.kind`` ("agent" or "tool"), ``agentlab.protocol`` ("1"), ``agentlab.version``,
  and ``agentlab.org``/``agentlab.role``/``agentlab.instance`` for an agent,
  ``agentlab.tool``/``agentlab.pool``/``agentlab.workers`` for a pool.
- agent endpoints ``{root}.agents.{role}.svc.{org}.status`` and ``...delegate``, queue
  group ``{role}``: under the role's own namespace (which tenants' permissions already
  grant), with the org as a token because orgs in one account share a role's subjects, and
  one queue group so a role's replicas share each request (one task per delegate call).
- pool endpoint ``{root}.tools.svc.{tool}.stats``, queue group ``tool-{tool}``, beside
  ``tools.execute`` so TOOL_REQUESTS never stores its requests.
- ``$SRV.STATS``: each endpoint's ``data`` carries agentlab's counters: the status
  endpoint the agent's tasks (processed, in_flight, failed, redeliveries, errors, poison,
  duplicates_suppressed, and processing_time / average_processing_time of the tasks
  processed, in nanoseconds as ADR-32's own times), the delegate endpoint its calls
  (accepted, duplicates, rejected), a pool's stats endpoint its PoolStats and in_flight.
- A bad delegate body is answered with ADR-32's error headers, ``Nats-Service-Error``
  (what is wrong and how to fix it) and ``Nats-Service-Error-Code: 400``; a task that could
  not be stored, with code 503 (resend it with the same id: it is stored once).

The endpoints are subscriptions of their own, made at start: nothing here is on the path a
task takes through the agent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from nats.micro import add_service
from nats.micro.request import Request, ServiceError
from nats.micro.service import EndpointStats
from nats.micro.service import Service as MicroService
from pydantic import Field

from ..errors import AgentlabError, MessageDecodeError
from ..wire.messages import WireModel, decode_model, register_wire_model, to_bytes
from .delegation import apublish_task
from .models import SubjectToken, Task, TaskId

if TYPE_CHECKING:
    from ..core.client import Client
    from .agent import Agent
    from .toolworkers import ToolWorkerPool

__all__ = ["AGENT_SERVICE_PREFIX", "SERVICE_PROTOCOL", "TOOL_SERVICE_PREFIX", "DelegateAccepted",
           "DelegateRequest", "MicroService", "aderegister", "agent_service_name",
           "aregister_agent", "aregister_tool_pool", "task_from_delegate_request",
           "tool_service_name"]

log = logging.getLogger("agentlab")

SERVICE_PROTOCOL = "1"  # bumped when the endpoints or their bodies change incompatibly
AGENT_SERVICE_PREFIX = "agentlab-agent-"
TOOL_SERVICE_PREFIX = "agentlab-tool-"
BAD_REQUEST, UNAVAILABLE = "400", "503"
# A stop must not hang on a connection that is reconnecting: drain waits for a round trip.
DEREGISTER_TIMEOUT = 2.0

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]")
_SEMVER_CORE = re.compile(r"\d+\.\d+\.\d+")
_DELEGATE_EXAMPLE = ('{"title": "Design the API", "requested_by": "billing", '
                     '"details": {}, "id": "optional-task-id"}')


@register_wire_model
class DelegateRequest(WireModel):
    """The body of a request to ``{root}.agents.{role}.svc.{org}.delegate``."""

    title: str = Field(min_length=1, description="What the task is.")
    requested_by: SubjectToken = Field(
        min_length=1, description="The caller's role: progress notes go to its inbox.")
    details: dict[str, Any] = Field(default_factory=dict)
    id: TaskId | None = Field(default=None, min_length=1,
                              description="The task id; resending the same id stores it once.")


@register_wire_model
class DelegateAccepted(WireModel):
    """The answer to a delegate request: where the task is stored, and whether it was there."""

    task_id: str
    stream: str
    seq: int
    duplicate: bool = False


def agent_service_name(role: str) -> str:
    return AGENT_SERVICE_PREFIX + _NOT_IN_NAME.sub("_", role)


def tool_service_name(tool: str) -> str:
    return TOOL_SERVICE_PREFIX + _NOT_IN_NAME.sub("_", tool)


def _package_version() -> str:
    # The root package holds the one written version and is always imported before its
    # subpackages; importing it by name would make org depend on every layer it imports.
    return str(getattr(sys.modules.get(__name__.split(".")[0]), "__version__", "0.0.0"))


def _semver(version: str) -> str:
    # ADR-32 versions are semver; a PEP 440 version such as "0.2.0.dev1" is not.
    found = _SEMVER_CORE.match(version)
    return found.group(0) if found else "0.0.0"


def _one_line(text: str) -> str:
    # A header value: no line breaks, and short enough for any client to show.
    return " ".join(text.split())[:500]


def task_from_delegate_request(data: bytes, *, org: str, role: str) -> Task:
    """The task a delegate body asks for; ServiceError 400 naming the field and the fix."""
    try:
        # The model checks what ends up in subjects and ledger keys (requested_by, id), so
        # a bad body is refused here instead of becoming a poison task.
        request = decode_model(data, DelegateRequest)
    except MessageDecodeError as error:
        raise ServiceError(BAD_REQUEST, _one_line(
            f"bad delegate request: {error.reason}; send a JSON object such as "
            f"{_DELEGATE_EXAMPLE} (details and id may be left out)")) from None
    extra: dict[str, Any] = {"id": request.id} if request.id is not None else {}
    return Task(org=org, role=role, title=request.title, details=request.details,
                requested_by=request.requested_by, **extra)


# -- agents -------------------------------------------------------------------------------
def _task_counters(agent: Agent) -> dict[str, int]:
    stats = agent.stats
    processed, spent = stats["processed"], stats["processing_ns"]
    return {"processed": processed, "in_flight": agent.in_flight, "failed": stats["failed"],
            "redeliveries": stats["redeliveries"], "errors": stats["errors"],
            "poison": stats["poison"], "duplicates_suppressed": stats["duplicates_suppressed"],
            "processing_time": spent,
            "average_processing_time": spent // processed if processed else 0}


async def aregister_agent(agent: Agent) -> MicroService | None:
    """Register ``agent`` as ``agentlab-agent-{role}``; None (logged) if the server refused."""
    calls: Counter[str] = Counter()

    async def status(request: Request) -> None:
        await request.respond(to_bytes(agent.status()))

    async def delegate(request: Request) -> None:
        try:
            task = task_from_delegate_request(request.data, org=agent.org, role=agent.role)
        except ServiceError:
            calls["rejected"] += 1
            raise  # nats.micro answers it with the error headers and counts the error
        try:
            receipt = await apublish_task(agent.client, agent.subjects, task)
        except AgentlabError as error:  # no stream, no answer, denied, closed
            raise ServiceError(UNAVAILABLE, _one_line(
                f"task {task.id} was not stored ({type(error).__name__}: {error}); resend "
                "the same request with \"id\": the task is stored once")) from None
        calls["duplicates" if receipt.duplicate else "accepted"] += 1
        await request.respond(to_bytes(DelegateAccepted(
            task_id=task.id, stream=receipt.stream, seq=receipt.seq,
            duplicate=receipt.duplicate)))

    def endpoint_data(endpoint: EndpointStats) -> dict[str, int]:
        if endpoint.name == "delegate":
            return {"accepted": calls["accepted"], "duplicates": calls["duplicates"],
                    "rejected": calls["rejected"]}
        return _task_counters(agent)

    version = _package_version()
    metadata = {"agentlab.kind": "agent", "agentlab.protocol": SERVICE_PROTOCOL,
                "agentlab.version": version, "agentlab.org": agent.org,
                "agentlab.role": agent.role, "agentlab.instance": agent.instance}
    subject = agent.subjects.agent_service
    endpoints = [
        ("status", status, subject(agent.role, agent.org, "status"),
         "Answers role, instance, org, status, processed and in_flight."),
        ("delegate", delegate, subject(agent.role, agent.org, "delegate"),
         "A DelegateRequest becomes a durable task for this role; answers DelegateAccepted."),
    ]
    return await _aregister(
        agent.client, f"agent {agent.instance}", endpoints, queue_group=agent.role,
        name=agent_service_name(agent.role), version=_semver(version), metadata=metadata,
        description=f"agentlab agent {agent.instance}: the {agent.role} role of org "
                    f"{agent.org}", stats_handler=endpoint_data)


# -- tool worker pools --------------------------------------------------------------------
def _pool_counters(pool: ToolWorkerPool) -> dict[str, Any]:
    stats = asdict(pool.stats)
    # Each attempt counted in calls ends as ok, an error or a retry; the rest are running.
    stats["in_flight"] = max(0, stats["calls"] - stats["ok"] - stats["errors"] - stats["retries"])
    return stats


async def aregister_tool_pool(pool: ToolWorkerPool) -> MicroService | None:
    """Register ``pool`` as ``agentlab-tool-{tool}``; None (logged) if the server refused."""

    async def stats(request: Request) -> None:
        await request.respond(to_bytes(_pool_counters(pool)))

    version = _package_version()
    metadata = {"agentlab.kind": "tool", "agentlab.protocol": SERVICE_PROTOCOL,
                "agentlab.version": version, "agentlab.tool": pool.tool,
                "agentlab.pool": pool.name, "agentlab.workers": str(pool.workers)}
    endpoints = [("stats", stats, pool.subjects.tool_service(pool.tool, "stats"),
                  "Answers the pool's PoolStats and how many calls are in flight.")]
    return await _aregister(
        pool.client, f"tool pool {pool.name}", endpoints, queue_group=f"tool-{pool.tool}",
        name=tool_service_name(pool.tool), version=_semver(version), metadata=metadata,
        description=f"agentlab tool worker pool {pool.name} for tool '{pool.tool}'",
        stats_handler=lambda endpoint: _pool_counters(pool))


# -- both ---------------------------------------------------------------------------------
# name, handler, subject, what it does (the endpoint's metadata)
Endpoint = tuple[str, Callable[[Request], Awaitable[None]], str, str]


async def _aregister(client: Client, owner: str, endpoints: Sequence[Endpoint], *,
                     queue_group: str, name: str, version: str, metadata: dict[str, str],
                     description: str, stats_handler: Callable[[EndpointStats], Any]
                     ) -> MicroService | None:
    service: MicroService | None = None
    mark = client._violations.mark()
    try:
        # On the bridge loop, on the component's own connection: $SRV.PING/INFO/STATS
        # (all, by name, by id) and one subscription per endpoint.
        service = await add_service(client.nc, name=name, version=version,
                                    description=description, metadata=metadata,
                                    queue_group=queue_group, stats_handler=stats_handler)
        for endpoint, handler, subject, what in endpoints:
            await service.add_endpoint(name=endpoint, handler=handler, subject=subject,
                                       metadata={"agentlab.description": what})
        await client.aflush()  # answering before start() returns
        # nats-py reports a refused subscription only to the error callback: ask the log.
        for subject in ("$SRV.PING", *(subject for _, _, subject, _ in endpoints)):
            client._violations.raise_if_denied("subscribe to", subject, since=mark)
    except Exception as error:  # noqa: BLE001  (whatever it was, the agent works on)
        log.warning("%s: not registered as NATS micro service %s (%s); it works on, "
                    "undiscoverable", owner, name, error)
        await aderegister(service, owner)
        return None
    return service


async def aderegister(service: MicroService | None, owner: str) -> None:
    """Stop answering ``$SRV`` and the endpoints; a closed connection has done it already."""
    if service is None:
        return
    try:
        await asyncio.wait_for(service.stop(), DEREGISTER_TIMEOUT)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001  (closed or reconnecting: the server drops it)
        log.info("%s: micro service not deregistered (%s)", owner, error)
