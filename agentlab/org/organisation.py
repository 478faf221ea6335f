"""The reference organisation in one call: streams, agents, dead-letter office, health monitor.

    org = Organisation(lab, "acme").start()        # CEO, CTO and CFO agents, working
    org.assign("Launch the product")               # a task for the CEO, from the board
    org.scale("cto", 0)                            # scale to zero: tasks wait in the stream
    org.autoscale("cto", max_replicas=5)           # or let its queue's lag decide (KEDA's way)
    org.stop()

Each agent instance gets a connection of its own, named after it, as separate processes
would, opened with ``lab.connect()``: the same login, so a tenant's organisation
(``Organisation(lab.tenant("acme"))``) runs every agent as that tenant. With
``shared_connection=True`` the agents share one connection instead (``{org}-agents``), as the
agents of one pod would (seed 002: one connection, many subscriptions): a hundred agents are
then one socket, each with its own subscriptions, and stopping one unsubscribes its own only.
``lease`` and ``consumer_state`` are given to every agent (see :class:`~agentlab.org.agent.Agent`).
Pass your own handlers to replace the deterministic reference roles; without them it runs
``default_roles()`` (the reference roles, or a model's with ``AGENTLAB_LLM_BASE_URL`` set:
agentlab.llm).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections import Counter
from typing import Any, Literal

from ..core.client import Client
from ..core.pull import IDLE_LIFETIME, LOST_AFTER, lingering_on
from ..core.subjects import Subjects, validate_token
from ..tenants.client import TenantClient
from .agent import Agent, TaskHandler, task_consumer_spec
from .autoscale import (
    ACTIVATION_LAG,
    COOLDOWN,
    INTERVAL,
    LAG_THRESHOLD,
    MAX_REPLICAS,
    Autoscaler,
)
from .deadletters import DeadLetterOffice
from .delegation import publish_task
from .health import HealthMonitor
from .models import Task
from .roles import default_roles
from .streams import declare_reference_streams

log = logging.getLogger("agentlab")

class Organisation:
    """The reference organisation ``org`` on ``lab``'s server (``org`` defaults to the
    tenant of a tenant's connection, else "acme")."""

    def __init__(self, lab: Client, org: str | None = None, *,
                 roles: dict[str, TaskHandler | None] | None = None,
                 instances: dict[str, int] | None = None, ack_wait: float = 30.0,
                 max_deliver: int = 3, heartbeat_interval: float = 2.0,
                 subjects: Subjects | None = None, stream_replicas: int | None = None,
                 monitor_interval: float = 1.0, scale_threshold: int = 100,
                 shared_connection: bool = False, lease: bool = True,
                 consumer_state: Literal["file", "memory"] | None = None):
        self.lab = lab
        self.lease, self.consumer_state = lease, consumer_state
        tenant = lab.tenant if isinstance(lab, TenantClient) else None
        tenants = lab.tenants if isinstance(lab, TenantClient) else None
        self.org = org or tenant or "acme"
        if tenant and tenants is not None:
            if tenants.model != "accounts":
                raise ValueError(
                    f"The reference organisation uses the seed's fixed stream names "
                    f"(AGENT_TASKS, ...), which only the accounts model gives every tenant; "
                    f"this lab uses model={tenants.model!r}. Start it with "
                    "agentlab.start(tenants=[...]).")
            subjects = subjects or tenants.subjects(tenant)
        self.roles = dict(default_roles() if roles is None else roles)
        self.instances = {role: 1 for role in self.roles} | (instances or {})
        self.ack_wait = ack_wait
        self.max_deliver = max_deliver
        self.heartbeat_interval = heartbeat_interval
        self.subjects = subjects or Subjects()
        # A lab started with cluster=3 keeps its 3 replicas unless told otherwise.
        self.stream_replicas = stream_replicas or getattr(lab, "replicas", None) or 1
        self.agents: dict[str, list[Agent]] = {role: [] for role in self.roles}
        self.dead_letters: DeadLetterOffice | None = None
        self.health: HealthMonitor | None = None
        self._monitor_interval = monitor_interval
        self._scale_threshold = scale_threshold
        self._clients: list[Client] = []
        self._closing: list[concurrent.futures.Future] = []  # see _release_agent_client
        self.shared_connection = shared_connection
        self._shared: Client | None = None  # the agents' one connection, when shared
        self._serial = 0
        self._retired: Counter[str] = Counter()  # stats of instances scaled away
        self.autoscalers: dict[str, Autoscaler] = {}

    def _connect(self, name: str) -> Client:
        # Tenants keep the org name in their connections' names: a dashboard of the operator
        # lists every tenant's agents side by side.
        tenant = self.lab.tenant if isinstance(self.lab, TenantClient) else None
        client = self.lab.connect(f"{tenant}-{name}" if tenant else name)
        self._clients.append(client)
        return client

    def start(self) -> Organisation:
        """Declare the streams, then start the dead-letter office, the monitor and the agents."""
        declare_reference_streams(self.lab, self.subjects, self.stream_replicas)
        self.dead_letters = DeadLetterOffice(self._connect(f"{self.org}-dlq"),
                                             self.subjects).start()
        self.health = HealthMonitor(self._connect(f"{self.org}-health"),
                                    interval=self._monitor_interval,
                                    heartbeat_interval=self.heartbeat_interval,
                                    scale_threshold=self._scale_threshold,
                                    subjects=self.subjects).start()
        for role, count in self.instances.items():
            self.scale(role, count)
        return self

    def scale(self, role: str, count: int) -> list[Agent]:
        """Run exactly ``count`` instances of ``role`` (0 = scale to zero; tasks wait)."""
        running = self.agents.setdefault(role, [])
        while len(running) > count:
            agent = running.pop()
            agent.stop()
            self._retired.update(agent.stats)
            self._release_agent_client(agent.client)  # its own connection, unless shared
        while len(running) < count:
            self._serial += 1
            instance = f"{role}-{self._serial}"
            client = self._agent_client(instance)
            agent = Agent(client, role, self.org, self.roles.get(role),
                          subjects=self.subjects, ack_wait=self.ack_wait,
                          max_deliver=self.max_deliver,
                          heartbeat_interval=self.heartbeat_interval, instance=instance,
                          lease=self.lease, consumer_state=self.consumer_state)
            try:
                running.append(agent.start())
            except BaseException:
                self._release_agent_client(client)
                raise
        return running

    def _agent_client(self, instance: str) -> Client:
        if not self.shared_connection:
            return self._connect(instance)
        if self._shared is None or self._shared.is_closed:
            self._shared = self._connect(f"{self.org}-agents")
        return self._shared

    def _release_agent_client(self, client: Client) -> None:
        if client is self._shared:  # the shared one closes with the organisation
            return
        waits = client._bridge.run(_lingering(client), operation="stop")
        if not waits:
            self._release(client)
            return
        # A tap on the inboxes holds a long pull request of the agent that stopped: its
        # connection hands what arrives over until the request ends (core/pull.py).
        if client in self._clients:
            self._clients.remove(client)

        async def close_after() -> None:
            try:
                await _after_lingering(client)
            finally:
                await client.aclose()
        # Kept, so that stop() waits for it (and what it raised is not lost).
        self._closing.append(client._bridge.submit(close_after()))

    def autoscale(self, role: str, *, lag_threshold: int = LAG_THRESHOLD,
                  activation_lag: int = ACTIVATION_LAG, min_replicas: int = 0,
                  max_replicas: int = MAX_REPLICAS, cooldown: float = COOLDOWN,
                  interval: float = INTERVAL) -> Autoscaler:
        """Scale ``role``'s instances here on its queue's lag, as KEDA's nats-jetstream
        scaler would (agentlab/org/autoscale.py); it replaces an autoscaler the role had.
        While it runs, leave that role's ``scale()`` to it."""
        if self.health is None:
            raise RuntimeError(f"Organisation {self.org} is not started: call org.start() "
                               "before org.autoscale().")
        previous = self.autoscalers.pop(role, None)
        if previous is not None:
            previous.stop()
            self._release(previous.client)
        client = self._connect(f"{self.org}-{role}-autoscaler")
        scaler = Autoscaler(
            client, role,
            lambda n: len(self.scale(role, n)), running=lambda: len(self.agents.get(role, [])),
            lag_threshold=lag_threshold, activation_lag=activation_lag,
            min_replicas=min_replicas, max_replicas=max_replicas, cooldown=cooldown,
            interval=interval, subjects=self.subjects,
            consumer_spec=task_consumer_spec(role, self.subjects, ack_wait=self.ack_wait,
                                             max_deliver=self.max_deliver,
                                             memory_state=self.consumer_state != "file"))
        try:
            self.autoscalers[role] = scaler.start()
        except BaseException:
            self._release(client)
            raise
        return scaler

    def _release(self, client: Client) -> None:
        if client in self._clients:
            self._clients.remove(client)
        client.close()

    def agent(self, role: str) -> Agent:
        """The first running instance of ``role``."""
        running = self.agents.get(role) or []
        if not running:
            raise LookupError(f"No '{role}' agent is running in {self.org}: "
                              f"org.scale('{role}', 1) starts one.")
        return running[0]

    def assign(self, title: str, *, to: str = "ceo", details: dict[str, Any] | None = None,
               requested_by: str = "board", task_id: str | None = None) -> Task:
        """Give the organisation work from outside it (the board, a customer, a test).

        Resending the same ``task_id`` stores and records it once, as a delegation does.
        """
        given_id: dict[str, Any] = {"id": task_id} if task_id else {}  # else Task makes one
        task = Task(org=self.org, role=validate_token(to, "role"), title=title,
                    details=details or {}, requested_by=requested_by, **given_id)
        publish_task(self.lab, self.subjects, task)
        return task

    def stats(self) -> dict[str, int]:
        """Counters summed over every agent instance, including those scaled away."""
        total = Counter(self._retired)
        for agents in self.agents.values():
            for agent in agents:
                total.update(agent.stats)
        return dict(total)

    def stop(self) -> None:
        for scaler in self.autoscalers.values():  # first: none may scale a role back up
            scaler.stop()
        self.autoscalers.clear()
        for role in list(self.agents):
            self.scale(role, 0)
        if self.health is not None:
            self.health.stop()
        if self.dead_letters is not None:
            self.dead_letters.stop()
        for closing in self._closing:  # the connections still handing a long request over
            try:
                closing.result(timeout=30)
            except Exception as error:
                log.info("organisation %s: an agent connection closed with %s", self.org,
                         error)
        self._closing.clear()
        shared = self._shared
        if shared is not None and not shared.is_closed:  # as _release_agent_client waits
            shared._bridge.run(_after_lingering(shared), operation="stop")
        for client in self._clients:
            if not client.is_closed:
                client.close()
        self._clients.clear()
        self._shared = None

    def __enter__(self) -> Organisation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        counts = ", ".join(f"{role}×{len(a)}" for role, a in self.agents.items())
        return f"<Organisation {self.org}: {counts}>"


async def _lingering(client: Client) -> list[asyncio.Future]:
    return lingering_on(client)  # on the loop, where the feeds change


async def _after_lingering(client: Client) -> None:
    """Once no stopped agent's long pull request on ``client`` can get a message any more
    (at most a request's lifetime: core/pull.py)."""
    waits = lingering_on(client)
    if waits:
        await asyncio.wait(waits, timeout=IDLE_LIFETIME + 2 * LOST_AFTER)
