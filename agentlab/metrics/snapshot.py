"""What one scrape reads from the server: every stream, every durable consumer, every agent.

    snapshot = read_snapshot(client)              # a frozen Snapshot of plain rows
    snapshot.consumer("AGENT_TASKS", "cto").unprocessed       # not delivered yet
    [(a.role, a.instance) for a in snapshot.agents]           # who answered $SRV.STATS

The rows are the reports' own (:class:`~agentlab.reports.StreamRow`,
:class:`~agentlab.reports.ConsumerRow`, :class:`~agentlab.protocol.services.ServiceRow`), so
a number here is the number ``agentlab status`` prints.

**In a cluster every number comes from a leader.** Stream and consumer infos are JetStream
API answers (``$JS.API.STREAM.LIST``, ``$JS.API.CONSUMER.LIST``): the meta leader gathers
each stream's from the stream leader and each consumer's from the consumer leader. A
follower's own view, what its ``/jsz?consumers=true`` shows, is stale: a consumer's pending
count there can read 0 while the leader holds a queue of tasks. The oldest unprocessed
message is fetched with ``$JS.API.STREAM.MSG.GET`` (the stream leader) and never with a
direct get, which any replica may answer from a copy that is behind.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.jetstream import LIST_TIMEOUT
from ..errors import StreamNotFound
from ..protocol.services import DISCOVERY_TIMEOUT, ServiceRow, aservice_report
from ..reports import ConsumerRow, StreamRow, afind_oldest_unprocessed
from ..wire.messages import utc_now

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["READ_TIMEOUT", "Snapshot", "aread_snapshot", "read_snapshot"]

# A read that takes longer is given up (agentlab_nats_up 0): Prometheus gives a scrape 10 s
# by default, and a server that is down would otherwise hold a scrape for the JetStream
# list requests' 15 s, asked twice.
READ_TIMEOUT = 8.0


@dataclass(frozen=True)
class Snapshot:
    """One read of the server. ``error``: why the streams and consumers could not be read
    (they are then empty); ``services_error``: likewise for the agents."""

    streams: tuple[StreamRow, ...] = ()
    consumers: tuple[ConsumerRow, ...] = ()
    agents: tuple[ServiceRow, ...] = ()
    error: str | None = None
    services_error: str | None = None
    seconds: float = 0.0          # how long the read took
    read_at: float = 0.0          # time.monotonic() when it ended, for the scrape cache

    @property
    def ok(self) -> bool:
        return self.error is None

    def stream(self, name: str) -> StreamRow:
        for row in self.streams:
            if row.name == name:
                return row
        raise KeyError(f"no stream {name!r} in this snapshot "
                       f"(streams: {', '.join(r.name for r in self.streams) or 'none'})")

    def consumer(self, stream: str, name: str) -> ConsumerRow:
        for row in self.consumers:
            if row.stream == stream and row.name == name:
                return row
        raise KeyError(f"no durable consumer {name!r} on stream {stream!r} in this snapshot")


async def _aqueues(client: Client) -> tuple[tuple[StreamRow, ...], tuple[ConsumerRow, ...]]:
    infos = await client.js.astreams(timeout=LIST_TIMEOUT)
    streams = tuple(sorted((StreamRow.from_info(info) for info in infos), key=lambda r: r.name))
    consumers: list[ConsumerRow] = []
    for info in sorted(infos, key=lambda i: i.config.name or ""):
        name = info.config.name or ""
        if not info.state.consumer_count:
            continue
        try:
            listed = await client.js.aconsumers(name, timeout=LIST_TIMEOUT)
        except StreamNotFound:  # deleted since the list was taken
            continue
        taken_at = utc_now()
        for consumer in sorted(listed, key=lambda c: c.name):
            # Durable consumers only: ephemeral ones (ordered feeds, a js.read() snapshot,
            # this exporter's own dead-letter feed) come and go under random names, and a
            # series per name would grow without bound.
            if not consumer.config.durable_name:
                continue
            oldest = await afind_oldest_unprocessed(client, name, consumer, direct=False)
            consumers.append(ConsumerRow.from_info(consumer, info.state.messages, oldest,
                                                   taken_at))
    return streams, tuple(consumers)


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


async def aread_snapshot(client: Client, *, discovery_timeout: float = DISCOVERY_TIMEOUT,
                         timeout: float = READ_TIMEOUT) -> Snapshot:
    """Read streams, consumers and agents at once (the agents' answers are gathered for
    ``discovery_timeout`` seconds, while the queues are read), within ``timeout`` seconds.
    Never raises for the server's sake: a failure is in ``error`` / ``services_error``."""
    started = time.perf_counter()
    queues, services = await asyncio.gather(
        asyncio.wait_for(_aqueues(client), timeout),
        aservice_report(client, timeout=discovery_timeout), return_exceptions=True)
    if isinstance(queues, asyncio.TimeoutError):
        queues = TimeoutError(f"no answer from JetStream within {timeout:g} s")
    for outcome in (queues, services):
        if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
            raise outcome  # cancelled, interrupted: not the server's failure
    streams: tuple[StreamRow, ...] = ()
    consumers: tuple[ConsumerRow, ...] = ()
    error = services_error = None
    if isinstance(queues, BaseException):
        error = _reason(queues)
    else:
        streams, consumers = queues
    agents: tuple[ServiceRow, ...] = ()
    if isinstance(services, BaseException):
        services_error = _reason(services)
    else:
        agents = tuple(services.agents())
    return Snapshot(streams=streams, consumers=consumers, agents=agents, error=error,
                    services_error=services_error, seconds=time.perf_counter() - started,
                    read_at=time.monotonic())


def read_snapshot(client: Client, *, discovery_timeout: float = DISCOVERY_TIMEOUT,
                  timeout: float = READ_TIMEOUT) -> Snapshot:
    return client._bridge.run(aread_snapshot(client, discovery_timeout=discovery_timeout,
                                             timeout=timeout), operation="read_snapshot")
