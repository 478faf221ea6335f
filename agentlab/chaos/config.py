"""What a fault-suite run does (:class:`ChaosConfig`) and what each fault looked like."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LedgerPrecheck = Literal["auto", "always", "redeliveries"]
FaultKind = Literal["agent pause", "server pause", "partition", "leader kill"]


@dataclass
class ChaosConfig:
    tasks: int = 10_000
    roles: tuple[str, ...] = ("cto", "cfo")
    workers_per_role: int = 2
    kill_every: float = 2.0          # seconds between agent SIGKILLs (jittered ±50%)
    server_kills: int = 2
    server_down: float = 0.5         # seconds between the server's SIGKILL and its restart
    fail_every: int = 200            # every Nth task always fails: it must be dead-lettered
    work: float = 0.05               # seconds each task's handler works, around its effect
    rate: float | None = None        # tasks published per second (None: see publish_rate())
    ack_wait: float = 2.0
    max_deliver: int = 5
    max_ack_pending: int = 16
    reconnect_wait: float = 0.25
    # Seconds between every connection's PINGs (AGENTLAB_NATS_PING_INTERVAL): a client of a
    # paused or cut-off server notices within two of them and moves to another node.
    ping_interval: float = 1.0
    sync_always: bool = True
    cluster: bool = False            # three local nodes (agentlab.cluster) instead of one
    # Faults beside the SIGKILLs (pauses and partitions are SIGSTOP/SIGCONT and a link down):
    agent_pauses: int = 0            # a random agent process stopped for agent_pause seconds
    agent_pause: float | None = None  # None: twice ack_wait, so its tasks go to others
    server_pauses: int = 0           # the server (cluster: the AGENT_TASKS leader) stopped
    server_pause: float | None = None  # None: 1.5 ack waits; 12 s on a cluster (> election)
    partitions: int = 0              # cluster: the AGENT_TASKS leader cut off the network
    partition_for: float = 12.0      # longer than Raft's 4-9 s election timeout
    leader_kills: int = 0            # cluster: SIGKILL the AGENT_TASKS leader this often
    # The agents' ledger pre-check: "redeliveries" is the blind spot the suite must catch
    # (a task a restarted server hands out again as a first delivery runs twice).
    ledger_precheck: LedgerPrecheck = "auto"
    # Seconds an agent's task lease outlives its last renewal (None: see lease_seconds()).
    lease_ttl: int | None = None
    timeout: float | None = None     # whole run (None: scales with tasks)
    seed: int | None = None
    keep: Path | None = None         # keep the store and logs here (default: a temp dir)

    def lease_seconds(self) -> int:
        """The agents' lease_ttl: longer than any time a live agent is cut off here (an
        agent pause, a server restart or pause; on a cluster, an election), or a live run
        would lose its lease; short enough that a SIGKILLed agent's tasks do not hold the
        role's max_ack_pending slots for long."""
        if self.lease_ttl is not None:
            return self.lease_ttl
        cut_off = max(self.agent_pause_seconds(), self.server_pause_seconds(),
                      self.server_down + 2.0)
        if self.cluster:
            cut_off = max(cut_off, 12.0)  # an election: Raft's 4-9 s timeout, then settling
        return int(cut_off * 1.5) + 2  # renewed every third of it: a renewal may fall short

    def agent_pause_seconds(self) -> float:
        return self.agent_pause if self.agent_pause is not None else 2 * self.ack_wait

    def server_pause_seconds(self) -> float:
        if self.server_pause is not None:
            return self.server_pause
        return 12.0 if self.cluster else 1.5 * self.ack_wait

    def fault_seconds(self) -> float:
        """About how long the faults take, recoveries included (what publishing must span)."""
        election = 8.0 if self.cluster else 1.0
        return (self.server_kills * (self.server_down + election)
                + self.leader_kills * (self.server_down + election + 2.0)
                + self.server_pauses * (self.server_pause_seconds() + election)
                + self.partitions * (self.partition_for + election)
                + self.agent_pauses * (self.agent_pause_seconds() + 1.0))

    def publish_rate(self) -> float:
        # Spread the publishing over the run so that every fault lands while tasks are
        # being published and processed: at least 8 s, and the faults' time over again,
        # at most 400 tasks/s.
        return self.rate or min(400.0, self.tasks / max(8.0, 1.5 * self.fault_seconds()))

    def deadline(self) -> float:
        return self.timeout or 60.0 + self.tasks / 40.0 + 3 * self.fault_seconds()


@dataclass
class Restart:
    number: int
    killed_at: float
    restart_called: float
    ready_at: float
    recovery: float | None = None    # restart() call to the first completion after it
    label: str = "server"

    @property
    def start_seconds(self) -> float:
        return self.ready_at - self.restart_called


@dataclass
class Fault:
    """One pause, partition or leader kill, and how the run came through it.

    Times are ``time.time()``; the recoveries are seconds from ``started``: to AGENT_TASKS'
    next leader-elected advisory (``elected``), to the last leader-elected advisory of any
    stream or consumer before ``completed`` (``leaders_back``: the node led other groups
    too, each elects on its own), to the first receipt of a task whose first publish came
    after ``started`` (``published``), and to the first completion of such a task
    (``completed``; with a backlog it waits its turn). ``completions_during`` counts the
    tasks completed while it lasted, ``resumed`` the seconds from its end to the next.
    """

    kind: FaultKind
    number: int
    label: str
    started: float
    ended: float
    elected: float | None = None
    leaders_back: float | None = None  # the last leader-elected advisory before `completed`
    published: float | None = None
    completed: float | None = None
    completions_during: int = 0
    resumed: float | None = None     # seconds from `ended` to the next completion of any task
    skipped: str = ""                # why it did not happen (no namespaces, one server)
