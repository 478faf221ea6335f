"""The fault suite: real agent processes and a real nats-server, SIGKILLed while they work.

    python -m agentlab.chaos --tasks 10000          # `make chaos`; tests/test_chaos.py runs 1,000

It starts an embedded nats-server (``sync_interval: always``, a store directory of its
own), several roles with a few ``python -m agentlab.worker`` processes each, and a
dead-letter office. Then it publishes the tasks at a steady rate while it SIGKILLs a
random agent process every couple of seconds (and starts a new one in its place) and
SIGKILLs the nats-server twice, restarting it on the same store directory and port.
At the end it checks, task by task, that every task was completed exactly once in effect
or is in the dead-letter queue with a reason, and prints the figures as a table.

What "exactly once in effect" means here, and why it holds
----------------------------------------------------------
Delivery is at least once: JetStream redelivers a task whose ack did not arrive within
``ack_wait``, and a SIGKILL can fall anywhere. So the suite counts *effects*, not runs.
Each task's handler (:func:`effect_handler`, run by every worker) performs one side effect
keyed by the task id: a KV ``create`` of ``CHAOS_EFFECTS[task_id]``. A create is atomic on
the server: the first one stores the key, every later one is refused. Around it the Agent
keeps its own record, ``TASK_LEDGER[task_id]`` (also a create), written before the ack::

    handler: create CHAOS_EFFECTS[id]   agent: create TASK_LEDGER[id]   ack   announce

A SIGKILL of the agent between any two of these steps is safe:

- before the effect: nothing happened; the redelivery runs the handler, which applies it.
- after the effect, before the ledger: the redelivery runs the handler again; its create
  is refused, so the handler reports the effect that is there ("suppressed") and the
  agent records it. Applied once.
- after the ledger, before the ack: the redelivery finds the ledger entry and is acked
  without running the handler (the Agent's ``duplicates_suppressed``).
- a handler still running when its task is redelivered to another worker (it outlived
  ``ack_wait``): both try the create, the server lets one win.

A SIGKILL of the server is safe because every step is a request the server acknowledges
only once it is on disk (``sync_interval: always``), and every client retries what was not
acknowledged: the publisher resends a task with the same ``Nats-Msg-Id`` (the stream drops
it if the first copy was stored), the handler repeats its create (a refusal of *its own*
earlier create, whose reply was lost, is recognised by the attempt id stored in the
value), a lost ack means a redelivery, which the ledger answers.

One case needs the effect itself to be idempotent, not just the ledger: the server sends a
message before it has stored that it did, so a SIGKILL in that moment makes the restarted
server hand the task out again as a *first* delivery (``num_delivered`` 1, not a
redelivery). The Agent's default ledger pre-check only looks on redeliveries, so the
handler runs a second time, possibly while the first run is still finishing; its create
is refused. The table counts these ("first deliveries repeated"). A handler whose effect
is not idempotent (an e-mail, a payment without an idempotency key) would act twice here.

So the effect store is the source of truth, and the checker does not trust it blindly:
every worker also appends one line per attempt and per successful create to a log file of
its own, outside the server (a SIGKILL does not lose what a process has written). A task
whose successful creates name two different attempts was applied twice, whatever the
server kept. The server runs with ``sync_interval: always`` (see :class:`SingleServer`):
by default it fsyncs every two minutes, and although a SIGKILL of the process alone leaves
its unsynced writes with the kernel (``--no-sync`` runs end with the same zeros), a
machine crash would lose acknowledged writes; these two checks are where it would show.

Redeliveries are the server's count (each consumer's deliveries minus its tasks).
Duplicates suppressed are counted in two places: the effect store refusing a re-run
(exact, from the workers' logs) and the ledger answering a redelivery without running
the handler (the workers' counters, saved every 0.25 s: a SIGKILL loses the last interval).
Recovery after a server restart is the time from the ``restart()`` call to the first task
completed after it (a task's completion time is when the server stored its ledger entry);
the longest gap is the longest time between two consecutive completions.

``--cluster`` runs the same on agentlab.cluster's three local nodes, with every stream and
bucket replicated three times: the first server fault SIGKILLs the node that leads
AGENT_TASKS, the second a random node, each restarted on its store. There a write is
acknowledged once two nodes have it, so a node's SIGKILL loses nothing acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

EFFECTS_BUCKET = "CHAOS_EFFECTS"
STATS_BUCKET = "CHAOS_STATS"
LOG_DIR_ENV = "AGENTLAB_CHAOS_LOG"
HANDLER = "agentlab.chaos:effect_handler"
ORG = "chaos"


class ChaosFailure(RuntimeError):
    """The error of the tasks that are meant to fail (they must end as dead letters)."""


# -- the side effect every worker performs ------------------------------------------------
_effects: dict[int, Any] = {}
_log_fd: list[int] = []


def _log(line: str) -> None:
    """One line in this process's own log, outside the server: survives SIGKILL."""
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return
    if not _log_fd:
        _log_fd.append(os.open(Path(folder) / f"worker-{os.getpid()}.log",
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    os.write(_log_fd[0], (line + "\n").encode())  # one write of one line: atomic with O_APPEND


async def _persist(operation: Any, ctx: Any, limit: float = 30.0) -> Any:
    """Repeat ``operation()`` until the server answers: it may be restarting."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await operation()
        except Exception:
            if time.monotonic() > deadline or ctx.cancelled:
                raise
            ctx.in_progress()  # buffered while the server is away; harmless
            await asyncio.sleep(0.1)


async def effect_handler(task: Any, ctx: Any) -> dict[str, Any]:
    """Apply this task's one side effect: create ``CHAOS_EFFECTS[task.id]`` (atomic)."""
    from .messages import new_id
    from .stores import KeyValueBucket

    attempt = new_id()
    _log(f"attempt {task.id} {attempt} {ctx.deliveries}")
    if task.details.get("always_fail"):
        raise ChaosFailure(f"task {task.id} is meant to fail")
    client = ctx.agent.client
    effects = _effects.get(id(client))
    if effects is None:
        effects = await _persist(lambda: KeyValueBucket.adeclare(client, EFFECTS_BUCKET), ctx)
        _effects[id(client)] = effects
    # Some work before and after the effect, so that a SIGKILL can land on either side.
    work = float(task.details.get("work", 0.0)) / 2
    await asyncio.sleep(work)

    def value() -> dict[str, Any]:
        return {"attempt": attempt, "instance": ctx.agent.instance, "pid": os.getpid(),
                "deliveries": ctx.deliveries, "at": time.time()}

    created = await _persist(lambda: effects.acreate(task.id, value()), ctx)
    if created:
        winner = {"attempt": attempt, "instance": ctx.agent.instance}
    else:
        winner = await _persist(lambda: effects.aget(task.id), ctx) or {}
    applied = winner.get("attempt") == attempt  # True too if our own create's reply was lost
    _log(f"{'applied' if applied else 'suppressed'} {task.id} {attempt}")
    await asyncio.sleep(work)
    return {"attempt": winner.get("attempt"), "by": winner.get("instance"),
            "finished_at": time.time()}


# -- configuration and results -------------------------------------------------------------
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


@dataclass
class ChaosReport:
    config: ChaosConfig
    tasks: int = 0
    completed: int = 0
    dead_lettered: int = 0
    dead_lettered_after_effect: int = 0
    lost: list[str] = field(default_factory=list)
    applied_twice: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    after_effect: list[str] = field(default_factory=list)
    redeliveries: int = 0
    suppressed_by_effect_store: int = 0
    suppressed_by_ledger: int = 0
    handler_runs: int = 0
    forgotten_deliveries: int = 0
    publish_retries: int = 0
    agent_kills: int = 0
    unexpected_exits: int = 0
    restarts: list[Restart] = field(default_factory=list)
    longest_gap: float = 0.0
    longest_gap_at: float = 0.0
    duration: float = 0.0
    started: float = 0.0
    letter_reasons: Counter = field(default_factory=Counter)
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.applied_twice or self.problems) and \
            self.completed + self.dead_lettered == self.tasks

    def to_table(self) -> Table:
        cfg = self.config
        table = Table(title=f"Fault suite: {self.tasks:,} tasks, {len(cfg.roles)} roles × "
                            f"{cfg.workers_per_role} agent processes"
                            + (", 3-node cluster" if cfg.cluster else ""),
                      title_justify="left")
        table.add_column("Figure")
        table.add_column("Value", justify="right")
        table.add_column("Note")
        good, bad = "[green]", "[bold red]"
        table.add_row("tasks published", f"{self.tasks:,}",
                      f"{self.publish_retries} publish retries (same Nats-Msg-Id)")
        table.add_row("completed", f"{self.completed:,}", "effect applied once, in the ledger")
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.letter_reasons.items()))
        table.add_row("dead-lettered", f"{self.dead_lettered:,}",
                      f"with a reason ({reasons or 'none'}); "
                      + (f"1 in {cfg.fail_every} fails by design" if cfg.fail_every
                         else "none fails by design"))
        if self.dead_lettered_after_effect:
            table.add_row("  after its effect", str(self.dead_lettered_after_effect),
                          "applied once, then out of attempts (counted as completed if the "
                          "ledger has it); a redrive does not repeat the effect")
            for line in self.after_effect[:3]:
                table.add_row("", "", f"[dim]{line}")
        table.add_row("lost", f"{good if not self.lost else bad}{len(self.lost)}",
                      "neither completed nor dead-lettered")
        table.add_row("applied twice", f"{good if not self.applied_twice else bad}"
                      f"{len(self.applied_twice)}", "two successful creates of one effect")
        table.add_row("redeliveries", f"{self.redeliveries:,}",
                      "consumer deliveries minus tasks (server's count)")
        table.add_row("duplicates suppressed",
                      f"{self.suppressed_by_effect_store + self.suppressed_by_ledger:,}",
                      f"{self.suppressed_by_effect_store} re-runs refused by the effect store, "
                      f"{self.suppressed_by_ledger} redeliveries acked from the ledger")
        table.add_row("handler runs", f"{self.handler_runs:,}", "from the workers' own logs")
        table.add_row("  first deliveries repeated", f"{self.forgotten_deliveries:,}",
                      "a task handed out again as a first delivery: the restarted server had "
                      "not yet stored that it delivered it")
        table.add_row("agent processes SIGKILLed", str(self.agent_kills),
                      f"every ~{cfg.kill_every:g} s, restarted at once"
                      + (f"; {self.unexpected_exits} exited on their own"
                         if self.unexpected_exits else ""))
        table.add_row("server SIGKILLs", str(len(self.restarts)),
                      "restarted on the same store dir and port"
                      + (", one node of 3 at a time" if cfg.cluster else ""))
        for r in self.restarts:
            rec = "never" if r.recovery is None else f"{r.recovery:.2f} s"
            colour = good if r.recovery is not None and r.recovery < 2.0 else bad
            table.add_row(f"  recovery after restart {r.number}", f"{colour}{rec}",
                          f"{r.label}: restart() to first completion (target < 2 s); "
                          f"killed at +{r.killed_at - self.started:.1f} s, down "
                          f"{r.restart_called - r.killed_at:.2f} s, server start "
                          f"{r.start_seconds:.2f} s")
        table.add_row("longest gap in processing", f"{self.longest_gap:.2f} s",
                      f"between two completions, at +{self.longest_gap_at:.1f} s")
        table.add_row("duration", f"{self.duration:.1f} s", "")
        for problem in self.problems[:10]:
            table.add_row("[bold red]problem", "", problem)
        return table

    def verdict(self) -> str:
        if self.ok:
            return (f"[bold green]PASS[/]: {self.tasks:,} tasks, zero lost, zero applied "
                    "twice.")
        return (f"[bold red]FAIL[/]: {len(self.lost)} lost, {len(self.applied_twice)} applied "
                f"twice, {len(self.problems)} other problems (logs in {self.workdir}).")


# -- what the faults hit -------------------------------------------------------------------
class SingleServer:
    """One embedded nats-server: SIGKILLed and restarted on the same store dir and port."""

    replicas = 1

    def __init__(self, workdir: Path, sync_always: bool = True):
        from .server import EmbeddedServer

        # sync_interval: always. nats-server acknowledges a write (a task, a KV create, a
        # ledger entry) once it has handed it to the operating system's file buffers, and
        # fsyncs them only every two minutes by default. A SIGKILL of the process leaves
        # those buffers to the kernel; the crash this test stands for (a machine or VM going
        # down, a power cut) loses them: acknowledged tasks gone, effects applied twice.
        # With "always" every write is fsynced before it is acknowledged, so "zero lost"
        # holds because acknowledged means on disk, not because the kernel survived.
        self.server = EmbeddedServer(name="chaos", store_dir=workdir / "store",
                                     sync_always=sync_always, max_file="8GB")

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def kill(self, number: int) -> tuple[str, Any]:
        self.server.kill()
        return "server", None

    def restart(self, token: Any) -> None:
        self.server.restart()


class ClusterServers:
    """agentlab.cluster's three local nodes, streams and buckets with three replicas.

    The first fault SIGKILLs the node that leads AGENT_TASKS, later ones a random node; each
    comes back on its store. A write is acknowledged once two of the three nodes have it,
    so one node's SIGKILL loses nothing acknowledged (the node configs run unchanged).
    """

    replicas = 3

    def __init__(self, workdir: Path, rng: random.Random):
        from .cluster import LocalCluster

        self.cluster = LocalCluster(3, store_dir=workdir / "cluster")
        self.random = rng

    @property
    def url(self) -> str:
        return self.cluster.url

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()

    def kill(self, number: int) -> tuple[str, Any]:
        from .org.agent import TASK_STREAM

        if number == 1:
            name = self.cluster.wait_for_stream_leader(TASK_STREAM)
            label = f"{name}, the {TASK_STREAM} leader"
        else:
            name = self.random.choice([n.name for n in self.cluster.running()])
            label = name
        self.cluster.stop_node(name, kill=True)
        return label, name

    def restart(self, name: Any) -> None:
        self.cluster.start_node(name)


# -- the run ---------------------------------------------------------------------------------
class _Progress:
    def __init__(self) -> None:
        self.effects = self.queued = self.letters = 0


class ChaosRun:
    """One run of the fault suite. ``run(config)`` is the short way to use it."""

    def __init__(self, config: ChaosConfig, console: Console | None = None):
        self.config = config
        self.console = console or Console(stderr=True, quiet=True)
        self.random = random.Random(config.seed)
        self.report = ChaosReport(config)
        self.workdir = Path(config.keep or tempfile.mkdtemp(prefix="agentlab-chaos-"))
        self.report.workdir = self.workdir
        self.logs = self.workdir / "logs"
        self.published: list[str] = []
        self.workers: list[Any] = []
        self._generation = Counter()
        self._publisher_done = threading.Event()
        self._stop = threading.Event()
        self._publisher_error: list[BaseException] = []
        self.target: Any = None
        self.admin: Any = None
        self.office: Any = None
        self.started = 0.0

    # -- faults ------------------------------------------------------------------------
    def kill_server(self) -> None:
        """SIGKILL the server (a node, in cluster mode), wait ``server_down``, restart it on
        the same store and port."""
        number = len(self.report.restarts) + 1
        killed = time.time()
        label, token = self.target.kill(number)
        self.console.log(f"[red]SIGKILL {label}[/] ({number} of {self.config.server_kills})")
        time.sleep(self.config.server_down)
        called = time.time()
        self.target.restart(token)
        ready = time.time()
        self.report.restarts.append(Restart(number, killed, called, ready, label=label))
        self.console.log(f"[green]{label} restarted[/] in {ready - called:.2f} s")

    def kill_agent(self) -> None:
        alive = [w for w in self.workers if w.alive]
        if not alive:
            return
        victim = self.random.choice(alive)
        victim.kill()
        self.report.agent_kills += 1
        self.console.log(f"[yellow]SIGKILL[/] {victim.instance} (pid {victim.pid})")
        self.workers[self.workers.index(victim)] = self._spawn(victim.role, victim.slot)

    # -- processes ---------------------------------------------------------------------
    def _spawn(self, role: str, slot: int, wait: bool = False) -> Any:
        from .worker import WorkerProcess

        self._generation[(role, slot)] += 1
        instance = f"{role}-{slot}-g{self._generation[(role, slot)]}"
        cfg = self.config
        options = ["--ack-wait", str(cfg.ack_wait), "--max-deliver", str(cfg.max_deliver),
                   "--max-ack-pending", str(cfg.max_ack_pending), "--heartbeat", "1",
                   "--reconnect-wait", str(cfg.reconnect_wait), "--wait-for-server", "10",
                   "--stats-bucket", STATS_BUCKET, "--stats-every", "0.25"]
        env = {**os.environ, LOG_DIR_ENV: str(self.logs), "PYTHONUNBUFFERED": "1"}
        env.pop("AGENTLAB_NATS_URL", None)
        worker = WorkerProcess(self.target.url, role, org=ORG, instance=instance,
                               handler=HANDLER, options=options, env=env,
                               log_path=self.logs / f"{instance}.stderr")
        worker.slot = slot  # type: ignore[attr-defined]
        return worker.start(wait=wait)

    def _publish(self) -> None:
        from .client import Client
        from .org.models import Task
        from .subjects import Subjects

        cfg, s = self.config, Subjects()
        interval = 1.0 / cfg.publish_rate()
        client = Client.open(self.target.url, name="chaos-publisher",
                             reconnect_wait=cfg.reconnect_wait)
        try:
            start = time.monotonic()
            for i in range(cfg.tasks):
                if self._stop.is_set():
                    return
                delay = start + i * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                role = cfg.roles[i % len(cfg.roles)]
                details: dict[str, Any] = {"n": i, "work": cfg.work}
                if cfg.fail_every and i % cfg.fail_every == cfg.fail_every - 1:
                    details["always_fail"] = True
                task = Task(id=f"chaos-{i:06d}", org=ORG, role=role, title=f"task {i}",
                            requested_by="chaos", details=details)
                while True:  # until the stream says it has it (the msg id makes it once)
                    try:
                        client.js.publish(s.tasks(role), task, msg_id=task.id, timeout=2.0)
                        break
                    except Exception:
                        if self._stop.is_set():
                            return
                        self.report.publish_retries += 1
                        time.sleep(0.05)
                self.published.append(task.id)
        except BaseException as error:  # reported by run()
            self._publisher_error.append(error)
        finally:
            self._publisher_done.set()
            client.close()

    def _progress(self) -> _Progress | None:
        """Effects, queued tasks and dead letters now; None while the server is away."""
        from .org.agent import TASK_STREAM
        from .org.deadletters import DLQ_STREAM

        async def read() -> _Progress:
            js = self.admin.nc.jetstream(timeout=1.0)  # a stalled poll would stall the faults
            p = _Progress()
            p.effects = (await js.stream_info(f"KV_{EFFECTS_BUCKET}")).state.messages
            p.queued = (await js.stream_info(TASK_STREAM)).state.messages
            p.letters = (await js.stream_info(DLQ_STREAM)).state.messages
            return p

        try:
            return self.admin._bridge.run(read(), operation="progress")
        except Exception:  # the server is restarting, or a leader is being elected
            return None

    # -- the whole run -----------------------------------------------------------------
    def run(self) -> ChaosReport:
        from .client import Client
        from .org.agent import LEDGER_BUCKET, TASK_STREAM, Agent
        from .org.deadletters import FAILURES_BUCKET, DeadLetterOffice
        from .org.streams import declare_reference_streams
        from .stores import KeyValueBucket

        cfg = self.config
        self.logs.mkdir(parents=True, exist_ok=True)
        self.target = (ClusterServers(self.workdir, self.random) if cfg.cluster
                       else SingleServer(self.workdir, cfg.sync_always))
        self.target.start()
        self.started = self.report.started = time.time()
        try:
            self.admin = Client.open(self.target.url, name="chaos-admin",
                                     reconnect_wait=cfg.reconnect_wait)
            replicas = self.target.replicas
            if replicas > 1:
                from .cluster import declare_replicated_streams

                declare_replicated_streams(self.admin, replicas)
            else:
                declare_reference_streams(self.admin)
            # Every bucket before the agents declare theirs (with one replica, by default).
            for bucket, ttl in ((EFFECTS_BUCKET, None), (STATS_BUCKET, None),
                                (LEDGER_BUCKET, None), (FAILURES_BUCKET, 7 * 86400.0)):
                _settled(lambda b=bucket, t=ttl: KeyValueBucket.declare(
                    self.admin, b, ttl=t, replicas=replicas))
            for role in cfg.roles:  # the consumers exist before the first task is published
                spec = Agent(self.admin, role, ORG, ack_wait=cfg.ack_wait,
                             max_deliver=cfg.max_deliver,
                             max_ack_pending=cfg.max_ack_pending).consumer_spec
                _settled(lambda spec=spec: self.admin.js.declare_consumer(TASK_STREAM, spec))
            self.office = DeadLetterOffice(Client.open(self.target.url, name="chaos-dlq",
                                                       reconnect_wait=cfg.reconnect_wait))
            _settled(self.office.start)
            self.workers = [self._spawn(role, slot) for role in cfg.roles
                            for slot in range(1, cfg.workers_per_role + 1)]
            for worker in self.workers:
                worker.wait_ready()
            self.console.log(f"{len(self.workers)} agent processes ready; publishing "
                             f"{cfg.tasks:,} tasks at {cfg.publish_rate():.0f}/s")
            self._loop()
        except BaseException:
            self._stop.set()
            self._shutdown()
            self.target.stop()
            raise
        self._stop.set()
        self._shutdown()
        self._check()
        self.report.duration = time.time() - self.started
        if cfg.keep is None and self.report.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.report

    def _loop(self) -> None:
        cfg = self.config
        publisher = threading.Thread(target=self._publish, name="chaos-publisher", daemon=True)
        publisher.start()
        deadline = time.monotonic() + cfg.deadline()
        thresholds = [cfg.tasks * (k + 1) / (cfg.server_kills + 1)
                      for k in range(cfg.server_kills)]
        next_kill = time.monotonic() + self._jitter()
        last_sweep, sweeper = time.monotonic(), None
        effects_at_fault = -1
        last_report = 0.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if self._publisher_error:
                raise self._publisher_error[0]
            for i, worker in enumerate(self.workers):  # one that exited on its own
                if worker.proc is not None and worker.proc.poll() is not None:
                    self.report.unexpected_exits += 1
                    self.console.log(f"[red]{worker.instance} exited on its own[/] (code "
                                     f"{worker.proc.returncode}; stderr in {worker.log_path})")
                    self.workers[i] = self._spawn(worker.role, worker.slot)
            progress = self._progress()
            if progress is None:
                continue
            now = time.monotonic()
            if now - last_report > 2.0:
                last_report = now
                self.console.log(f"published {len(self.published):,}, effects "
                                 f"{progress.effects:,}, queued {progress.queued:,}, "
                                 f"dead letters {progress.letters}")
            done_publishing = self._publisher_done.is_set()
            # The server faults come while tasks are still being published, so that work
            # arrives across every outage and after it (and recovery can be timed).
            # Each fault comes once work has completed since the last one, so that each
            # recovery is timed from a working system.
            if thresholds and len(self.published) >= thresholds[0] and \
                    progress.effects > effects_at_fault and not done_publishing:
                thresholds.pop(0)
                self.kill_server()
                effects_at_fault = progress.effects
                continue
            if now >= next_kill and not (done_publishing and progress.queued == 0):
                self.kill_agent()
                next_kill = now + self._jitter()
            if done_publishing and progress.queued == 0:
                if thresholds:
                    self.report.problems.append(
                        f"only {len(self.report.restarts)} of {cfg.server_kills} server faults "
                        "came while tasks were being published (a slower --rate helps)")
                return
            if now - last_sweep > 3.0 and not (sweeper and sweeper.is_alive()):
                # Advisories are core NATS: one sent while the office reconnected is lost, and
                # its message would wait in the queue for ever. The sweep finds those. In a
                # thread: while a leader is elected it waits, and so must not the faults.
                last_sweep = now
                sweeper = threading.Thread(target=self._sweep, daemon=True)
                sweeper.start()
        self.report.problems.append(f"the run did not finish within {cfg.deadline():.0f} s")

    def _sweep(self) -> None:
        try:
            self.office.sweep()
        except Exception:  # the server is away; the next sweep will do
            pass

    def _jitter(self) -> float:
        return self.config.kill_every * self.random.uniform(0.5, 1.5)

    def _shutdown(self) -> None:
        stoppers = [threading.Thread(target=w.stop, daemon=True) for w in self.workers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(15)

    # -- the checks --------------------------------------------------------------------
    def _check(self) -> None:
        try:
            self._collect_and_check()
        finally:
            for client in (self.office.client if self.office else None, self.admin):
                if client is not None:
                    client.close()
            self.target.stop()

    def _collect_and_check(self) -> None:
        from .org.agent import LEDGER_BUCKET, TASK_STREAM
        from .org.deadletters import DLQ_STREAM
        from .org.models import DeadLetter

        report, js = self.report, self.admin.js
        try:
            _settled(self.office.sweep)  # anything whose advisory was missed
        except Exception as error:
            report.problems.append(f"final sweep failed: {type(error).__name__}: {error}")
        effects = _settled(lambda: _read_kv(js, EFFECTS_BUCKET))
        recorded: dict[str, float] = {}  # task id -> when the ledger stored it: completed
        ledger = _settled(lambda: _read_kv(js, LEDGER_BUCKET, recorded))
        stats = _settled(lambda: _read_kv(js, STATS_BUCKET))
        letters: dict[str, list[Any]] = defaultdict(list)
        for msg in _settled(lambda: _read_all(js, DLQ_STREAM)):
            letter = DeadLetter.model_validate_json(msg.data)
            try:
                task_id = json.loads(letter.payload)["id"]
            except (ValueError, KeyError, TypeError):
                report.problems.append(f"a dead letter that is not a chaos task: {letter!r}")
                continue
            letters[task_id].append(letter)
            report.letter_reasons[letter.reason] += 1
        leftover = _settled(lambda: js.stream_info(TASK_STREAM)).state.messages
        if leftover:
            report.problems.append(f"{leftover} tasks still in {TASK_STREAM}")

        attempts: dict[str, set[str]] = defaultdict(set)
        first_deliveries: Counter = Counter()
        applied: dict[str, set[str]] = defaultdict(set)
        for path in self.logs.glob("worker-*.log"):
            for line in path.read_text().splitlines():
                kind, task_id, attempt, *rest = line.split()
                if kind == "attempt":
                    attempts[task_id].add(attempt)
                    report.handler_runs += 1
                    if rest and rest[0] == "1":
                        first_deliveries[task_id] += 1
                elif kind == "applied":
                    applied[task_id].add(attempt)
                elif kind == "suppressed":
                    report.suppressed_by_effect_store += 1
        report.forgotten_deliveries = sum(n - 1 for n in first_deliveries.values() if n > 1)
        report.suppressed_by_ledger = sum(int(v.get("duplicates_suppressed", 0))
                                          for v in stats.values())
        # Ledger suppressions include a ledger create lost to a concurrent run; count those
        # once, as effect-store refusals.
        report.suppressed_by_ledger = max(0, report.suppressed_by_ledger
                                          - report.suppressed_by_effect_store)

        published = set(self.published)
        report.tasks = len(published)
        must_fail = {f"chaos-{i:06d}" for i in range(self.config.tasks)
                     if self.config.fail_every
                     and i % self.config.fail_every == self.config.fail_every - 1}
        for task_id in sorted(published):
            winners = set(applied.get(task_id, ()))
            if task_id in effects:
                winners.add(effects[task_id].get("attempt"))
            if len(winners) > 1:
                report.applied_twice.append(task_id)
            if task_id in effects and task_id in letters:
                # Applied once, then dead-lettered all the same: its ack or its ledger entry
                # did not get through within max_deliver attempts (a long leader election).
                # A redrive finds the effect (or the ledger entry) and does not repeat it.
                report.dead_lettered_after_effect += 1
                letter = letters[task_id][0]
                report.after_effect.append(
                    f"{task_id}: {letter.reason} after {letter.deliveries} deliveries: "
                    f"{letter.error}; {'in' if task_id in ledger else 'not in'} the ledger")
            if task_id in effects and task_id in ledger:
                report.completed += 1
                if ledger[task_id].get("result", {}).get("attempt") not in winners:
                    report.problems.append(f"{task_id}: the ledger names another attempt "
                                           "than the effect")
            elif task_id in letters:
                report.dead_lettered += 1
                if any(not (letter.reason and letter.error) for letter in letters[task_id]):
                    report.problems.append(f"{task_id}: dead letter without a reason")
            else:
                report.lost.append(task_id)
                if task_id in effects or task_id in ledger:
                    report.problems.append(f"{task_id}: effect {task_id in effects}, ledger "
                                           f"{task_id in ledger}, but not completed")
            if task_id in must_fail and task_id not in letters:
                report.problems.append(f"{task_id} should have failed into the DLQ")
        strays = (set(effects) | set(ledger) | set(letters)) - published
        if strays:
            report.problems.append(f"{len(strays)} ids nobody published, e.g. {min(strays)}")
        if len(self.published) != len(published):
            report.problems.append("the publisher recorded a task twice")
        if len(published) != self.config.tasks:
            report.problems.append(f"only {len(published)} of {self.config.tasks} tasks "
                                   "were published")

        for role in self.config.roles:
            info = _settled(lambda role=role: js.consumer_info(TASK_STREAM, role))
            role_tasks = sum(1 for t in published if int(t[6:]) % len(self.config.roles)
                             == self.config.roles.index(role))
            report.redeliveries += max(0, info.delivered.consumer_seq - role_tasks)

        finished = sorted(recorded.values())
        for restart in report.restarts:
            later = next((t for t in finished if t >= restart.restart_called), None)
            restart.recovery = None if later is None else later - restart.restart_called
            if restart.recovery is None:
                report.problems.append(f"nothing completed after server restart "
                                       f"{restart.number}")
        if len(finished) > 1:
            gap, at = max((b - a, a) for a, b in itertools.pairwise(finished))
            report.longest_gap, report.longest_gap_at = gap, at - self.started


def _settled(operation: Any, timeout: float = 30.0) -> Any:
    """``operation()``, again until it works: after a fault the server may still be
    recovering its streams, or a cluster electing their leaders (503, timeouts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return operation()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _read_all(js: Any, stream: str) -> list[Any]:
    """Every message of ``stream`` (nothing may be written meanwhile); raises on a short read,
    which js.read() returns when a fetch times out, so that the caller tries again."""
    stored = js.stream_info(stream).state.messages
    messages = js.read(stream, timeout=5.0)
    if len(messages) < stored:
        raise RuntimeError(f"read {len(messages)} of the {stored} messages in {stream}")
    return messages


def _read_kv(js: Any, bucket: str, stored_at: dict[str, float] | None = None
             ) -> dict[str, Any]:
    """Every live key of a bucket and its JSON value, in one pass over its stream (and, in
    ``stored_at``, when the server stored each one)."""
    out: dict[str, Any] = {}
    prefix = f"$KV.{bucket}."
    for msg in _read_all(js, f"KV_{bucket}"):
        key = msg.subject[len(prefix):]
        if msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
            out.pop(key, None)
            continue
        out[key] = json.loads(msg.data)
        if stored_at is not None:
            stored_at[key] = msg.info.timestamp.timestamp()
    return out


def run(config: ChaosConfig | None = None, console: Console | None = None,
        **overrides: Any) -> ChaosReport:
    """Run the fault suite once and return its report (``report.ok``, ``report.to_table()``)."""
    config = config or ChaosConfig()
    for name, value in overrides.items():
        setattr(config, name, value)
    return ChaosRun(config, console).run()


def build_parser() -> argparse.ArgumentParser:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(
        prog="python -m agentlab.chaos",
        description="Publish tasks to agent processes while SIGKILLing them and the "
                    "nats-server; then check that none was lost or applied twice.")
    parser.add_argument("--tasks", type=int, default=defaults.tasks)
    parser.add_argument("--roles", default=",".join(defaults.roles),
                        help="comma-separated roles (default: %(default)s)")
    parser.add_argument("--workers-per-role", type=int, default=defaults.workers_per_role)
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every, metavar="S",
                        help="seconds between agent SIGKILLs (default: %(default)s)")
    parser.add_argument("--server-kills", type=int, default=defaults.server_kills)
    parser.add_argument("--fail-every", type=int, default=defaults.fail_every, metavar="N",
                        help="every Nth task always fails (0: none; default: %(default)s)")
    parser.add_argument("--work", type=float, default=defaults.work, metavar="S",
                        help="seconds each handler works (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=None,
                        help="tasks published per second (default: tasks/8, at most 400)")
    parser.add_argument("--ack-wait", type=float, default=defaults.ack_wait)
    parser.add_argument("--timeout", type=float, default=None, metavar="S")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the server store and the worker logs in DIR")
    parser.add_argument("--no-sync", action="store_true",
                        help="run nats-server without sync_interval: always (to see why it "
                             "is needed)")
    parser.add_argument("--cluster", action="store_true",
                        help="run on a local 3-node cluster; the first server fault kills "
                             "the AGENT_TASKS leader")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the figures")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    config = ChaosConfig(tasks=args.tasks, roles=tuple(r for r in args.roles.split(",") if r),
                         workers_per_role=args.workers_per_role, kill_every=args.kill_every,
                         server_kills=args.server_kills, fail_every=args.fail_every,
                         work=args.work, rate=args.rate, ack_wait=args.ack_wait,
                         timeout=args.timeout,
                         seed=args.seed, keep=args.keep, sync_always=not args.no_sync,
                         cluster=args.cluster)
    progress = Console(stderr=True, quiet=args.quiet)
    log = logging.getLogger("agentlab")
    if not log.handlers:  # reconnects and dead letters, as readable lines
        log.addHandler(RichHandler(console=progress, show_path=False))
        log.setLevel(logging.ERROR if args.quiet else logging.WARNING)
    report = run(config, progress)
    console.print(report.to_table())
    console.print(report.verdict())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
