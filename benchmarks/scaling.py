"""Scaling: 1, 10 and 100 agent roles (1,000 as information), in one process and over four,
and the same delegation flow written with FastStream's NATS broker, as a ratio.

    make bench                                   # foundation, delegation, ..., then this
    python -m benchmarks.scaling --quick         # 1 and 10 roles, short windows (smoke test)

One embedded nats-server with the reference streams. A CEO in this process (agentlab's
client, sync API; for FastStream a ``NatsBroker`` on ``asyncio.run``) delegates round-robin
to N roles, each its own durable pull consumer on AGENT_TASKS, worked in agent host
processes (benchmarks/scaling_hosts.py explains both sides' options). Per configuration:

* **p50/p99**: one task in flight, from building the task to seeing its completion, after a
  warm-up pass over the roles.
* **drain**: 3,000 tasks queued round-robin with every role stopped, then all started;
  completions per second from the first completion to the last (the starts are not timed).
* **idle**, over 10 s once the queues are empty: CPU of the agent processes and of
  nats-server (% of one core), RSS per agent (the hosts' growth from their baseline after
  imports, divided by N), threads, and, counted rather than timed: JetStream API requests
  per second (``$JS.API.>``, pull requests included) and heartbeats per second, with the
  messages that carried them (one per process and interval: both counted by a tap process
  of its own), and the agent processes' event-loop wakeups per second.

**Flat cost** (DESIGN decision 13), from the same run, 100 roles in one process against 1:
p50 at most 1.3x, drain at least 0.9x, and idle CPU (agents + server) at most 3 % of a core
in every configuration; a table of its own marks each PASS or FAIL.

"1 process": all N roles in one host. "4 processes": four hosts with N/4 roles each.
"1 (1 conn)": 100 roles in one host on one shared connection. "1 on file": 1 and 100 roles in
one host with ``Agent(consumer_state="file")``, the role consumers' delivery state on file
instead of in memory (agentlab's default; benchmarks/consumers.py measures the
server's part of the p50's growth alone).
``agentlab.programs.worker`` runs one role per process, so the hosts are this benchmark's
own (the same Agent, options and connection per role as the worker's); 100 roles as 100
worker processes would measure 100 interpreters. FastStream runs the same N in one process
(one broker, its one connection) and is interleaved with agentlab's 1-process rounds (ABBA)
while both hosts are up; the ratio rows are agentlab ÷ FastStream. 1,000 roles: one round of
100 delegations, an idle window of 5 s, and skipped if they take over 90 s to start.
Linux only (/proc).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats

import agentlab
from agentlab.org import TASK_STREAM, Task, TaskLedger, declare_reference_streams

from .common import console, interleaved, main, pct, raw_login
from .scaling_hosts import COMPLETED, TASKS, Group, Stat

ROOT = Path(__file__).resolve().parents[1]
ORG_AL, ORG_FS = "bench-al", "bench-fs"
PROCESSES = 4
TITLE = "agentlab vs FastStream: delegation to N roles, one server (ratio = agentlab ÷ FastStream)"
CAPTION = ("µs: LOWER is better; tasks/s: HIGHER is better. Medians of per-round figures; "
           "spread = (max - min) / median of the rounds.")
INFO_LIMIT = 90.0  # seconds 1,000 roles may take to start before their row is skipped


# -- the CEO -------------------------------------------------------------------------------
class Completions:
    """Completions seen by the CEO: the awaited one (latency), or a count (drain)."""

    def __init__(self) -> None:
        self.expect: str | None = None
        self.target, self.seen = 0, 0
        self.first = self.last = 0.0
        self.event = threading.Event()

    def arm(self, expect: str | None = None, target: int = 0) -> None:
        self.expect, self.target, self.seen = expect, target, 0
        self.event.clear()

    def saw(self, task_id: str) -> bool:
        if self.expect is not None:
            return task_id == self.expect
        self.seen += 1
        now = time.perf_counter()
        if self.seen == 1:
            self.first = now
        if self.seen == self.target:
            self.last = now
            return True
        return False

    def rate(self) -> float:
        return (self.target - 1) / (self.last - self.first)


def al_latency(ceo: agentlab.Client, done: Completions, roles: list[str], n: int,
               warm: int) -> list[float]:
    out, clock = [], time.perf_counter_ns
    for k in range(warm + n):
        t0 = clock()
        role = roles[k % len(roles)]
        task = Task(org=ORG_AL, role=role, title="bench", requested_by="ceo")
        done.arm(expect=task.id)
        ceo.js.publish(TASKS.format(role), task, msg_id=task.id)
        if not done.event.wait(5):
            raise RuntimeError(f"agentlab: no completion of a task for {role} in 5 s")
        out.append((clock() - t0) / 1000)
    done.arm()
    return out[warm:]


def al_drain(url: str, login: dict, done: Completions, group: Group, n: int) -> float:
    group.ask("stop")
    asyncio.run(preload(url, login, ORG_AL, group.roles, n))
    done.arm(target=n)
    group.ask("start")
    if not done.event.wait(120):
        raise RuntimeError(f"agentlab: {done.seen} of {n} completions in 120 s")
    return done.rate()


@asynccontextmanager
async def fs_ceo(url: str, login: dict):
    from faststream.nats import NatsBroker, NatsUserPassword

    broker = NatsBroker(url, name="bench-fs-ceo", logger=None,
                        security=NatsUserPassword(login["user"], login["password"])
                        if login else None)
    done, loop = Completions(), asyncio.get_running_loop()
    box: dict[str, asyncio.Future] = {}

    @broker.subscriber(COMPLETED.format(ORG_FS), no_reply=True)  # an event, not a request
    async def completed(event: dict) -> None:
        if done.saw(event["task_id"]):
            future = box.pop("done", None)
            if future is not None and not future.done():
                future.set_result(None)

    await broker.start()
    try:
        yield broker, done, box, loop
    finally:
        await broker.stop()


def fs_latency(url: str, login: dict, roles: list[str], n: int, warm: int) -> list[float]:
    async def body() -> list[float]:
        out, clock = [], time.perf_counter_ns
        async with fs_ceo(url, login) as (broker, done, box, loop):
            for k in range(warm + n):
                t0 = clock()
                role = roles[k % len(roles)]
                task = Task(org=ORG_FS, role=role, title="bench", requested_by="ceo")
                done.arm(expect=task.id)
                box["done"] = future = loop.create_future()
                await broker.publish(task, TASKS.format(role), stream=TASK_STREAM,
                                     headers={"Nats-Msg-Id": task.id})
                await asyncio.wait_for(future, 5)
                out.append((clock() - t0) / 1000)
        return out[warm:]
    return asyncio.run(body())


def fs_drain(url: str, login: dict, group: Group, n: int) -> float:
    group.ask("stop")

    async def body() -> float:
        await preload(url, login, ORG_FS, group.roles, n)
        async with fs_ceo(url, login) as (_broker, done, box, loop):
            done.arm(target=n)
            box["done"] = future = loop.create_future()
            await loop.run_in_executor(None, group.ask, "start")
            await asyncio.wait_for(future, 120)
            return done.rate()
    return asyncio.run(body())


async def preload(url: str, login: dict, org: str, roles: list[str], n: int) -> None:
    """n Task messages round-robin over ``roles`` (agentlab's model, the same bytes for both
    sides), published concurrently; untimed."""
    nc = await nats.connect(url, name="bench-preload", max_reconnect_attempts=0, **login)
    js = nc.jetstream()
    try:
        for start in range(0, n, 1000):
            tasks = [Task(org=org, role=roles[k % len(roles)], title="bench", requested_by="ceo")
                     for k in range(start, min(n, start + 1000))]
            await asyncio.gather(*(js.publish(TASKS.format(t.role), t.model_dump_json().encode(),
                                              headers={"Nats-Msg-Id": t.id}) for t in tasks))
    finally:
        await nc.close()


# -- idle ----------------------------------------------------------------------------------
def idle(group: Group, server_pid: int, seconds: float, env: dict) -> dict:
    woken = [h.wakeups() for h in group.hosts]
    counts, figures = _idle_window(group, server_pid, seconds, env)
    woken = [h.wakeups() - w for h, w in zip(group.hosts, woken, strict=True)]
    return {**figures, "wakeups": sum(woken) / seconds if min(woken) >= 0 else None,
            "beats": counts.get("beats", 0) / seconds,
            "beat_msgs": counts.get("heartbeat", 0) / seconds}


def _idle_window(group: Group, server_pid: int, seconds: float, env: dict
                 ) -> tuple[dict, dict]:
    # The tap's own start (an interpreter, a connection: ~0.5 s) lets the drain's last acks
    # and pull requests settle before the window opens.
    tap = subprocess.Popen([sys.executable, "-m", "benchmarks.scaling_hosts", "tap",
                            "--seconds", str(seconds)], stdout=subprocess.PIPE, env=env,
                           cwd=ROOT, text=True)
    assert tap.stdout is not None
    try:
        json.loads(tap.stdout.readline())  # ready
        before, server0, t0 = [h.stat() for h in group.hosts], Stat.of(server_pid), \
            time.monotonic()
        counts = json.loads(tap.stdout.readline())
        after, server1, t1 = [h.stat() for h in group.hosts], Stat.of(server_pid), \
            time.monotonic()
    finally:
        tap.wait(10)
    wall = t1 - t0
    grown = sum(a.rss - (h.base.rss if h.base else 0)
                for a, h in zip(after, group.hosts, strict=True))
    return counts, {
        "cpu_al": sum(a.cpu - b.cpu for a, b in zip(after, before, strict=True)) / wall * 100,
        "cpu_srv": (server1.cpu - server0.cpu) / wall * 100,
        "rss_agent": grown / len(group.roles) / 2**20,
        "threads": [a.threads for a in after],
        "api": (counts.get("pull", 0) + counts.get("other", 0)) / seconds,
        "pull": counts.get("pull", 0) / seconds}


# -- orchestration -------------------------------------------------------------------------
class Bench:
    """The server, the CEO and the hosts of one run; ``rows`` of the scaling table."""

    def __init__(self, args: Any):
        self.quick, self.rounds = args.quick, args.rounds or (1 if args.quick else 3)
        # A drain round takes seconds, a latency round a fraction of one: two drains keep
        # the whole run near three minutes on two cores.
        self.drain_rounds = args.rounds or (1 if args.quick else 2)
        self.n_lat, self.n_drain, self.idle_s = (100, 600, 2.0) if self.quick else \
            (200, 3000, 10.0)
        self.server = agentlab.EmbeddedServer(max_memory="1GB", max_file="4GB").start()
        self.url = self.server.url
        self.login = raw_login(self.url)  # for the raw nats-py and FastStream clients
        self.env = {**os.environ, **self.server.client_env()}
        self.logs = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
        self.ceo = agentlab.Client.open(self.url, name="bench-ceo")
        declare_reference_streams(self.ceo)
        TaskLedger.declare(self.ceo)  # its records are the completions agentlab announces
        self.done = Completions()
        self.sub = self.ceo.subscribe(COMPLETED.format(ORG_AL), self._completed)
        self.groups: list[Group] = []
        self.rows: list[dict] = []
        self.pairs: dict[str, tuple[float, ...]] = {}  # consumer state -> p50 ms of 1, 100

    async def _completed(self, msg: Any) -> None:
        if self.done.saw(json.loads(msg.data)["task_id"]):
            self.done.event.set()

    def open(self, kind: str, prefix: str, n: int, processes: int,
             limit: float = 90.0, shared: bool = False, on_file: bool = False) -> Group:
        group = Group(kind, prefix, n, processes, ORG_AL if kind == "agentlab" else ORG_FS,
                      self.env, self.logs, shared, on_file)
        self.groups.append(group)
        group.start(limit)
        return group

    def close(self, group: Group, last: bool = False) -> None:
        group.close()
        if group.retried:
            console.print(f"[yellow]  {group.retried} agent start(s) of {len(group.roles)} "
                          "roles timed out at JetStream (5 s) and were asked again")
        self.groups.remove(group)
        # No consumer of an earlier configuration stays on the server (the last: it stops).
        for role in [] if last else group.roles:
            self.ceo.js.delete_consumer(TASK_STREAM, role)

    def al_latency(self, group: Group, warm: int) -> list[float]:
        return al_latency(self.ceo, self.done, group.roles, self.n_lat, warm)

    def al_drain(self, group: Group) -> float:
        return al_drain(self.url, self.login, self.done, group, self.n_drain)

    def measure(self, group: Group, processes: int, lat: list[list[float]],
                drain: list[float], idle_s: float | None = None) -> None:
        self.rows.append({"roles": len(group.roles), "processes": processes,
                          "shared": group.shared, "on_file": group.on_file,
                          "p50": statistics.median(pct(r, 0.5) for r in lat) / 1000,
                          "p99": statistics.median(pct(r, 0.99) for r in lat) / 1000,
                          "drain": statistics.median(drain),
                          **idle(group, self.server.pid or 0, idle_s or self.idle_s,
                                 self.env)})

    def compare(self, n: int, results: dict) -> None:
        """N roles in one agentlab process beside FastStream's, interleaved; then idle."""
        warm, rounds = max(20, min(n, 100)), self.rounds
        console.print(f"[dim]{n} role(s): agentlab and FastStream interleaved, {rounds} "
                      f"round(s) of {self.n_lat} delegations, {self.drain_rounds} of a "
                      f"{self.n_drain:,}-task drain…")
        al, fs = self.open("agentlab", f"al{n}-", n, 1), self.open("faststream", f"fs{n}-", n, 1)
        lat_fs, lat_al = interleaved(
            rounds, lambda: fs_latency(self.url, self.login, fs.roles, self.n_lat, warm),
            lambda: self.al_latency(al, warm))
        drain_fs, drain_al = interleaved(
            self.drain_rounds, lambda: fs_drain(self.url, self.login, fs, self.n_drain),
            lambda: self.al_drain(al))
        self.close(fs)  # before the idle window: it would count FastStream's too
        self.measure(al, 1, lat_al, drain_al)
        self.close(al)
        label = f"{n} role" if n == 1 else f"{n} roles"  # no "(s)": report() reads it as seconds
        results[f"delegation p50 (µs), {label}"] = {
            "lower_is_better": True, "raw_rounds": [pct(r, 0.5) for r in lat_fs],
            "agentlab_rounds": [pct(r, 0.5) for r in lat_al]}
        results[f"  p99 (µs), {label}"] = {
            "lower_is_better": True, "raw_rounds": [pct(r, 0.99) for r in lat_fs],
            "agentlab_rounds": [pct(r, 0.99) for r in lat_al]}
        results[f"drain tasks/s, {label}"] = {"raw_rounds": drain_fs,
                                                  "agentlab_rounds": drain_al}

    def configuration(self, what: str, prefix: str, n: int, processes: int = 1,
                      shared: bool = False, on_file: bool = False) -> None:
        """One agentlab configuration on its own: latency rounds, drains, then idle."""
        console.print(f"[dim]{n} role(s) {what}…")
        group = self.open("agentlab", f"{prefix}{n}-", n, processes, shared=shared,
                          on_file=on_file)
        warm = max(20, min(n, 100))
        lat = [self.al_latency(group, warm) for _ in range(self.rounds)]
        drain = [self.al_drain(group) for _ in range(self.drain_rounds)]
        self.measure(group, processes, lat, drain)
        self.close(group)

    def p50_pair(self, on_file: bool = False) -> None:
        """The p50 target's own measurement: 1 role and 100 roles (one process each) open at
        once, their latency rounds interleaved ABBA, so that the ratio compares the same
        minutes of this shared machine (configurations run one after another drift apart)."""
        state = "file" if on_file else "memory"
        console.print("[dim]p50, 1 role against 100 interleaved (consumer state "
                      f"{'on file' if on_file else 'in memory'})…")
        pair = [self.open("agentlab", f"{state[0]}p{n}-", n, 1, on_file=on_file)
                for n in (1, 100)]
        lat = interleaved(2 * self.rounds, lambda: self.al_latency(pair[0], 20),
                          lambda: self.al_latency(pair[1], 100))
        self.pairs[state] = tuple(statistics.median(pct(x, 0.5) for x in rounds) / 1000
                                  for rounds in lat)
        for group in pair:
            self.close(group)

    def information(self, n: int) -> None:
        """N roles in one process, one round, if they start within ``info_limit``."""
        console.print(f"[dim]{n:,} roles in one process (information only)…")
        started = time.perf_counter()
        try:
            group = self.open("agentlab", f"al{n}-", n, 1, limit=INFO_LIMIT)
        except TimeoutError:
            self.rows.append({"roles": n, "processes": 1,
                              "skipped": f"skipped: took > {INFO_LIMIT:g} s to start"})
            return
        console.print(f"[dim]  started in {time.perf_counter() - started:.0f} s")
        lat = al_latency(self.ceo, self.done, group.roles, self.n_lat // 2, 100)
        self.measure(group, 1, [lat], [self.al_drain(group)], idle_s=self.idle_s / 2)
        self.close(group, last=True)

    def stop(self) -> None:
        for group in list(self.groups):
            group.close()
        self.sub.unsubscribe()
        self.ceo.close()
        self.server.stop()


def run(args: Any, results: dict) -> None:
    began = time.perf_counter()
    bench = Bench(args)

    def timed(step: Any, *args: Any) -> None:
        started = time.perf_counter()
        step(*args)
        console.print(f"[dim]  … {time.perf_counter() - started:.0f} s")

    try:
        for n in (1, 10) if bench.quick else (1, 10, 100):
            timed(bench.compare, n, results)
            if n >= PROCESSES:
                timed(bench.configuration, f"over {PROCESSES} agentlab processes", "p", n,
                      PROCESSES)
        timed(bench.configuration, "in one process on one shared connection", "s",
              10 if bench.quick else 100, 1, True)
        for n in (1, 10) if bench.quick else (1, 100):
            timed(bench.configuration, "in one process, consumer state on file", "f", n,
                  1, False, True)
        if not bench.quick:
            timed(bench.p50_pair)
            timed(bench.p50_pair, True)
            timed(bench.information, 1000)
    finally:
        bench.stop()
    shutil.rmtree(bench.logs, ignore_errors=True)  # the hosts' stderr, kept only on failure
    print_table(bench.rows, bench.idle_s, time.perf_counter() - began)
    print_flat_cost(bench.rows, bench.pairs)


def print_table(rows: list[dict], idle_s: float, seconds: float) -> None:
    from rich.table import Table

    table = Table(title="agentlab scaling: N roles, each its own connection and durable "
                        "consumer; a CEO delegating round-robin",
                  caption=f"idle: over {idle_s:g} s with the queues empty"
                          + (f" (the info row: {idle_s / 2:g} s)"
                             if any(r["roles"] > 100 for r in rows) else "")
                          + "; CPU (al: the agent processes, srv: nats-server) in % of one "
                          "core; RSS: the agent processes' growth ÷ N; API/s: $JS.API.> "
                          "requests (of which pull requests); wakes/s: the agent processes' "
                          "event-loop wakeups; beats/s: heartbeats (of the messages "
                          "carrying them). "
                          f"Took {seconds:.0f} s.")
    for col in ("roles", "procs", "p50 ms", "p99 ms", "drain/s", "CPU al", "CPU srv",
                "RSS/agent", "threads", "API/s (pull)", "wakes/s", "beats/s (msgs)"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        label = f"{r['roles']:,}" + (" (info)" if r["roles"] > 100 else "")
        if "skipped" in r:
            table.add_row(label, str(r["processes"]), r["skipped"], *[""] * 9)
            continue
        threads = r["threads"]
        procs = f"{r['processes']}" + (" shared" if r.get("shared") else "") + \
            (" on file" if r.get("on_file") else "")
        table.add_row(label, procs, f"{r['p50']:.2f}", f"{r['p99']:.2f}",
                      f"{r['drain']:,.0f}", f"{r['cpu_al']:.1f} %", f"{r['cpu_srv']:.1f} %",
                      f"{r['rss_agent']:.2f} MiB",
                      str(threads[0]) if len(threads) == 1 else
                      f"{len(threads)}×{threads[0]}" if len(set(threads)) == 1 else
                      "+".join(map(str, threads)),
                      f"{r['api']:,.1f} ({r['pull']:,.1f})",
                      "—" if r.get("wakeups") is None else f"{r['wakeups']:,.0f}",
                      f"{r.get('beats', 0):,.1f} ({r.get('beat_msgs', 0):,.1f})")
    console.print(table)


# The flat-cost targets (DESIGN decision 13): 100 roles in one process against 1, same run.
P50_RATIO, DRAIN_RATIO, IDLE_CPU = 1.3, 0.9, 3.0


def flat_cost(rows: list[dict], pairs: dict[str, tuple[float, ...]] | None = None
              ) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, bound, passed) for each flat-cost target; passed None when a
    configuration it needs was not run (``--quick`` runs 1 and 10 roles only). The p50
    target reads the interleaved pair (Bench.p50_pair) when there is one."""
    pairs = pairs or {}

    def one(n: int, on_file: bool = False) -> dict | None:
        return next((r for r in rows if r["roles"] == n and r["processes"] == 1
                     and not r.get("shared") and bool(r.get("on_file")) == on_file
                     and "skipped" not in r), None)

    out: list[tuple[str, str, str, bool | None]] = []
    for on_file, label in ((False, ""), (True, ", consumer state on file")):
        first, hundred = one(1, on_file), one(100, on_file)
        if first is None or hundred is None:
            out += [(f"p50, 100 roles ÷ 1{label}", "not run", f"≤ {P50_RATIO:g}x", None),
                    (f"drain, 100 roles ÷ 1{label}", "not run", f"≥ {DRAIN_RATIO:g}x", None)]
            continue
        p50, drain = hundred["p50"] / first["p50"], hundred["drain"] / first["drain"]
        pair, how = pairs.get("file" if on_file else "memory"), ""
        if pair is not None:  # the same minutes, interleaved
            p50, how = pair[1] / pair[0], f" (interleaved: {pair[0]:.2f} → {pair[1]:.2f} ms)"
        # The targets hold for the defaults; consumers on file are shown for comparison.
        out += [(f"p50, 100 roles ÷ 1{label}{how}", f"{p50:.2f}x",
                 "(info)" if on_file else f"≤ {P50_RATIO:g}x",
                 None if on_file else p50 <= P50_RATIO),
                (f"drain, 100 roles ÷ 1{label}", f"{drain:.2f}x",
                 "(info)" if on_file else f"≥ {DRAIN_RATIO:g}x",
                 None if on_file else drain >= DRAIN_RATIO)]
    for r in rows:
        if "skipped" in r or r["roles"] > 100:
            continue  # the 1,000-role row is information
        cpu = r["cpu_al"] + r["cpu_srv"]
        where = f"{r['roles']} role(s), {r['processes']} process(es)" + \
            (", 1 connection" if r.get("shared") else "") + \
            (", consumer state on file" if r.get("on_file") else "")
        out.append((f"idle CPU (agents + server), {where}", f"{cpu:.1f} %",
                    f"≤ {IDLE_CPU:g} % of a core", cpu <= IDLE_CPU))
    return out


def print_flat_cost(rows: list[dict], pairs: dict[str, tuple[float, ...]] | None = None
                    ) -> None:
    from rich.table import Table

    table = Table(title="Flat cost: 100 roles against 1, same run (DESIGN decision 13)")
    for col in ("target", "measured", "bound", "result"):
        table.add_column(col, justify="left" if col == "target" else "right", no_wrap=True)
    checks = flat_cost(rows, pairs)
    for name, measured, bound, ok in checks:
        table.add_row(name, measured, bound,
                      {True: "[green]PASS", False: "[bold red]FAIL", None: "—"}[ok])
    console.print(table)
    failed = [name for name, _, _, ok in checks if ok is False]
    counted = [c for c in checks if c[3] is not None]
    if failed:
        console.print(f"[bold red]FLAT COST: {len(counted) - len(failed)}/{len(counted)} "
                      f"targets met; FAILED: {'; '.join(failed)}")
    else:
        console.print(f"[bold green]FLAT COST: all {len(counted)} targets met")


if __name__ == "__main__":
    sys.exit(main(__doc__, run, TITLE, CAPTION, "agentlab", raw_label="FastStream"))
