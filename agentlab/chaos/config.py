"""What a fault-suite run does (:class:`ChaosConfig`) and what one server fault looked like."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LedgerPrecheck = Literal["auto", "always", "redeliveries"]


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
    sync_always: bool = True
    cluster: bool = False            # three local nodes (agentlab.cluster) instead of one
    # The agents' ledger pre-check: "redeliveries" is the blind spot the suite must catch
    # (a task a restarted server hands out again as a first delivery runs twice).
    ledger_precheck: LedgerPrecheck = "auto"
    timeout: float | None = None     # whole run (None: scales with tasks)
    seed: int | None = None
    keep: Path | None = None         # keep the store and logs here (default: a temp dir)

    def publish_rate(self) -> float:
        # Spread the publishing over the run so that every fault lands while tasks are
        # being published and processed: at least 8 s, at most 400 tasks/s.
        return self.rate or min(400.0, self.tasks / 8.0)

    def deadline(self) -> float:
        return self.timeout or 60.0 + self.tasks / 40.0


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
