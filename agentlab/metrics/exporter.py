"""``MetricsExporter``: Prometheus's ``/metrics`` of queues, dead letters and agents, over HTTP.

    exporter = MetricsExporter(lab, port=9477).start()   # http://127.0.0.1:9477/metrics
    print(exporter.text())                               # the same text, without HTTP
    exporter.stop()
    print(collect_text(lab))                             # one read, for a notebook cell

Each scrape reads the server (see :mod:`agentlab.metrics.snapshot`, cached for a second).
Two things are kept between scrapes because they cannot be read back cheaply:

- **dead letters**, counted from an ordered consumer on DEAD_LETTERS that replays the
  letters stored when the exporter starts, then follows new ones: each letter is read once,
  not once per scrape. Its subject names the source stream and consumer
  (``{root}.dlq.{stream}.{consumer}``), its body the reason.
- **handler durations**, a histogram fed by a subscription to ``{root}.org.*.tasks.completed``
  (each TaskCompleted's ``duration_ms``, labelled org and role): completions announced while
  the exporter runs. A task announced again (its worker crashed after recording it) counts
  once.

The exporter serves on its own registry, never prometheus-client's global one, so two
exporters (two servers, or a test beside a notebook) in one process do not mix.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ..core.lifecycle import Service
from ..core.subjects import Subjects
from ..errors import AgentlabError, MessageDecodeError, StreamNotFound
from ..org.streams import DLQ_STREAM
from ..protocol.services import DISCOVERY_TIMEOUT
from ._extra import MetricsExtraMissing
from .collector import CACHE_SECONDS, DeadLetterCounts, QueueCollector
from .snapshot import READ_TIMEOUT

try:
    from prometheus_client import (
        CollectorRegistry,
        Histogram,
        generate_latest,
        start_http_server,
    )
except ImportError as missing:  # pragma: no cover - the test environment installs it
    raise MetricsExtraMissing() from missing

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from ..core.client import Client
    from ..core.received import Message
    from ..core.streamdata import OrderedSubscription
    from ..core.subscription import Subscription

__all__ = ["DEFAULT_PORT", "DURATION_BUCKETS", "MetricsExporter", "MetricsPortUnavailable",
           "acollect_text", "collect_text"]

log = logging.getLogger("agentlab")

DEFAULT_PORT = 9477
# Handler durations, in seconds: from a reference role's milliseconds to a model's minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0)
REPLAY_TIMEOUT = 10.0   # how long a start waits for the dead letters already stored
_SEEN_TASKS = 10_000    # completions remembered, so an announcement made again counts once


class MetricsPortUnavailable(AgentlabError, OSError):
    """The exporter cannot listen on its port: taken (by another exporter, or anything else),
    or not this user's to take (below 1024)."""

    def __init__(self, host: str, port: int, reason: str):
        self.host, self.port = host, port
        super().__init__(
            f"Cannot serve metrics on {host}:{port}: {reason}. Pass another port "
            f"(`agentlab metrics --port {port + 1}`, or port=0 for any free one), or stop "
            f"whatever listens there (`lsof -i :{port}` names it).")


class MetricsExporter(Service):
    """Serves ``/metrics`` of ``client``'s server on ``host:port`` (``port=0``: a free one,
    ``port=None``: no HTTP, read ``text()``) until ``stop()``."""

    def __init__(self, client: Client, port: int | None = DEFAULT_PORT, *,
                 host: str = "127.0.0.1", subjects: Subjects | None = None,
                 cache_seconds: float = CACHE_SECONDS,
                 discovery_timeout: float = DISCOVERY_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT):
        self.client = client
        self._bridge = client._bridge
        self.host, self.port = host, port
        self.subjects = subjects or Subjects()
        self.registry = CollectorRegistry()
        self.dead_letters = DeadLetterCounts()
        self.collector = QueueCollector(client, cache_seconds=cache_seconds,
                                        discovery_timeout=discovery_timeout,
                                        read_timeout=read_timeout, dead_letters=self.dead_letters,
                                        before_read=self._afollow_dead_letters)
        self.registry.register(self.collector)
        self.durations = Histogram(
            "agentlab_handler_duration_seconds",
            "How long agents' handlers took per completed task (TaskCompleted.duration_ms), "
            "by org and role; counts the completions announced while this exporter runs.",
            ["org", "role"], buckets=DURATION_BUCKETS, registry=self.registry)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._completions: Subscription | None = None
        self._letters: OrderedSubscription | None = None
        self._caught_up: asyncio.Event | None = None
        self._following = False
        self._http: WSGIServer | None = None

    @property
    def url(self) -> str | None:
        """Where Prometheus scrapes, once started with a port: http://HOST:PORT/metrics."""
        if self._http is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._http.server_address[1]}/metrics"

    def text(self) -> str:
        """What a scrape of ``/metrics`` returns now (Prometheus's text format)."""
        return generate_latest(self.registry).decode()

    async def atext(self) -> str:
        await self.collector.asnapshot()  # read on the loop; collect() then uses this read
        return generate_latest(self.registry).decode()

    # -- the lifecycle ------------------------------------------------------------------
    async def _astart_service(self) -> None:
        self.dead_letters.clear()  # a start after a stop replays DEAD_LETTERS afresh
        self._completions = await self.client.asubscribe(
            self.subjects.tasks_completed("*"), self._on_completed)
        await self._afollow_dead_letters()
        if self._caught_up is not None:
            try:  # so that the first scrape counts the letters stored before the start
                await asyncio.wait_for(self._caught_up.wait(), REPLAY_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("agentlab metrics: DEAD_LETTERS was not replayed within %g s; "
                            "agentlab_dead_letters_total counts on as letters arrive",
                            REPLAY_TIMEOUT)
        if self.port is not None:
            self._http = self._serve(self.port)

    def _serve(self, port: int) -> WSGIServer:
        try:
            server, _thread = start_http_server(port, addr=self.host, registry=self.registry)
        except OSError as error:
            if error.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                reason = error.strerror or str(error)
                raise MetricsPortUnavailable(self.host, port, reason) from None
            raise
        return server

    async def _astop_service(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            # shutdown() waits out serve_forever's poll (up to 0.5 s): not on the loop.
            await asyncio.get_running_loop().run_in_executor(None, http.shutdown)
            http.server_close()
        letters, self._letters = self._letters, None
        completions, self._completions = self._completions, None
        self._caught_up = None
        try:
            if letters is not None:
                await letters.aclose()
            if completions is not None:
                await completions.aunsubscribe()
        except AgentlabError as error:  # the connection closed first: nothing left to undo
            log.info("agentlab metrics: feeds not closed (%s)", error)

    # -- the feeds ----------------------------------------------------------------------
    async def _afollow_dead_letters(self) -> None:
        """Start the dead-letter feed, if it is not running and DEAD_LETTERS exists."""
        if self._letters is not None or self._following:
            return
        self._following = True  # a scrape from another thread must not start a second feed
        try:
            try:
                info = await self.client.js.astream_info(DLQ_STREAM)
            except StreamNotFound:
                return  # no organisation declared it yet: the next scrape looks again
            self._caught_up = asyncio.Event()
            if not info.state.messages:
                self._caught_up.set()
            self._letters = await self.client.js.asubscribe_ordered(
                DLQ_STREAM, self.subjects.dlq_all(), self._on_letter, replay=True)
        finally:
            self._following = False

    async def _on_letter(self, msg: Message) -> None:
        # {root}.dlq.{stream}.{consumer}: the root may have dots, the last two tokens not.
        tokens = msg.subject.split(".")
        stream, consumer = (tokens[-2], tokens[-1]) if len(tokens) >= 3 else ("", "")
        reason = "unknown"
        try:
            body: Any = msg.json()
            if isinstance(body, dict) and isinstance(body.get("reason"), str):
                reason = body["reason"]
        except MessageDecodeError:
            pass  # counted all the same: it is in DEAD_LETTERS
        self.dead_letters.add(stream, consumer, reason)
        if msg.info.num_pending == 0 and self._caught_up is not None:
            self._caught_up.set()

    async def _on_completed(self, msg: Message) -> None:
        try:
            body: Any = msg.json()
        except MessageDecodeError:
            return
        if not isinstance(body, dict):
            return
        org, role, ms = body.get("org"), body.get("role"), body.get("duration_ms")
        if not (isinstance(org, str) and isinstance(role, str)
                and isinstance(ms, (int, float)) and not isinstance(ms, bool)):
            return  # not a TaskCompleted
        if self._seen_before(str(body.get("task_id", ""))):
            return
        self.durations.labels(org, role).observe(max(0.0, float(ms)) / 1000.0)

    def _seen_before(self, task_id: str) -> bool:
        if not task_id:
            return False
        with self._seen_lock:
            if task_id in self._seen:
                return True
            self._seen[task_id] = None
            if len(self._seen) > _SEEN_TASKS:
                self._seen.popitem(last=False)
        return False

    def __repr__(self) -> str:
        where = self.url or ("no HTTP" if self.port is None else f"{self.host}:{self.port}")
        return f"<MetricsExporter {where} {self.service_state}>"


def collect_text(client: Client, *, subjects: Subjects | None = None) -> str:
    """One scrape's text, for a notebook: queues, dead letters and agents now. The handler
    histogram is empty (it counts completions while an exporter runs: keep one running)."""
    with MetricsExporter(client, port=None, subjects=subjects) as exporter:
        return exporter.text()


async def acollect_text(client: Client, *, subjects: Subjects | None = None) -> str:
    async with MetricsExporter(client, port=None, subjects=subjects) as exporter:
        return await exporter.atext()
