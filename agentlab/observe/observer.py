"""The observer: one connection that taps the lab's traffic and polls JetStream state.

    obs = Observer(lab).start()        # its own connection, named "agentlab-observer"
    snap = obs.snapshot()              # LabSnapshot: flow + topology + stream/consumer state
    obs.flow(pattern="genbrain.agents.cto.>").to_mermaid()
    obs.stop()

It only reads (DESIGN.md decision 7): four subscriptions and, every ``poll_interval``
seconds, one stream report and one consumer report per stream that has consumers; every
``SERVICES_EVERY`` polls it asks ``$SRV.PING`` who is running (never again once the server
refuses it that subject). What each tap can and cannot see is listed in
``agentlab/observe/events.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from ..core.client import Client
from ..core.lifecycle import Service
from ..core.subjects import DEFAULT_ROOT, check_subscribe_subject
from ..errors import ClientClosed, PermissionDenied, StreamNotFound
from ..protocol.services import acollect_service_answers
from ..reports.columns import CONSUMER_COLUMNS, STREAM_COLUMNS
from ..telemetry import untraced
from .columns import row_key
from .events import API_AUDIT, creates_consumer
from .recorder import FlowRecorder, matcher
from .snapshots import FlowSnapshot, LabSnapshot, StateSnapshot, TopologySnapshot

log = logging.getLogger("agentlab")


class Observer(Service):
    """Taps ``{root}.>``, ``$JS.ACK.>``, ``$JS.EVENT.ADVISORY.>`` and (``deliveries=True``)
    ``_INBOX.>`` into a bounded FlowRecorder (``capacity`` events), and polls stream and
    consumer state every ``poll_interval`` seconds (``streams``: only these).

    ``subjects``: more subjects to tap beside the root's (``["tasks.summarize.assign"]``);
    ``replies``: record the answers to the requests it sees (on their reply inboxes). A
    tapped subject has a subscriber, the observer: a request to it no longer fails at once
    with NoResponders, so tap the subjects that have responders, not a wildcard over them."""

    def __init__(self, client: Client, *, root: str = DEFAULT_ROOT, capacity: int = 10_000,
                 poll_interval: float = 1.0, deliveries: bool = True,
                 streams: list[str] | None = None, name: str = "agentlab-observer",
                 subjects: list[str] | None = None, replies: bool = False):
        self.url = client.url
        self._source = client
        self.root = root
        self.poll_interval = poll_interval
        self.deliveries = deliveries
        self.only_streams = list(streams) if streams else None
        self.subjects = [check_subscribe_subject(s) for s in (subjects or ())]
        self.replies = replies
        self.name = name
        self.recorder = FlowRecorder(capacity, root=root, stream_of=self._stream_of,
                                     requests=replies)
        self.client: Client | None = None
        self._bridge = client._bridge
        self._subs: list[Any] = []
        self._poller: asyncio.Future | None = None
        self._state = StateSnapshot(streams=None)
        self._stream_subjects: list[tuple[str, Any]] = []
        self._stream_cache: dict[str, str] = {}
        self.poll_errors = 0
        self._services: tuple[tuple[str, str, str], ...] = ()
        self._ask_services = True  # until the server refuses this identity $SRV.PING

    # -- lifecycle ----------------------------------------------------------------------
    async def _astart_service(self) -> None:
        """start(): connect, subscribe the taps, take a first state poll."""
        self.client = await self._connect()
        await self._subscribe_taps()

    async def _astop_service(self) -> None:
        """stop(): unsubscribe and close the connection. Snapshots taken stay readable."""
        client, self.client = self.client, None
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self._subs.clear()  # closing the connection drops them
        if client is not None:
            await client.aclose()

    close, aclose = Service.stop, Service.astop

    @property
    def is_running(self) -> bool:
        # Its connection also closes when the one it was opened from does.
        return super().is_running and self.client is not None and not self.client.is_closed

    async def _connect(self) -> Client:
        # As the client it observes for: the same login (a tenant sees its own account only),
        # on a connection of its own so that its taps never slow the observed one.
        return await self._source.aconnect(self.name)

    async def _subscribe_taps(self) -> None:
        assert self.client is not None
        nc, rec, replies = self.client.nc, self.recorder, self.replies

        async def lab(msg: Any) -> None:
            rec.tap("lab", msg)

        async def ack(msg: Any) -> None:
            rec.tap("ack", msg)

        async def advisory(msg: Any) -> None:
            if msg.subject == API_AUDIT:                   # one per API call: count only,
                if creates_consumer(msg.data):            # but learn who made a consumer
                    rec.tap("api", msg)
                else:
                    rec.skip()
            else:
                rec.tap("advisory", msg)

        async def inbox(msg: Any) -> None:
            if msg.reply.startswith("$JS.ACK."):          # a consumer's delivery
                rec.tap("inbox", msg)
            elif replies:                                   # perhaps an answer
                rec.tap("reply", msg)
            else:                                          # replies, PubAcks, pull statuses
                rec.skip()

        taps = [(f"{self.root}.>", lab), ("$JS.ACK.>", ack), ("$JS.EVENT.ADVISORY.>", advisory)]
        taps += [(subject, lab) for subject in self.subjects]
        if self.deliveries or self.replies:
            taps.append(("_INBOX.>", inbox))
        for subject, cb in taps:
            self._subs.append(await nc.subscribe(subject, cb=cb))
        await nc.flush()
        await self._poll_once()
        self._poller = asyncio.ensure_future(self._poll_forever())

    def poll(self) -> None:
        """Read stream and consumer state now, rather than at the next ``poll_interval``
        (before a final snapshot, say, so that the views show the last messages too)."""
        if self.client is None:
            raise ClientClosed(f"observer of {self.root}")
        self._bridge.run(self._poll_once(), operation="poll")

    # -- reading ------------------------------------------------------------------------
    def flow(self, pattern: str = ">", *, limit: int = 40, hide_noise: bool = True,
             trace: str = "") -> FlowSnapshot:
        """The last ``limit`` events on subjects matching ``pattern``.

        ``hide_noise`` leaves out heartbeats and health metrics; ``trace`` keeps one trace:
        its id (a ``traceparent``'s, else a goal's correlation id) or its first characters.
        """
        return self.recorder.flow(pattern=pattern, limit=limit, hide_noise=hide_noise,
                                  trace=trace)

    def topology(self, *, hide_noise: bool = True) -> TopologySnapshot:
        return dataclasses.replace(self.recorder.topology(hide_noise=hide_noise),
                                   services=self._services)

    def state(self) -> StateSnapshot:
        """The latest polled stream/consumer state, with the current ack rates."""
        self.recorder.ingest()
        return dataclasses.replace(self._state, rates=self.recorder.rates(),
                                   owners=dict(self.recorder.owners))

    def snapshot(self, pattern: str = ">", *, limit: int = 40) -> LabSnapshot:
        return LabSnapshot(flow=self.flow(pattern, limit=limit), topology=self.topology(),
                           state=self.state())

    def _repr_html_(self) -> str:
        return self.snapshot()._repr_html_()

    def __rich__(self) -> Any:
        return self.snapshot().__rich__()

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever new events were ingested or state was polled."""
        return self.recorder.version, self._state.polls

    # -- which stream stores a subject ----------------------------------------------------
    def _stream_of(self, subject: str) -> str:
        found = self._stream_cache.get(subject)
        if found is None:
            found = next((name for name, match in self._stream_subjects if match(subject)), "")
            if len(self._stream_cache) > 4096:
                self._stream_cache.clear()
            self._stream_cache[subject] = found
        return found

    # -- polling ------------------------------------------------------------------------
    async def _poll_forever(self) -> None:
        while self.client is not None and not self.client.is_closed:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a server restart, a node stopped: try again later
                self.poll_errors += 1
                self._state = dataclasses.replace(
                    self._state, error=f"{type(error).__name__}: {error}",
                    polls=self._state.polls + 1)

    async def _poll_once(self) -> None:
        # An observer only reads: its polls ($JS.API, $SRV.PING) are no step of anyone's goal,
        # and traced they would bury the goals' traces under one trace per poll.
        with untraced():
            await self._apoll()

    async def _apoll(self) -> None:
        from ..reports.report import aconsumer_report, astream_report

        client = self.client
        if client is None:
            return
        streams = await astream_report(client, sort="name")
        if self.only_streams is not None:
            rows = tuple(r for r in streams.rows if r.name in self.only_streams)
            streams = dataclasses.replace(streams, rows=rows)
        subjects = [(row.name, matcher(s)) for row in streams.rows for s in row.subjects]
        if [n for n, _ in subjects] != [n for n, _ in self._stream_subjects]:
            self._stream_cache.clear()
        self._stream_subjects = subjects
        consumers = []
        for row in streams.rows:
            if row.consumers > 0:
                try:
                    consumers.append(await aconsumer_report(client, row.name))
                except StreamNotFound:
                    continue
        if self._ask_services and self._state.polls % SERVICES_EVERY == 0:
            try:
                self._services = await _running_services(client)
            except PermissionDenied:  # a tenant whose permissions leave $SRV out
                self._ask_services, self._services = False, ()
        previous = self._state
        changed, deltas = _changes(previous, streams, consumers)
        self._state = StateSnapshot(streams=streams, consumers=tuple(consumers),
                                    changed=frozenset(changed), deltas=deltas,
                                    taken_at=time.time(), polls=previous.polls + 1)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"  # its connection may have closed
        rec = self.recorder
        return (f"<Observer {state} events={rec.recorded} seen={rec.received} "
                f"dropped={rec.dropped} polls={self._state.polls}>")


# Agents come and go far less often than messages flow: ask who runs every few polls.
SERVICES_EVERY = 3


async def _running_services(client: Client) -> tuple[tuple[str, str, str], ...]:
    """(org, service, instance) of every micro service answering $SRV.PING now."""
    found = []
    for answer in await acollect_service_answers(client, "PING", timeout=0.1):
        meta = answer.get("metadata") or {}
        instance = meta.get("agentlab.instance") or meta.get("agentlab.pool") or \
            str(answer.get("id", ""))[:8]
        found.append((str(meta.get("agentlab.org", "")), str(answer.get("name", "?")),
                      str(instance)))
    return tuple(sorted(found))


def _changes(previous: StateSnapshot, streams: Any, consumers: list[Any]
             ) -> tuple[set[tuple[str, str]], dict[tuple[str, str], int]]:
    """The watched cells (``Column.watch``) that differ from the poll before, and by how much;
    a row new since then has all its watched cells changed, without a difference."""
    changed: set[tuple[str, str]] = set()
    deltas: dict[tuple[str, str], int] = {}
    if previous.streams is None:
        return changed, deltas
    pairs = [(row, STREAM_COLUMNS) for row in streams.rows] + \
        [(row, CONSUMER_COLUMNS) for report in consumers for row in report.rows]
    before = {row_key(row): row for row in (*previous.streams.rows, *previous.consumer_rows())}
    for row, spec in pairs:
        key = row_key(row)
        old = before.get(key)
        for column in spec.values():
            if not column.watch:
                continue
            now = column.value(row)
            if old is None or column.value(old) != now:
                changed.add((key, column.header))
                if old is not None:
                    deltas[(key, column.header)] = now - column.value(old)
    return changed, deltas
