"""One run of the fault suite: the server, the agent processes, the publisher and the faults."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from ..programs.worker import WorkerProcess
from .checks import check, settled
from .config import ChaosConfig, Restart
from .effects import EFFECTS_BUCKET, HANDLER, LOG_DIR_ENV, ORG, STATS_BUCKET
from .faults import Faults
from .report import ChaosReport
from .targets import ClusterServers, SingleServer


class _Agent(WorkerProcess):
    """An agent process in one of its role's slots; its replacement takes the same slot."""

    def __init__(self, url: str, role: str, slot: int, **options: Any):
        super().__init__(url, role, **options)
        self.slot = slot


class _Progress:
    def __init__(self) -> None:
        self.effects = self.queued = self.letters = 0


class ChaosRun(Faults):
    """One run of the fault suite. ``run(config)`` is the short way to use it."""

    def __init__(self, config: ChaosConfig, console: Console | None = None):
        if config.leader_kills and not config.cluster:
            raise ValueError(f"leader_kills={config.leader_kills} needs cluster=True: one "
                             "server has no leader to lose (server_kills SIGKILLs it)")
        self.config = config
        self.console = console or Console(stderr=True, quiet=True)
        self.random = random.Random(config.seed)
        self.report = ChaosReport(config)
        self.workdir = Path(config.keep or tempfile.mkdtemp(prefix="agentlab-chaos-"))
        self.report.workdir = self.workdir
        self.logs = self.workdir / "logs"
        self.published: list[str] = []
        self.workers: list[_Agent] = []
        self.deaths: dict[int, float] = {}  # pid -> when its agent process was SIGKILLed
        self._generation: Counter = Counter()
        self._stop = threading.Event()
        self.publisher: Any = None  # an AckedPublisher of the tasks
        self.elections: list[float] = []  # every leader-elected advisory (time.time())
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
        assert victim.pid is not None  # alive: it has a process
        self.deaths[victim.pid] = time.time()
        victim.kill()
        self.report.agent_kills += 1
        self.console.log(f"[yellow]SIGKILL[/] {victim.instance} (pid {victim.pid})")
        self.workers[self.workers.index(victim)] = self._spawn(victim.role, victim.slot)

    # -- processes ---------------------------------------------------------------------
    def _spawn(self, role: str, slot: int, wait: bool = False) -> _Agent:
        self._generation[(role, slot)] += 1
        instance = f"{role}-{slot}-g{self._generation[(role, slot)]}"
        cfg = self.config
        options = ["--ack-wait", str(cfg.ack_wait), "--max-deliver", str(cfg.max_deliver),
                   "--max-ack-pending", str(cfg.max_ack_pending), "--heartbeat", "1",
                   "--reconnect-wait", str(cfg.reconnect_wait), "--wait-for-server", "10",
                   "--stats-bucket", STATS_BUCKET, "--stats-every", "0.25",
                   "--ledger-precheck", cfg.ledger_precheck,
                   "--lease-ttl", str(cfg.lease_seconds())]
        # The target's URL (given as --url too) and its credentials file: the server admits
        # only its own login.
        env = {**os.environ, LOG_DIR_ENV: str(self.logs), "PYTHONUNBUFFERED": "1",
               **self.target.client_env()}
        worker = _Agent(self.target.url, role, slot, org=ORG, instance=instance,
                        handler=HANDLER, options=options, env=env,
                        log_path=self.logs / f"{instance}.stderr")
        worker.start(wait=wait)
        return worker

    def _start_publisher(self) -> None:
        """The tasks, through the cluster's AckedPublisher: each one until the stream
        acknowledges it (same Nats-Msg-Id), sent again at once on a new leader or a
        reconnect instead of waiting out its timeout (see cluster/publisher.py)."""
        from ..cluster.publisher import AckedPublisher
        from ..core.client import Client
        from ..core.subjects import Subjects
        from ..org.agent import TASK_STREAM
        from ..org.models import Task

        cfg, s = self.config, Subjects()

        def task(n: int) -> Task:
            i = n - 1
            details: dict[str, Any] = {"n": i, "work": cfg.work}
            if cfg.fail_every and i % cfg.fail_every == cfg.fail_every - 1:
                details["always_fail"] = True
            role = cfg.roles[i % len(cfg.roles)]
            return Task(id=f"chaos-{i:06d}", org=ORG, role=role, title=f"task {i}",
                        requested_by="chaos", details=details)

        client = Client.open(self.target.url, name="chaos-publisher",
                             reconnect_wait=cfg.reconnect_wait)
        self.publisher = AckedPublisher(
            client, lambda n: s.tasks(cfg.roles[(n - 1) % len(cfg.roles)]), stream=TASK_STREAM,
            payload=task, ids=lambda n: f"chaos-{n - 1:06d}", count=cfg.tasks,
            rate=cfg.publish_rate(), timeout=2.0, retry_wait=0.05).start()

    def _stop_publisher(self) -> None:
        if self.publisher is None:
            return
        self.publisher.stop()
        self.published = list(self.publisher.acked)
        self.report.publish_retries = len(self.publisher.failures)
        self.publisher.client.close()

    @property
    def _published(self) -> int:
        return len(self.publisher.acked) if self.publisher is not None else 0

    def _progress(self) -> _Progress | None:
        """Effects, queued tasks and dead letters now; None while the server is away."""
        from ..org.agent import TASK_STREAM
        from ..org.deadletters import DLQ_STREAM

        async def read() -> _Progress:
            js, quick = self.admin.js, 1.0  # a stalled poll would stall the faults
            p = _Progress()
            p.effects = (await js.astream_info(f"KV_{EFFECTS_BUCKET}", timeout=quick)
                         ).state.messages
            p.queued = (await js.astream_info(TASK_STREAM, timeout=quick)).state.messages
            p.letters = (await js.astream_info(DLQ_STREAM, timeout=quick)).state.messages
            return p

        try:
            return self.admin._bridge.run(read(), operation="progress")
        except Exception:  # the server is restarting, or a leader is being elected
            return None

    # -- the whole run -----------------------------------------------------------------
    def run(self) -> ChaosReport:
        cfg = self.config
        from ..core.connecting import PING_INTERVAL_ENV

        self.logs.mkdir(parents=True, exist_ok=True)
        # Every connection of the run (this process's and the agents') PINGs often enough
        # to leave a paused or cut-off server for another node within seconds.
        ping_before = os.environ.get(PING_INTERVAL_ENV)
        os.environ[PING_INTERVAL_ENV] = f"{cfg.ping_interval:g}"
        try:
            return self._run()
        finally:
            if ping_before is None:
                os.environ.pop(PING_INTERVAL_ENV, None)
            else:
                os.environ[PING_INTERVAL_ENV] = ping_before

    def _run(self) -> ChaosReport:
        cfg = self.config
        self.target = (ClusterServers(self.workdir, self.random, partition=cfg.partitions > 0)
                       if cfg.cluster else SingleServer(self.workdir, cfg.sync_always))
        self.target.start()
        self.started = self.report.started = time.time()
        try:
            self._set_up()
            self._loop()
        except BaseException:
            self._stop.set()
            self._stop_publisher()
            self._shutdown()
            self.target.stop()
            raise
        self._stop.set()
        self._stop_publisher()
        self._shutdown()
        try:
            check(self)
            self._time_faults()
        finally:
            for client in (self.office.client if self.office else None, self.admin):
                if client is not None:
                    client.close()
            self.target.stop()
        self.report.duration = time.time() - self.started
        if cfg.keep is None and self.report.ok:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return self.report

    def _set_up(self) -> None:
        from ..core.client import Client
        from ..core.stores import KeyValueBucket
        from ..org.agent import TASK_STREAM, Agent
        from ..org.deadletters import FAILURES_BUCKET, DeadLetterOffice
        from ..org.ledger import TaskLedger
        from ..org.streams import declare_reference_streams

        cfg = self.config
        self.admin = Client.open(self.target.url, name="chaos-admin",
                                 reconnect_wait=cfg.reconnect_wait)

        async def elected(msg: Any) -> None:
            self.elections.append(time.time())

        for kind in ("STREAM", "CONSUMER"):  # every group's own election, for the timings
            self.admin.subscribe(f"$JS.EVENT.ADVISORY.{kind}.LEADER_ELECTED.>", elected)
        replicas = self.target.replicas
        if replicas > 1:
            from ..org.streams import declare_replicated_streams

            declare_replicated_streams(self.admin, replicas)
        else:
            declare_reference_streams(self.admin)
        # Every bucket before the agents declare theirs (with one replica, by default).
        for bucket, ttl in ((EFFECTS_BUCKET, None), (STATS_BUCKET, None),
                            (FAILURES_BUCKET, 7 * 86400.0)):
            settled(lambda b=bucket, t=ttl: KeyValueBucket.declare(
                self.admin, b, ttl=t, replicas=replicas))
        settled(lambda: TaskLedger.declare(self.admin, replicas=replicas))
        for role in cfg.roles:  # the consumers exist before the first task is published
            spec = Agent(self.admin, role, ORG, ack_wait=cfg.ack_wait,
                         max_deliver=cfg.max_deliver,
                         max_ack_pending=cfg.max_ack_pending).consumer_spec
            settled(lambda spec=spec: self.admin.js.declare_consumer(TASK_STREAM, spec))
        # The office sweeps on start and after each reconnect of its own: an advisory sent
        # while it was away is caught up as soon as it is back. Its periodic sweep, every
        # 3 s here, buries what a restarted server never announces again: a message that
        # ran out of deliveries just before the crash.
        self.office = DeadLetterOffice(Client.open(self.target.url, name="chaos-dlq",
                                                   reconnect_wait=cfg.reconnect_wait),
                                       sweep_every=3.0)
        settled(self.office.start)
        self.workers = [self._spawn(role, slot) for role in cfg.roles
                        for slot in range(1, cfg.workers_per_role + 1)]
        for worker in self.workers:
            worker.wait_ready()
        self.console.log(f"{len(self.workers)} agent processes ready; publishing "
                         f"{cfg.tasks:,} tasks at {cfg.publish_rate():.0f}/s")

    def _plan(self) -> list[str]:
        """The server faults and pauses, in order: kills, pauses and partitions taking
        turns, the leader kills after them."""
        cfg = self.config
        plan: list[str] = []
        turns = [["server kill"] * cfg.server_kills, ["agent pause"] * cfg.agent_pauses,
                 ["server pause"] * cfg.server_pauses, ["partition"] * cfg.partitions]
        while any(turns):
            for queue in turns:
                if queue:
                    plan.append(queue.pop())
        return plan + ["leader kill"] * cfg.leader_kills

    def _loop(self) -> None:
        cfg = self.config
        self._start_publisher()
        deadline = time.monotonic() + cfg.deadline()
        plan = self._plan()
        actions = {"server kill": self.kill_server, "agent pause": self.pause_agent,
                   "server pause": self.pause_server, "partition": self.partition,
                   "leader kill": self.kill_leader}
        thresholds = [cfg.tasks * (k + 1) / (len(plan) + 1) for k in range(len(plan))]
        next_kill = time.monotonic() + self._jitter()
        last_sweep, sweeper = time.monotonic(), None
        effects_at_fault = -1
        last_report = 0.0
        while time.monotonic() < deadline:
            time.sleep(0.1)
            self._replace_exited()
            progress = self._progress()
            if progress is None:
                continue
            now = time.monotonic()
            if now - last_report > 2.0:
                last_report = now
                self.console.log(f"published {self._published:,}, effects "
                                 f"{progress.effects:,}, queued {progress.queued:,}, "
                                 f"dead letters {progress.letters}")
            done_publishing = self.publisher.finished.is_set()
            # The server faults come while tasks are still being published, so that work
            # arrives across every outage and after it (and recovery can be timed).
            # Each fault comes once work has completed since the last one, so that each
            # recovery is timed from a working system.
            if thresholds and self._published >= thresholds[0] and \
                    progress.effects > effects_at_fault and not done_publishing:
                thresholds.pop(0)
                actions[plan.pop(0)]()
                effects_at_fault = progress.effects
                continue
            if now >= next_kill and not (done_publishing and progress.queued == 0):
                self.kill_agent()
                next_kill = now + self._jitter()
            if done_publishing and progress.queued == 0:
                if thresholds:
                    self.report.problems.append(
                        f"{len(thresholds)} faults ({', '.join(sorted(set(plan)))}) did not "
                        "come while tasks were being published (a slower --rate helps)")
                return
            if cfg.cluster and now - last_sweep > 3.0 and not (sweeper and sweeper.is_alive()):
                # On a cluster the office need not reconnect when a node dies, and an
                # advisory the dead node had not yet passed on is gone: the sweep finds its
                # message. In a thread: while a leader is elected it waits; the faults not.
                last_sweep = now
                sweeper = threading.Thread(target=self._sweep, daemon=True)
                sweeper.start()
        self.report.problems.append(f"the run did not finish within {cfg.deadline():.0f} s")

    def _replace_exited(self) -> None:
        for i, worker in enumerate(self.workers):  # one that exited on its own
            if worker.proc is not None and worker.proc.poll() is not None:
                self.deaths.setdefault(worker.proc.pid, time.time())
                self.report.unexpected_exits += 1
                self.console.log(f"[red]{worker.instance} exited on its own[/] (code "
                                 f"{worker.proc.returncode}; stderr in {worker.log_path})")
                self.workers[i] = self._spawn(worker.role, worker.slot)

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


def run(config: ChaosConfig | None = None, console: Console | None = None,
        **overrides: Any) -> ChaosReport:
    """Run the fault suite once and return its report (``report.ok``, ``report.to_table()``)."""
    config = config or ChaosConfig()
    for name, value in overrides.items():
        setattr(config, name, value)
    return ChaosRun(config, console).run()
