"""Health and scaling signals: what seed 002 says to watch, published where seed 000 puts it.

    monitor = HealthMonitor(client, interval=1.0, heartbeat_interval=5.0).start()
    monitor.snapshot()          # the latest SystemMetrics: every queue and every agent
    monitor.stop()

Every ``interval`` seconds the monitor, running on agentlab's loop thread, does three things:

* **metrics** — for each consumer of the watched streams (the reference streams by default)
  it reads pending, ack pending, redelivered, depth, the oldest unprocessed message's age
  (see ``agentlab.reports.report``) and how many workers are attached, and publishes one
  ``SystemMetrics`` on ``{root}.org.system.metrics``.
* **scaling** — when a queue's depth (not delivered + delivered but not acked) reaches
  ``scale_threshold`` it publishes one ``ScalingSignal`` "scale_up" on
  ``{root}.org.system.scaling``; when the depth falls back below ``scale_down_below``
  (default: the threshold) one "scale_down". Edge-triggered: one signal per crossing, not
  one per tick. With ``idle_after`` set, a queue that stayed empty, with workers still
  attached, for that many seconds gets one "scale_to_zero": its agents can stop, and the
  stream keeps any task that arrives later until one starts again (seed 000).
* **health** — it listens to every agent's heartbeat, batched (``Heartbeats`` on
  ``{root}.agents.heartbeats``: every agent of a process in one message, what agentlab's
  agents send) or alone (``{root}.agents.*.heartbeat``: agents of other kinds), and
  publishes an ``AgentHealth`` on ``{root}.org.system.health`` whenever an instance changes
  state: "up" on its first beat (or its first after being down), "down" once it has been
  silent for ``down_after`` seconds (default three heartbeat intervals). The metrics carry
  the state of every instance each tick, for views that start late.

"Attached" workers of a consumer: the larger of the live agent instances whose role is the
consumer's name (an agent's durable consumer is named after its role) and the pull requests
parked at the server for it (``num_waiting``; each pulling worker keeps at most one), or 1
for a push consumer with a bound subscriber. Zero attached with a growing depth is seed 002's
"zero consumers means messages are building up with no one to process them".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..core.lifecycle import Service
from ..core.subjects import Subjects
from ..errors import MessageDecodeError, StreamNotFound
from ..reports.report import ConsumerRow, aconsumer_report
from ..telemetry import untraced
from ..wire.messages import UtcDatetime, WireModel, register_wire_model, utc_now
from .models import Heartbeat, Heartbeats, OrgToken, SubjectToken

if TYPE_CHECKING:
    from ..core.client import Client
    from ..core.received import Message
    from ..core.subscription import Subscription

log = logging.getLogger("agentlab")

Recommendation = Literal["scale_up", "scale_down", "scale_to_zero"]

__all__ = ["HealthMonitor", "SystemMetrics", "QueueMetrics", "AgentHealth", "ScalingSignal"]


# -- wire models --------------------------------------------------------------------------
@register_wire_model
class QueueMetrics(WireModel):
    """One consumer's queue, as seen at one tick."""

    stream: str
    consumer: str
    pending: int = Field(description="Not delivered yet (num_pending).")
    ack_pending: int = Field(description="Delivered, waiting for an ack (num_ack_pending).")
    redelivered: int = Field(description="Delivered more than once (num_redelivered).")
    depth: int = Field(description="pending + ack_pending: what the consumer still has to do.")
    oldest_unprocessed_age: float | None = Field(
        default=None, description="Seconds since the oldest unacknowledged message was stored.")
    waiting: int = Field(default=0, description="Pull requests parked at the server.")
    push_bound: bool = False
    instances: int = Field(default=0, description="Live agent instances of the role.")
    attached: int = Field(default=0, description="Workers attached (see the module notes).")


@register_wire_model
class AgentHealth(WireModel):
    """One agent instance's liveness, from its heartbeats."""

    org: OrgToken
    role: SubjectToken
    instance: str
    status: Literal["up", "down"]
    last_seen: UtcDatetime
    silent_for: float = Field(description="Seconds since its last heartbeat arrived.")
    processed: int = 0
    failed: int = 0
    in_flight: int = 0
    reason: str = ""
    at: UtcDatetime = Field(default_factory=utc_now)


@register_wire_model
class SystemMetrics(WireModel):
    """Published on ``{root}.org.system.metrics`` every tick of a HealthMonitor."""

    at: UtcDatetime = Field(default_factory=utc_now)
    interval: float
    scale_threshold: int
    queues: list[QueueMetrics] = Field(default_factory=list)
    agents: list[AgentHealth] = Field(default_factory=list)

    def queue(self, consumer: str, stream: str | None = None) -> QueueMetrics | None:
        return next((q for q in self.queues if q.consumer == consumer
                     and (stream is None or q.stream == stream)), None)

    def agent(self, instance: str) -> AgentHealth | None:
        return next((a for a in self.agents if a.instance == instance), None)


@register_wire_model
class ScalingSignal(WireModel):
    """An autoscaler's cue, on ``{root}.org.system.scaling``; one per threshold crossing."""

    stream: str
    consumer: str
    depth: int
    threshold: int
    recommendation: Recommendation
    reason: str
    instances: int = 0
    at: UtcDatetime = Field(default_factory=utc_now)


# -- the monitor --------------------------------------------------------------------------
@dataclass
class _Instance:
    org: str
    role: str
    instance: str
    last_seen: datetime
    last_seen_mono: float
    processed: int = 0
    failed: int = 0
    in_flight: int = 0
    status: Literal["up", "down"] = "up"
    down_since_mono: float = 0.0

    def health(self, now_mono: float, reason: str = "") -> AgentHealth:
        return AgentHealth(org=self.org, role=self.role, instance=self.instance,
                           status=self.status, last_seen=self.last_seen,
                           silent_for=round(max(0.0, now_mono - self.last_seen_mono), 3),
                           processed=self.processed, failed=self.failed,
                           in_flight=self.in_flight, reason=reason)


class HealthMonitor(Service):
    """Watches queues and heartbeats; publishes metrics, scaling signals and agent health.

    ``interval``: seconds between ticks. ``heartbeat_interval``: how often the agents beat
    (``Agent(heartbeat_interval=...)``); ``down_after`` defaults to three of them.
    ``scale_threshold``: the depth that asks for more workers; ``scale_down_below`` the depth
    under which that request is withdrawn (default: the threshold). ``idle_after``: seconds of
    an empty queue with workers attached before "scale_to_zero" (None: never).
    ``streams``: the stream names to watch (default: the reference streams).
    ``forget_after``: seconds after which a down instance is dropped from the metrics.

    ``start()`` subscribes to the heartbeats and starts ticking; ``stop()`` ends both, and
    the last snapshot stays readable.
    """

    def __init__(self, client: Client, *, interval: float = 1.0,
                 heartbeat_interval: float = 5.0, down_after: float | None = None,
                 scale_threshold: int = 100, scale_down_below: int | None = None,
                 idle_after: float | None = None, streams: Iterable[str] | None = None,
                 subjects: Subjects | None = None, forget_after: float = 600.0):
        if interval <= 0:
            raise ValueError(f"interval={interval!r}: the monitor needs a positive interval")
        if scale_threshold < 1:
            raise ValueError(f"scale_threshold={scale_threshold!r}: use a depth of at least 1")
        if scale_down_below is not None and not 0 <= scale_down_below <= scale_threshold:
            raise ValueError(f"scale_down_below={scale_down_below!r}: use a depth between 0 and "
                             f"scale_threshold ({scale_threshold})")
        self.client = client
        self.subjects = subjects or Subjects()
        self.interval = float(interval)
        self.heartbeat_interval = float(heartbeat_interval)
        self.down_after = float(down_after if down_after is not None else 3 * heartbeat_interval)
        self.scale_threshold = int(scale_threshold)
        self.scale_down_below = int(scale_down_below if scale_down_below is not None
                                    else scale_threshold)
        self.idle_after = idle_after
        self.forget_after = forget_after
        if streams is None:
            from .streams import reference_streams

            streams = [spec.name for spec in reference_streams(self.subjects)]
        self.streams = list(streams)
        self.signals: deque[ScalingSignal] = deque(maxlen=1000)
        self.health_events: deque[AgentHealth] = deque(maxlen=1000)
        self.ticks = 0
        self.errors = 0
        self.bad_heartbeats = 0
        self._bridge = client._bridge
        self._instances: dict[tuple[str, str, str], _Instance] = {}
        self._above: set[tuple[str, str]] = set()
        self._idle_since: dict[tuple[str, str], float] = {}
        self._zeroed: set[tuple[str, str]] = set()
        self._snapshot: SystemMetrics | None = None
        self._heartbeats: list[Subscription] = []
        self._task: asyncio.Task | None = None
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------
    async def _astart_service(self) -> None:
        # The monitor's chatter (a heartbeat handled, a snapshot published every tick) is
        # not traced: the subscription's and the loop's tasks inherit untraced() from here.
        with untraced():
            self._heartbeats = [
                await self.client.asubscribe(self.subjects.heartbeats(), self._on_heartbeats),
                await self.client.asubscribe(self.subjects.heartbeat("*"), self._on_heartbeat)]
            self._running = True
            self._task = asyncio.ensure_future(self._run())

    async def _astop_service(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        subscriptions, self._heartbeats = self._heartbeats, []
        for subscription in subscriptions:
            await subscription.aunsubscribe()

    # -- reading -----------------------------------------------------------------------
    def snapshot(self) -> SystemMetrics | None:
        """The metrics of the latest tick (None before the first one)."""
        return self._snapshot

    def agents(self) -> list[AgentHealth]:
        """Every known instance's state, as of now."""
        now = time.monotonic()
        return [state.health(now) for state in list(self._instances.values())]

    # -- heartbeats --------------------------------------------------------------------
    async def _on_heartbeats(self, msg: Message) -> None:
        try:
            batch = msg.decode(Heartbeats)
        except MessageDecodeError as error:
            self.bad_heartbeats += 1
            log.warning("health monitor: ignoring a message of heartbeats: %s", error)
            return
        now = time.monotonic()
        for beat in batch.beats:
            self._saw(beat, now)

    async def _on_heartbeat(self, msg: Message) -> None:
        try:
            beat = msg.decode(Heartbeat)
        except MessageDecodeError as error:
            self.bad_heartbeats += 1
            log.warning("health monitor: ignoring a heartbeat: %s", error)
            return
        self._saw(beat, time.monotonic())

    def _saw(self, beat: Heartbeat, now: float) -> None:
        key = (beat.org, beat.role, beat.instance)
        state = self._instances.get(key)
        if beat.leaving:
            # Stopped on purpose: down now, not after down_after seconds of silence, so a
            # role scaled to zero no longer counts as attached.
            if state is not None and state.status == "up":
                state.last_seen, state.last_seen_mono = utc_now(), now
                state.status, state.down_since_mono = "down", now
                state.processed, state.failed, state.in_flight = beat.processed, \
                    beat.failed, beat.in_flight
                self._publish_health(state.health(now, "stopped"))
            return
        if state is None:
            state = _Instance(beat.org, beat.role, beat.instance, utc_now(), now)
            self._instances[key] = state
            reason = "first heartbeat"
        elif state.status == "down":
            reason = f"heartbeat resumed after {now - state.last_seen_mono:.1f}s of silence"
        else:
            reason = ""
        state.last_seen, state.last_seen_mono = utc_now(), now
        state.processed, state.failed, state.in_flight = beat.processed, beat.failed, \
            beat.in_flight
        if reason:
            state.status = "up"
            self._publish_health(state.health(now, reason))

    def _publish_health(self, health: AgentHealth) -> None:
        self.health_events.append(health)
        self.client.publish(self.subjects.system_health(), health)

    # -- ticking -----------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running:
            if self.client.is_closed:  # closed under us: nothing left to watch with, or release
                self._running = False
                self._mark_stopped()
                return
            started = loop.time()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a server restart, say: try again next tick
                self.errors += 1
                log.warning("health monitor: tick failed (%s: %s); retrying",
                            type(error).__name__, error)
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    async def _tick(self) -> None:
        self._check_liveness(time.monotonic())
        queues = await self._collect_queues()
        now = time.monotonic()
        for queue in queues:
            self._check_scaling(queue, now)
        seen = {(q.stream, q.consumer) for q in queues}
        self._above &= seen
        self._zeroed &= seen
        self._idle_since = {k: v for k, v in self._idle_since.items() if k in seen}
        snapshot = SystemMetrics(interval=self.interval, scale_threshold=self.scale_threshold,
                                 queues=queues, agents=self.agents())
        self._snapshot = snapshot
        self.ticks += 1
        self.client.publish(self.subjects.system_metrics(), snapshot)

    async def _collect_queues(self) -> list[QueueMetrics]:
        up: dict[str, int] = {}
        for state in self._instances.values():
            if state.status == "up":
                up[state.role] = up.get(state.role, 0) + 1
        queues: list[QueueMetrics] = []
        for stream in self.streams:
            try:
                report = await aconsumer_report(self.client, stream)
            except StreamNotFound:
                continue
            queues.extend(self._queue(row, up.get(row.name, 0)) for row in report.rows)
        return queues

    @staticmethod
    def _queue(row: ConsumerRow, instances: int) -> QueueMetrics:
        attached = max(instances, row.waiting, 1 if row.push_bound else 0)
        age = None if row.oldest_unprocessed_age is None else \
            round(row.oldest_unprocessed_age, 3)
        return QueueMetrics(stream=row.stream, consumer=row.name, pending=row.unprocessed,
                            ack_pending=row.ack_pending, redelivered=row.redelivered,
                            depth=row.depth, oldest_unprocessed_age=age, waiting=row.waiting,
                            push_bound=row.push_bound, instances=instances, attached=attached)

    def _check_liveness(self, now: float) -> None:
        for key, state in list(self._instances.items()):
            silent = now - state.last_seen_mono
            if state.status == "up" and silent > self.down_after:
                state.status, state.down_since_mono = "down", now
                self._publish_health(state.health(
                    now, f"no heartbeat for {silent:.1f}s (down after {self.down_after:g}s)"))
            elif state.status == "down" and now - state.down_since_mono > self.forget_after:
                del self._instances[key]

    def _check_scaling(self, queue: QueueMetrics, now: float) -> None:
        key, depth = (queue.stream, queue.consumer), queue.depth
        if key not in self._above and depth >= self.scale_threshold:
            self._above.add(key)
            self._signal(queue, "scale_up",
                         f"depth {depth} reached the threshold {self.scale_threshold} with "
                         f"{queue.attached} worker(s) attached")
        elif key in self._above and depth < self.scale_down_below:
            self._above.discard(key)
            self._signal(queue, "scale_down",
                         f"depth {depth} is back below {self.scale_down_below}")
        if self.idle_after is None:
            return
        if depth == 0 and queue.attached > 0:
            since = self._idle_since.setdefault(key, now)
            if now - since >= self.idle_after and key not in self._zeroed:
                self._zeroed.add(key)
                self._signal(queue, "scale_to_zero",
                             f"queue empty for {now - since:.1f}s with {queue.attached} "
                             "worker(s) attached; the stream keeps new tasks until one starts")
        else:
            self._idle_since.pop(key, None)
            self._zeroed.discard(key)

    def _signal(self, queue: QueueMetrics, recommendation: Recommendation, reason: str) -> None:
        signal = ScalingSignal(stream=queue.stream, consumer=queue.consumer, depth=queue.depth,
                               threshold=self.scale_threshold,
                               recommendation=recommendation,
                               reason=reason, instances=queue.instances)
        self.signals.append(signal)
        self.client.publish(self.subjects.system_scaling(), signal)

    def __repr__(self) -> str:
        return (f"<HealthMonitor {self.service_state} interval={self.interval:g}s "
                f"streams={len(self.streams)} agents={len(self._instances)} ticks={self.ticks}>")
