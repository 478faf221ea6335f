"""The NATS micro services a server has (ADR-32), read as ``nats micro ls`` and ``stats`` do.

    report = service_report(client)     # asks $SRV.STATS, gathers answers for 0.5 s
    print(report)                       # Service, ID, Org, Role, Instance, Processed, In Flight
    report.agents(org="acme")           # the rows of one org's agent instances
    await acollect_service_answers(client, "INFO", "agentlab-agent-cto")   # raw answers

Every agent instance and tool worker pool registers itself when it starts
(:mod:`agentlab.org.services`, which says why registration lives in the org layer); this
module only reads, so it finds any other micro service too (the Synadia agents service,
a Go service), with blank org, role and counters where the service has none of agentlab's.
``agentlab status`` prints this report after the stream and consumer reports.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..errors import NoMessage
from ..reports.columns import Column
from ..reports.render import TableView, format_count

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["DISCOVERY_TIMEOUT", "ServiceReport", "ServiceRow", "acollect_service_answers",
           "aservice_report", "collect_service_answers", "service_report"]

DISCOVERY_TIMEOUT = 0.5  # how long answers are gathered: every instance answers, none says "done"
Verb = Literal["PING", "INFO", "STATS"]


async def acollect_service_answers(client: Client, verb: Verb = "PING", name: str | None = None,
                                   *, timeout: float = DISCOVERY_TIMEOUT) -> list[dict[str, Any]]:
    """Every answer to ``$SRV.{verb}`` (or ``$SRV.{verb}.{name}``) within ``timeout`` s."""
    subject = f"$SRV.{verb}" + (f".{name}" if name else "")
    inbox = client.nc.new_inbox()  # under the connection's inbox prefix, as a tenant needs
    sub = await client.asubscribe(inbox)
    answers: list[dict[str, Any]] = []
    try:
        await client.apublish(subject, b"", reply=inbox)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.anext(timeout=left)
            except (NoMessage, asyncio.TimeoutError):
                break
            if "Status" in msg.headers:  # the server's "no responders": nobody is listening
                continue
            try:
                answer = json.loads(msg.data)
            except ValueError:
                continue  # not a micro service's answer: someone else's responder
            if isinstance(answer, dict):
                answers.append(answer)
    finally:
        await sub.aunsubscribe()
    return answers


def collect_service_answers(client: Client, verb: Verb = "PING", name: str | None = None, *,
                            timeout: float = DISCOVERY_TIMEOUT) -> list[dict[str, Any]]:
    return client._bridge.run(acollect_service_answers(client, verb, name, timeout=timeout),
                              operation="collect_service_answers")


@dataclass(frozen=True)
class ServiceRow:
    """One service instance, from its ``$SRV.STATS`` answer."""

    service: str
    id: str
    version: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)
    endpoints: tuple[Mapping[str, Any], ...] = ()

    @property
    def kind(self) -> str:
        """"agent", "tool", or "" for a service that is not agentlab's."""
        return self.metadata.get("agentlab.kind", "")

    @property
    def org(self) -> str:
        return self.metadata.get("agentlab.org", "")

    @property
    def role(self) -> str:
        return self.metadata.get("agentlab.role", "")

    @property
    def instance(self) -> str:
        return self.metadata.get("agentlab.instance") or self.metadata.get("agentlab.pool", "")

    def data(self, endpoint: str) -> Mapping[str, Any]:
        """What ``endpoint`` reported in its STATS ``data`` ({} if nothing)."""
        for entry in self.endpoints:
            if entry.get("name") == endpoint and isinstance(entry.get("data"), Mapping):
                return entry["data"]
        return {}

    @property
    def processed(self) -> int | None:
        """Tasks an agent completed, calls a tool pool answered; None for another service."""
        if self.kind == "agent":
            return _int(self.data("status").get("processed"))
        if self.kind == "tool":
            stats = self.data("stats")
            ok, errors = _int(stats.get("ok")), _int(stats.get("errors"))
            return None if ok is None or errors is None else ok + errors
        return None

    @property
    def in_flight(self) -> int | None:
        endpoint = {"agent": "status", "tool": "stats"}.get(self.kind)
        return _int(self.data(endpoint).get("in_flight")) if endpoint else None

    @classmethod
    def from_stats(cls, answer: Mapping[str, Any]) -> ServiceRow:
        metadata = answer.get("metadata") or {}
        endpoints = answer.get("endpoints") or []
        return cls(service=str(answer.get("name", "")), id=str(answer.get("id", "")),
                   version=str(answer.get("version", "")),
                   metadata={str(k): str(v) for k, v in metadata.items()}
                   if isinstance(metadata, Mapping) else {},
                   endpoints=tuple(e for e in endpoints if isinstance(e, Mapping))
                   if isinstance(endpoints, list) else ())


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: int | None) -> str:
    return "" if value is None else format_count(value)


SERVICE_COLUMNS: tuple[Column[ServiceRow], ...] = (
    Column("Service", "service", bold=True, tip="The service's ADR-32 name (nats micro ls)"),
    Column("ID", "id", tip="This instance's id: $SRV.INFO.<service>.<id> asks it alone"),
    Column("Org", "org", tip="The organisation of an agentlab agent"),
    Column("Role", "role", tip="The agent's role"),
    Column("Instance", "instance", tip="The agent instance, or the tool worker pool"),
    Column("Processed", "processed", _count, numeric=True,
           tip="Tasks the agent completed, or calls the pool answered"),
    Column("In Flight", "in_flight", _count, numeric=True, tip="Being worked on now"),
)


@dataclass(frozen=True, repr=False)
class ServiceReport(TableView):
    """Every service instance that answered ``$SRV.STATS``: agentlab's agents first (by
    org, role, instance), then its tool pools, then any other service."""

    rows: tuple[ServiceRow, ...]
    title_prefix: ClassVar[str] = "NATS micro services"

    @property
    def title(self) -> str:
        return f"{self.title_prefix}: {format_count(len(self.rows))} answered $SRV.STATS"

    def table_columns(self) -> tuple[Column[ServiceRow], ...]:
        return SERVICE_COLUMNS

    def table_rows(self) -> Sequence[ServiceRow]:
        return self.rows

    def agents(self, *, org: str | None = None, role: str | None = None) -> list[ServiceRow]:
        """The agent instances, of ``org`` and ``role`` if given."""
        return [row for row in self.rows if row.kind == "agent"
                and (org is None or row.org == org) and (role is None or row.role == role)]

    def __len__(self) -> int:
        return len(self.rows)


def _order(row: ServiceRow) -> tuple[int, str, str, str, str, str]:
    rank = {"agent": 0, "tool": 1}.get(row.kind, 2)
    return rank, row.org, row.role, row.instance, row.service, row.id


async def aservice_report(client: Client, *, timeout: float = DISCOVERY_TIMEOUT
                          ) -> ServiceReport:
    answers = await acollect_service_answers(client, "STATS", timeout=timeout)
    rows = sorted((ServiceRow.from_stats(answer) for answer in answers), key=_order)
    return ServiceReport(rows=tuple(rows))


def service_report(client: Client, *, timeout: float = DISCOVERY_TIMEOUT) -> ServiceReport:
    """Ask ``$SRV.STATS`` and gather the answers for ``timeout`` seconds."""
    return client._bridge.run(aservice_report(client, timeout=timeout),
                              operation="service_report")
