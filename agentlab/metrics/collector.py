"""The prometheus-client collector: each scrape turns a (cached) Snapshot into metric families.

    registry = CollectorRegistry()
    registry.register(QueueCollector(client))          # reads the server on each scrape
    print(generate_latest(registry).decode())

A scrape reads the server at most once per ``cache_seconds`` (1 s): concurrent scrapes, or
two Prometheus servers scraping the same exporter, share one read instead of each asking
for every stream, every consumer and every agent. What the collector emits, and each
metric's meaning, is in ``METRICS`` below (the HELP lines a scrape carries).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import AgentlabError
from ..protocol.services import DISCOVERY_TIMEOUT
from ._extra import MetricsExtraMissing
from .snapshot import READ_TIMEOUT, Snapshot, aread_snapshot

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as missing:  # pragma: no cover - the test environment installs it
    raise MetricsExtraMissing() from missing

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["METRICS", "DeadLetterCounts", "MetricSpec", "QueueCollector", "families"]

log = logging.getLogger("agentlab")
CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class MetricSpec:
    name: str                   # a counter's without "_total": prometheus-client adds it
    kind: str                   # "gauge" or "counter"
    labels: tuple[str, ...]
    help: str

    def family(self) -> GaugeMetricFamily | CounterMetricFamily:
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=self.labels)
        return GaugeMetricFamily(self.name, self.help, labels=self.labels)


_STREAM, _CONSUMER, _AGENT = ("stream",), ("stream", "consumer"), ("org", "role", "instance")
METRICS = {spec.name: spec for spec in (
    MetricSpec("agentlab_nats_up", "gauge", (),
               "1 if this scrape read the server's streams and consumers, 0 if it could not "
               "(the exporter logs why); the queue metrics are missing while it is 0."),
    MetricSpec("agentlab_scrape_duration_seconds", "gauge", (),
               "How long reading the server took (streams, consumers and the agents' "
               "$SRV.STATS answers, which are gathered for half a second)."),
    MetricSpec("agentlab_stream_messages", "gauge", _STREAM,
               "Messages stored in the JetStream stream now (from its leader)."),
    MetricSpec("agentlab_stream_bytes", "gauge", _STREAM,
               "Bytes stored in the JetStream stream now (from its leader)."),
    MetricSpec("agentlab_stream_consumers", "gauge", _STREAM,
               "Consumers the stream has, ephemeral ones included."),
    MetricSpec("agentlab_consumer_pending_messages", "gauge", _CONSUMER,
               "Messages in the stream that this durable consumer has not delivered yet "
               "(num_pending, the nats CLI's Unprocessed, read from the consumer's leader). "
               "It grows while nobody works the queue: a role scaled to zero."),
    MetricSpec("agentlab_consumer_ack_pending_messages", "gauge", _CONSUMER,
               "Messages delivered to a worker and not acknowledged yet (being worked on, "
               "or lost with a crashed worker until ack_wait runs out)."),
    MetricSpec("agentlab_consumer_redelivered_messages", "gauge", _CONSUMER,
               "Messages delivered more than once that are still not acknowledged: retries "
               "in progress (a handler failing, a worker that died)."),
    MetricSpec("agentlab_consumer_oldest_unprocessed_age_seconds", "gauge", _CONSUMER,
               "Age of the oldest message this consumer has not acknowledged yet (0 when "
               "all is done): how long the slowest waiting task has waited."),
    MetricSpec("agentlab_consumer_waiting_pulls", "gauge", _CONSUMER,
               "Pull requests parked at the server for this consumer: roughly, the idle "
               "workers ready to take its next message."),
    MetricSpec("agentlab_dead_letters", "counter", ("stream", "consumer", "reason"),
               "Dead letters written to DEAD_LETTERS, by the stream and consumer the message "
               "came from and why (max_deliveries, poison, given_up). Counts the letters "
               "there when the exporter started and every one since; a redrive does not "
               "lower it (agentlab_stream_messages{stream=\"DEAD_LETTERS\"} is what waits)."),
    MetricSpec("agentlab_agent_up", "gauge", _AGENT,
               "1 for each agent instance that answered $SRV.STATS in this scrape. A stopped "
               "or crashed instance's series disappears: count by (role) gives instances up."),
    MetricSpec("agentlab_tasks_processed", "counter", _AGENT,
               "Tasks this agent instance completed (its handler returned and the result was "
               "recorded), since the instance started."),
    MetricSpec("agentlab_tasks_failed", "counter", _AGENT,
               "Task attempts whose handler raised, since the instance started; each is "
               "retried until max_deliver, then dead-lettered."),
    MetricSpec("agentlab_tasks_in_flight", "gauge", _AGENT,
               "Tasks this agent instance is working on now."),
)}


class DeadLetterCounts:
    """How many dead letters were seen, per (source stream, consumer, reason); thread-safe:
    fed on the loop, read by scrapes on the HTTP server's threads."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, stream: str, consumer: str, reason: str) -> None:
        with self._lock:
            self._counts[(stream, consumer, reason)] += 1

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()

    def items(self) -> list[tuple[tuple[str, str, str], int]]:
        with self._lock:
            return sorted(self._counts.items())


def families(snapshot: Snapshot, dead_letters: DeadLetterCounts | None = None
             ) -> list[Metric]:
    """The metric families of one snapshot (and the dead-letter counts, if kept)."""
    made = {name: spec.family() for name, spec in METRICS.items()}

    def add(name: str, labels: Iterable[str], value: float) -> None:
        made[name].add_metric(list(labels), value)

    add("agentlab_nats_up", (), 1.0 if snapshot.ok else 0.0)
    add("agentlab_scrape_duration_seconds", (), snapshot.seconds)
    for stream in snapshot.streams:
        add("agentlab_stream_messages", (stream.name,), stream.messages)
        add("agentlab_stream_bytes", (stream.name,), stream.bytes)
        add("agentlab_stream_consumers", (stream.name,), stream.consumers)
    for row in snapshot.consumers:
        labels = (row.stream, row.name)
        add("agentlab_consumer_pending_messages", labels, row.unprocessed)
        add("agentlab_consumer_ack_pending_messages", labels, row.ack_pending)
        add("agentlab_consumer_redelivered_messages", labels, row.redelivered)
        add("agentlab_consumer_oldest_unprocessed_age_seconds", labels,
            row.oldest_unprocessed_age or 0.0)
        add("agentlab_consumer_waiting_pulls", labels, row.waiting)
    for letter_labels, count in (dead_letters.items() if dead_letters else ()):
        add("agentlab_dead_letters", letter_labels, count)
    seen: set[tuple[str, str, str]] = set()
    for agent in snapshot.agents:
        labels3 = (agent.org, agent.role, agent.instance)
        if labels3 in seen:  # two answers from one instance (a reconnect): count it once
            continue
        seen.add(labels3)
        add("agentlab_agent_up", labels3, 1.0)
        status = agent.data("status")
        for name, value in (("agentlab_tasks_processed", agent.processed),
                            ("agentlab_tasks_failed", status.get("failed")),
                            ("agentlab_tasks_in_flight", agent.in_flight)):
            if isinstance(value, int) and not isinstance(value, bool):
                add(name, labels3, value)
    return list(made.values())


class QueueCollector:
    """A prometheus-client custom collector of streams, consumers, dead letters and agents.

    ``before_read`` (a coroutine function) runs on the loop before each read of the server:
    the exporter uses it to start its dead-letter feed once DEAD_LETTERS exists.
    """

    def __init__(self, client: Client, *, cache_seconds: float = CACHE_SECONDS,
                 discovery_timeout: float = DISCOVERY_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT,
                 dead_letters: DeadLetterCounts | None = None,
                 before_read: Callable[[], Awaitable[None]] | None = None):
        self.client = client
        self.cache_seconds = cache_seconds
        self.discovery_timeout = discovery_timeout
        self.read_timeout = read_timeout
        self.dead_letters = dead_letters
        self._before_read = before_read
        self._last: Snapshot | None = None
        self._last_error: str | None = None
        self._lock = threading.Lock()      # guards _last
        self._reading = threading.Lock()   # one read at a time; only scrape threads wait on it

    def _fresh(self) -> Snapshot | None:
        with self._lock:
            last = self._last
        if last is not None and time.monotonic() - last.read_at < self.cache_seconds:
            return last
        return None

    async def _aread(self) -> Snapshot:
        if self._before_read is not None:
            try:
                await asyncio.wait_for(self._before_read(), self.read_timeout)
            except Exception as error:  # noqa: BLE001  (the read below reports the server)
                log.info("agentlab metrics: before the read: %s", error)
        snapshot = await aread_snapshot(self.client, discovery_timeout=self.discovery_timeout,
                                        timeout=self.read_timeout)
        problem = snapshot.error or snapshot.services_error
        if problem != self._last_error and problem is not None:
            log.warning("agentlab metrics: could not read %s from %s (%s); the next scrape "
                        "tries again", "the streams" if snapshot.error else "the agents",
                        self.client.name, problem)
        self._last_error = problem
        with self._lock:
            self._last = snapshot
        return snapshot

    def snapshot(self) -> Snapshot:
        """The latest read of the server, read again if older than ``cache_seconds``."""
        if self.client._bridge.in_loop_thread():
            # On the loop (a scrape from async code) a blocking read would deadlock: the
            # async path (asnapshot) reads first, so the last read is fresh.
            return self._last or Snapshot(error="not read yet")
        with self._reading:  # a scrape arriving during a read waits for it and shares it
            fresh = self._fresh()
            if fresh is not None:
                return fresh
            try:
                return self.client._bridge.run(self._aread(), operation="metrics")
            except AgentlabError as error:  # the connection closed: a scrape still answers
                return Snapshot(error=f"{type(error).__name__}: {error}",
                                read_at=time.monotonic())

    async def asnapshot(self) -> Snapshot:
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        return await self.client._bridge.arun(self._aread())

    # -- the prometheus-client Collector protocol -------------------------------------
    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry learns the names without a read."""
        for spec in METRICS.values():
            yield spec.family()

    def collect(self) -> Iterator[Metric]:
        yield from families(self.snapshot(), self.dead_letters)
