"""The pauses, partitions and leader kills of a fault-suite run, and their timings.

:class:`Faults` is part of :class:`~agentlab.chaos.suite.ChaosRun` (it reads the run's
config, target, workers, publisher and report); it is a module of its own so that the run's
life cycle and its faults each fit on a few screens.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from .checks import read_kv, settled
from .config import ChaosConfig, Fault, FaultKind
from .effects import ORG
from .report import ChaosReport


class Faults:
    """The faults beside the SIGKILLs, each blocking until it is over (the run's loop
    waits), each recorded as a :class:`~agentlab.chaos.config.Fault`."""

    config: ChaosConfig
    report: ChaosReport
    target: Any
    workers: list[Any]
    publisher: Any
    admin: Any
    console: Any
    random: Any
    elections: list[float]

    def kill_leader(self) -> None:
        """SIGKILL the AGENT_TASKS leader (cluster), restart it after ``server_down``."""
        number = len([f for f in self.report.faults if f.kind == "leader kill"]) + 1
        label, token = self.target.kill(number, leader=True)
        started = self.target.killed_at  # not before: finding the leader takes a moment
        self.console.log(f"[red]SIGKILL {label}[/] (leader kill {number} of "
                         f"{self.config.leader_kills})")
        time.sleep(self.config.server_down)
        self.target.restart(token)
        self._fault("leader kill", label, started, time.time())
        self.target.catch_up(token)

    def pause_server(self) -> None:
        """SIGSTOP the server (cluster: the AGENT_TASKS leader) for ``server_pause_seconds()``
        (on a cluster longer than an election timeout: the others elect a new leader)."""
        seconds = self.config.server_pause_seconds()
        label, pid, token = self.target.pause()
        started = time.time()
        self.console.log(f"[red]SIGSTOP {label}[/] for {seconds:g} s")
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        self._fault("server pause", label, started, time.time())
        self.console.log(f"[green]SIGCONT {label}[/]")
        self.target.catch_up(token)

    def partition(self) -> None:
        """Cut the AGENT_TASKS leader off the network for ``partition_for`` seconds."""
        why = self.target.partition_unavailable if self.config.cluster else \
            "a partition needs --cluster"
        if why:
            self._fault("partition", "skipped", time.time(), time.time(), skipped=why)
            self.console.log(f"[yellow]partition skipped[/]: {why}")
            return
        label, token = self.target.isolate()
        started = time.time()
        self.console.log(f"[red]partition[/]: {label} cut off for "
                         f"{self.config.partition_for:g} s")
        try:
            time.sleep(self.config.partition_for)
        finally:
            ended = time.time()
            self.target.rejoin(token)
        self._fault("partition", label, started, ended)
        self.console.log(f"[green]{label} rejoined[/]")

    def pause_agent(self) -> None:
        """SIGSTOP a random agent process for longer than ack wait, then SIGCONT it: its
        tasks go to the others meanwhile, and it wakes to finish (and ack) them late."""
        alive = [w for w in self.workers if w.alive]
        if not alive:
            return
        victim = self.random.choice(alive)
        assert victim.proc is not None  # alive: it has a process
        proc, seconds = victim.proc, self.config.agent_pause_seconds()
        started = time.time()
        proc.send_signal(signal.SIGSTOP)
        try:  # whatever happens meanwhile, the agent wakes: a stopped process ignores SIGTERM
            self.console.log(f"[yellow]SIGSTOP[/] {victim.instance} (pid {proc.pid}) for "
                             f"{seconds:g} s")
            time.sleep(seconds)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
        self._fault("agent pause", f"{victim.instance} (pid {proc.pid})", started, time.time())

    def _fault(self, kind: FaultKind, label: str, started: float, ended: float,
               skipped: str = "") -> None:
        number = len([f for f in self.report.faults if f.kind == kind]) + 1
        self.report.faults.append(Fault(kind, number, label, started, ended, skipped=skipped))

    def _time_faults(self) -> None:
        """Each fault's recovery, from the publisher's receipts, its leader-elected
        advisories and the ledger's store times (see config.Fault)."""
        from ..org.agent import LEDGER_BUCKET

        stored: dict[str, float] = {}
        settled(lambda: read_kv(self.admin.js, LEDGER_BUCKET, stored, org=ORG))
        finished = sorted(stored.values())
        sent, acked = self.publisher.sent_at, self.publisher.acked_at
        for fault in self.report.faults:
            if fault.skipped:
                continue
            after = [t for t in sent if sent[t] >= fault.started]
            receipts = [acked[t] for t in after if t in acked]
            fault.published = min(receipts) - fault.started if receipts else None
            completions = [stored[t] for t in after if t in stored]
            fault.completed = min(completions) - fault.started if completions else None
            elected = [t for t, _ in self.publisher.elections if t >= fault.started]
            fault.elected = min(elected) - fault.started if elected else None
            if fault.completed is not None:
                done = fault.started + fault.completed
                before = [t for t in self.elections if fault.started <= t <= done]
                fault.leaders_back = max(before) - fault.started if before else None
            fault.completions_during = sum(1 for t in finished
                                           if fault.started <= t <= fault.ended)
            later = next((t for t in finished if t >= fault.ended), None)
            fault.resumed = None if later is None else later - fault.ended
            if fault.completed is None:
                self.report.problems.append(f"nothing published after {fault.kind} "
                                            f"{fault.number} completed")
