"""Autoscaling a role on its queue's lag, with the semantics of KEDA's ``nats-jetstream`` scaler.

    scaler = org.autoscale("cto", lag_threshold=10, max_replicas=5)   # in-process agents
    scaler.history[-1]        # ScalingDecision(at, lag, running, wanted, action, reason)
    scaler.decisions          # the ticks that changed the replica count
    scaler                    # in Jupyter: the decisions as a table
    scaler.stop()             # the replicas stay as they are, as when a ScaledObject goes

    # Agent processes: scale_to(n) is yours, e.g. start or stop `agentlab.programs.worker`s.
    from agentlab.programs.worker import WorkerProcess
    pool = {}                                   # instance -> WorkerProcess
    def scale_to(n):
        while len(pool) > n:
            pool.popitem()[1].stop()            # SIGTERM: the tasks in hand are finished
        while len(pool) < n:
            name = f"cto-{len(pool) + 1}"
            pool[name] = WorkerProcess(url, "cto", instance=name).start()
    scaler = Autoscaler(lab, "cto", scale_to, running=lambda: len(pool)).start()

Every ``interval`` seconds, as KEDA's scaler and the HPA it feeds do (keda
pkg/scalers/nats_jetstream_scaler.go):

* **lag** = ``num_pending + num_ack_pending`` of the role's durable consumer in AGENT_TASKS
  (KEDA's ``getMaxMsgLag``): not delivered yet plus delivered and not acknowledged. It is
  read with ``$JS.API.CONSUMER.INFO``, which the consumer's leader answers; KEDA walks the
  nodes' ``/jsz`` to find that leader for the same reason (a follower's count can be stale).
* **active** when ``lag > activation_lag`` (``totalLag > activationLagThreshold``).
* active: **replicas = ceil(lag / lag_threshold)** (the HPA's AverageValue target), within
  ``max(1, min_replicas)`` .. ``max_replicas``; from zero in one step.
* not active: with ``min_replicas=0``, replicas stay as the HPA would keep them (at least 1)
  until ``cooldown`` seconds have passed since the lag was last active, then **0** (KEDA's
  ``cooldownPeriod``). With ``min_replicas > 0`` the role never goes below it.

Two things the HPA adds are left out on purpose: its 10 % tolerance and its scale-down
stabilisation window (300 s by default; deploy/k8s/keda-scaledobject.yaml sets it to 0, so
the cluster and this class decide alike). A role whose consumer does not exist yet (no agent
ever started) gets it declared with ``consumer_spec``, so its lag counts from the first task.

Each tick is one :class:`ScalingDecision` in ``history`` (bounded): a view can draw lag,
replicas wanted and running over time, and mark the ticks that scaled.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from ..core.lifecycle import Service
from ..core.specs import ConsumerSpec
from ..core.subjects import Subjects, validate_token
from ..errors import ConsumerNotFound
from ..reports.columns import Column
from ..reports.render import html_table, rich_table
from ..telemetry import untraced
from ..wire.messages import utc_now
from .agent import task_consumer_spec
from .streams import TASK_STREAM

if TYPE_CHECKING:
    from nats.js.api import ConsumerInfo
    from rich.table import Table

    from ..core.client import Client

log = logging.getLogger("agentlab")

__all__ = ["ACTIVATION_LAG", "COOLDOWN", "INTERVAL", "LAG_THRESHOLD", "MAX_REPLICAS",
           "Autoscaler", "ScalingDecision"]

# The defaults, which deploy/k8s/keda-scaledobject.yaml repeats (tests/test_k8s.py checks):
LAG_THRESHOLD = 10      # KEDA's default lagThreshold
ACTIVATION_LAG = 0      # KEDA's default activationLagThreshold: any task wakes the role
MAX_REPLICAS = 10
COOLDOWN = 30.0         # KEDA's default is 300 s; a notebook wants to see it happen
INTERVAL = 1.0          # KEDA polls every 30 s by default; the ScaledObject every 5 s

Action = Literal["hold", "activate", "scale_up", "scale_down", "scale_to_zero", "error"]


@dataclass(frozen=True)
class ScalingDecision:
    """One tick: the lag read, the replicas running then, the replicas wanted and why."""

    at: datetime
    lag: int | None            # None: the lag could not be read (action "error")
    pending: int
    ack_pending: int
    running: int
    wanted: int
    action: Action
    reason: str

    @property
    def changed(self) -> bool:
        return self.action not in ("hold", "error")


_COLUMNS: tuple[Column[ScalingDecision], ...] = (
    Column("At", lambda d: d.at.strftime("%H:%M:%S.%f")[:-3]),
    Column("Lag", "lag", lambda v: "?" if v is None else f"{v:,}", numeric=True,
           tip="num_pending + num_ack_pending of the role's consumer"),
    Column("Running", "running", numeric=True),
    Column("Wanted", "wanted", numeric=True, bold=True),
    Column("Action", "action"),
    Column("Reason", "reason"),
)


def _whole(name: str, value: Any, least: int, meaning: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}={value!r}: {meaning}; use a whole number of at least {least}.")
    return value


class Autoscaler(Service):
    """Scales ``role`` between ``min_replicas`` and ``max_replicas`` on its queue's lag.

    ``scale_to(n)``: makes ``n`` replicas run (sync, run in agentlab's handler pool, or
    async); it may return how many run now. ``running()``: how many run (default: what
    ``scale_to`` last returned or was asked, starting at 0). ``consumer_spec``: the role's
    durable consumer, declared only if it does not exist (default: what
    ``python -m agentlab.programs.worker`` declares with its default options).
    ``history``: how many ticks to keep.
    """

    def __init__(self, client: Client, role: str, scale_to: Callable[[int], Any], *,
                 running: Callable[[], int] | None = None,
                 lag_threshold: int = LAG_THRESHOLD, activation_lag: int = ACTIVATION_LAG,
                 min_replicas: int = 0, max_replicas: int = MAX_REPLICAS,
                 cooldown: float = COOLDOWN, interval: float = INTERVAL,
                 subjects: Subjects | None = None, stream: str = TASK_STREAM,
                 consumer_spec: ConsumerSpec | None = None, history: int = 3600):
        self.lag_threshold = _whole("lag_threshold", lag_threshold, 1,
                                    "the lag one replica is there to take on")
        self.activation_lag = _whole("activation_lag", activation_lag, 0,
                                     "the lag above which a role at zero starts")
        self.min_replicas = _whole("min_replicas", min_replicas, 0,
                                   "the replicas kept however idle (0: scale to zero)")
        self.max_replicas = _whole("max_replicas", max_replicas, 1,
                                   "the most replicas to run")
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas={max_replicas!r} is below min_replicas="
                             f"{min_replicas!r}: raise max_replicas or lower min_replicas.")
        if not isinstance(interval, (int, float)) or not interval > 0:
            raise ValueError(f"interval={interval!r}: seconds between two reads of the lag; "
                             "use a positive number, e.g. 1.0.")
        if not isinstance(cooldown, (int, float)) or not cooldown >= 0:
            raise ValueError(f"cooldown={cooldown!r}: seconds without activity before scaling "
                             "to zero; use 0 or more.")
        if not callable(scale_to):
            raise TypeError(f"scale_to={scale_to!r} must be a callable scale_to(n) that makes "
                            "n replicas run (for in-process agents: org.autoscale(role)).")
        self.client = client
        self.role = validate_token(role, "role")
        self.stream = stream
        self.subjects = subjects or Subjects()
        self.consumer_spec = consumer_spec or task_consumer_spec(
            self.role, self.subjects, ack_wait=30.0, max_deliver=3, max_ack_pending=5)
        self.cooldown, self.interval = float(cooldown), float(interval)
        self.scale_to, self._running_fn = scale_to, running
        self.errors = 0
        self._asked = 0                      # what scale_to last made run
        self._history: deque[ScalingDecision] = deque(maxlen=history)
        self._lock = threading.Lock()        # history is read from other threads
        self._bridge = client._bridge
        self._last_active: float | None = None
        self._task: asyncio.Task | None = None
        self._stopping: asyncio.Event | None = None

    # -- reading -----------------------------------------------------------------------
    @property
    def history(self) -> list[ScalingDecision]:
        """Every tick kept, oldest first."""
        with self._lock:
            return list(self._history)

    @property
    def decisions(self) -> list[ScalingDecision]:
        """The ticks that changed the replica count, oldest first."""
        return [d for d in self.history if d.changed]

    def replicas(self) -> int:
        """How many replicas run now (``running()`` if given, else what scale_to made run)."""
        return int(self._running_fn()) if self._running_fn is not None else self._asked

    def desired(self, lag: int, running: int, now: float) -> tuple[int, Action, str]:
        """KEDA's decision for ``lag`` with ``running`` replicas at ``now`` (monotonic s)."""
        if lag > self.activation_lag:
            self._last_active = now
            wanted = self._within(math.ceil(lag / self.lag_threshold), max(1, self.min_replicas))
            why = (f"lag {lag} > activation {self.activation_lag}: ceil({lag}/"
                   f"{self.lag_threshold}) = {math.ceil(lag / self.lag_threshold)}")
            if wanted != math.ceil(lag / self.lag_threshold):
                why += f", within {max(1, self.min_replicas)}..{self.max_replicas}"
            action: Action = "activate" if running == 0 and wanted else \
                "scale_up" if wanted > running else "scale_down" if wanted < running else "hold"
            return wanted, action, why
        if self.min_replicas > 0:  # never idle below the minimum: the HPA alone decides
            wanted = self._within(math.ceil(lag / self.lag_threshold), self.min_replicas)
            return wanted, self._action(wanted, running), (
                f"lag {lag} <= activation {self.activation_lag}; at least {self.min_replicas}")
        if running == 0:
            return 0, "hold", f"lag {lag} <= activation {self.activation_lag}: stays at zero"
        idle = now - (self._last_active if self._last_active is not None else now)
        if idle >= self.cooldown:
            return 0, "scale_to_zero", (f"lag {lag} <= activation {self.activation_lag} for "
                                        f"{idle:.1f}s (cooldown {self.cooldown:g}s)")
        wanted = self._within(math.ceil(lag / self.lag_threshold), 1)
        return wanted, self._action(wanted, running), (
            f"lag {lag} <= activation {self.activation_lag}; zero after "
            f"{self.cooldown - idle:.1f}s more of cooldown")

    def _within(self, replicas: int, least: int) -> int:
        return max(least, min(self.max_replicas, replicas))

    @staticmethod
    def _action(wanted: int, running: int) -> Action:
        return "scale_up" if wanted > running else "scale_down" if wanted < running else "hold"

    # -- lifecycle ---------------------------------------------------------------------
    async def _astart_service(self) -> None:
        await self._aread_consumer()  # a missing stream fails the start, with its own error
        loop = asyncio.get_running_loop()
        if self.replicas() > 0:  # replicas already up count as active until the cooldown
            self._last_active = loop.time()
        self._stopping = asyncio.Event()
        with untraced():  # a trace per tick would bury the tasks' traces
            self._task = asyncio.ensure_future(self._run(self._stopping))

    async def _astop_service(self) -> None:
        # The tick in progress finishes (a scale_to half done would leave the count unknown).
        task, self._task = self._task, None
        if self._stopping is not None:
            self._stopping.set()
        if task is not None:
            try:
                await task
            except Exception as error:  # already logged by the tick
                log.info("autoscaler %s: %s", self.role, error)

    async def _run(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stopping.is_set():
            started = loop.time()
            if self.client.is_closed:
                self._mark_stopped()
                return
            await self._tick(loop.time)
            try:
                await asyncio.wait_for(stopping.wait(),
                                       max(0.0, self.interval - (loop.time() - started)))
            except asyncio.TimeoutError:
                pass

    async def _aread_consumer(self) -> ConsumerInfo:
        try:
            return await self.client.js.aconsumer_info(self.stream, self.role)
        except ConsumerNotFound:
            # No agent of the role has started yet: its queue has no count until the
            # consumer exists. Declared only when missing, so a worker's own options stay.
            return await self.client.js.adeclare_consumer(self.stream, self.consumer_spec)

    async def _tick(self, clock: Callable[[], float]) -> None:
        running = self.replicas()
        try:
            info = await self._aread_consumer()
        except Exception as error:  # a server restart, a leader election: keep the replicas
            self.errors += 1
            self._record(utc_now(), None, 0, 0, running, running, "error",
                         f"lag unreadable ({type(error).__name__}: {error}); kept {running}")
            return
        at = utc_now()  # a decision is dated when its lag was read, not when scaling ended
        pending, ack_pending = int(info.num_pending or 0), int(info.num_ack_pending or 0)
        lag = pending + ack_pending
        wanted, action, reason = self.desired(lag, running, clock())
        if wanted != running:
            try:
                done = await self._bridge.arun_handler(self.scale_to, wanted)
                self._asked = int(done) if isinstance(done, int) else wanted
            except Exception as error:
                self.errors += 1
                log.warning("autoscaler %s: scale_to(%d) failed: %s", self.role, wanted, error)
                action, reason = "error", f"scale_to({wanted}) failed ({error}); {reason}"
        self._record(at, lag, pending, ack_pending, running, wanted, action, reason)

    def _record(self, at: datetime, lag: int | None, pending: int, ack_pending: int,
                running: int, wanted: int, action: Action, reason: str) -> None:
        decision = ScalingDecision(at=at, lag=lag, pending=pending,
                                   ack_pending=ack_pending, running=running, wanted=wanted,
                                   action=action, reason=reason)
        with self._lock:
            self._history.append(decision)
        if decision.changed:
            log.info("autoscaler %s: %s %d -> %d (%s)", self.role, action, running, wanted,
                     reason)

    # -- views -------------------------------------------------------------------------
    def _rows(self, limit: int = 20) -> list[ScalingDecision]:
        history = self.history
        rows = [d for d in history if d.action != "hold"]
        if history and history[-1].action == "hold":
            rows.append(history[-1])  # where it stands now
        return rows[-limit:]

    @property
    def title(self) -> str:
        return (f"Autoscaler {self.role}: lag threshold {self.lag_threshold}, activation > "
                f"{self.activation_lag}, replicas {self.min_replicas}..{self.max_replicas}, "
                f"cooldown {self.cooldown:g}s, every {self.interval:g}s ({self.service_state})")

    def __rich__(self) -> Table:
        return rich_table(self.title, _COLUMNS, self._rows())

    def _repr_html_(self) -> str:
        return html_table(_COLUMNS, self._rows(), title=self.title, empty="no tick yet")

    def __repr__(self) -> str:
        last = self.history[-1:] or None
        now = f" lag={last[0].lag} running={last[0].running}" if last else ""
        return f"<Autoscaler {self.role} {self.service_state}{now}>"
