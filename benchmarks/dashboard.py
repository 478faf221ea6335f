"""The dashboard's cost: the reference organisation's throughput with and without it open,
under a paced load of about 5,000 messages per second.

    python -m benchmarks.dashboard            # 3 interleaved rounds per side, 1M-message soak
    python -m benchmarks.dashboard --quick    # 2 rounds per side, shorter, 100k soak (smoke)
    python -m benchmarks.dashboard --rate 6000 --seconds 20   # another load, longer rounds

Method. One embedded nats-server, the reference streams and an Organisation whose CTO role
(two instances) does the work: the reference CTO handler (progress note, audit event,
ledger, ack, completion). A pacer thread offers tasks at a steady rate (what
``org.assign`` does, without waiting for each receipt) chosen so that the traffic the
observer taps -- publishes, deliveries, acks, progress, completions, ... -- is about
``--rate`` messages per second (default 5,000, the issue's figure). The messages per task
are measured first, with an observer open, at that load. Each round offers tasks for
``--seconds`` (default 10; ``--quick`` 5) and counts the tasks completed inside the window
(after one second of ramp-up), then lets the backlog drain before the next round. "With"
rounds have a Dashboard (observer connection, four views, the UI pump rendering at up to
10 Hz) open the whole time; there is no browser, so the cost measured is the observer's
taps, ingest and rendering, not a frontend's.
Rounds alternate (ABBA...). The ratio is delivered throughput with ÷ without: it only falls
below 1 if the dashboard takes enough CPU for the organisation to fall behind the offered
load. Also measured: each view's updates per second during the "with" rounds, and the
process's resident memory while one million messages (``--quick``: 100,000) pass the
observer flat out: it must stay flat.

It is a report: the exit code is 0 whatever the figures; read the table and the SUMMARY.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import threading
import time

from rich.table import Table

import agentlab
from agentlab import EmbeddedServer
from agentlab.errors import AgentlabError
from agentlab.observe import Observer
from agentlab.org import Organisation, Task
from agentlab.widgets import Dashboard

from .common import console, machine, parser, spread

TARGET_RATIO = 0.90
TARGET_UPDATES = 10.5   # per view per second ("at most ~10")
TARGET_RSS_MIB = 64
RAMP = 1.0              # seconds of each round not counted (the pacer and agents settle)


def rss_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Completions:
    """Counts ``tasks.completed`` events (a core subscription on the lab connection)."""

    def __init__(self, lab: agentlab.Client, org: str):
        self.count = 0

        async def seen(msg) -> None:
            self.count += 1

        lab.subscribe(f"genbrain.org.{org}.tasks.completed", seen)


class Pacer(threading.Thread):
    """Offers ``rate`` tasks per second to the CTO until stopped, as ``org.assign`` would
    (a JetStream publish plus the ``tasks.created`` event), without waiting for each
    receipt: the offered load does not depend on the loop's round-trip time. At most
    ``window`` receipts are outstanding; ``offered`` counts the stored tasks."""

    def __init__(self, org: Organisation, rate: float, prefix: str, window: int = 500):
        super().__init__(name="bench-pacer", daemon=True)
        self.org, self.rate, self.prefix, self.window = org, rate, prefix, window
        self.sent = 0
        self.offered = 0
        self.failed = 0
        self.stop_event = threading.Event()

    async def _assign(self, title: str) -> None:
        org = self.org
        task = Task(org=org.org, role="cto", title=title, details={}, requested_by="board")
        try:
            await org.lab.js.apublish(org.subjects.tasks("cto"), task, msg_id=task.id)
            await org.lab.apublish(org.subjects.tasks_created(org.org), task)
            self.offered += 1
        except (AgentlabError, TimeoutError, ConnectionError):  # counted, not offered
            self.failed += 1

    def run(self) -> None:
        bridge = self.org.lab._bridge
        started = time.perf_counter()
        while not self.stop_event.is_set():
            due = int((time.perf_counter() - started) * self.rate)
            while (self.sent < due and self.sent - self.offered - self.failed < self.window
                   and not self.stop_event.is_set()):
                bridge.submit(self._assign(f"{self.prefix} {self.sent}"))
                self.sent += 1
            self.stop_event.wait(0.005)

    def stop(self) -> int:
        """Stop offering; wait for the outstanding receipts; returns the tasks stored."""
        self.stop_event.set()
        self.join()
        deadline = time.monotonic() + 10
        while self.offered + self.failed < self.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.offered


def one_round(lab: agentlab.Client, org: Organisation, completions: Completions,
              rate: float, seconds: float, with_dashboard: bool, label: str) -> dict:
    """Offer ``rate`` tasks/s for ``seconds``; completions counted after RAMP seconds."""
    dash = Dashboard(lab, org) if with_dashboard else None
    gc.collect()
    cpu0 = time.process_time()
    pacer = Pacer(org, rate, label)
    pacer.start()
    time.sleep(RAMP)
    done0, sent0 = completions.count, pacer.offered
    seen0 = dash.observer.recorder.received if dash else 0
    before = {type(v).__name__: v.updates for v in dash.views} if dash else {}
    started = time.perf_counter()
    time.sleep(seconds - RAMP)
    took = time.perf_counter() - started
    done, offered = completions.count - done0, pacer.offered - sent0
    seen = dash.observer.recorder.received - seen0 if dash else 0
    views = {type(v).__name__: (v.updates - before[type(v).__name__]) / took
             for v in dash.views} if dash else {}
    sent = pacer.stop()
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - started + RAMP)
    dropped = dash.observer.recorder.dropped if dash else 0
    # let the backlog drain so the next round starts level (not timed)
    deadline = time.monotonic() + 60
    while completions.count < completions.total_before + sent and time.monotonic() < deadline:
        time.sleep(0.05)
    completions.total_before = completions.count
    if dash is not None:
        dash.close()
    return {"tasks_per_s": done / took, "offered_per_s": offered / took,
            "observed_msgs_per_s": seen / took, "views": views, "cpu": cpu,
            "observer_dropped": dropped}


def messages_per_task(lab: agentlab.Client, org: Organisation, completions: Completions,
                      rate: float, seconds: float) -> float:
    """What the observer taps per task, measured at a paced load (all four taps)."""
    obs = Observer(lab).start()
    pacer = Pacer(org, rate, "Count task")
    pacer.start()
    time.sleep(RAMP)
    seen0, done0 = obs.recorder.received, completions.count
    time.sleep(seconds)
    seen, done = obs.recorder.received - seen0, completions.count - done0
    sent = pacer.stop()
    deadline = time.monotonic() + 30
    while completions.count < completions.total_before + sent and time.monotonic() < deadline:
        time.sleep(0.05)
    completions.total_before = completions.count
    obs.stop()
    return seen / max(1, done)


def soak(lab: agentlab.Client, total: int) -> tuple[list[tuple[int, float]], Observer]:
    """Push ``total`` core messages past an observer with views open; RSS along the way."""
    obs = Observer(lab, root="genbrain").start()
    dash = Dashboard(lab, observer=obs)
    payload = b'{"sender":"bench","type":"load","payload":{"n":1}}'
    samples = []
    sent = 0
    batch = 5_000
    while sent < total:
        for _ in range(batch):
            lab.publish("genbrain.bench.load", payload)
        sent += batch
        lab.flush()
        # keep at most ~50k in flight to the observer: nats-py would call it slow otherwise
        deadline = time.monotonic() + 10
        while obs.recorder.received < sent - 50_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        if sent % (total // 10) == 0:
            gc.collect()
            samples.append((sent, rss_mib()))
    dash.close()
    obs.stop()
    return samples, obs


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--rate", type=float, default=5_000.0,
                   help="messages per second the observer should tap (default 5000)")
    p.add_argument("--seconds", type=float, help="length of a round (default 10, quick 5)")
    args = p.parse_args()
    os.environ.pop("AGENTLAB_NATS_URL", None)
    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (5.0 if args.quick else 10.0)
    soak_total = 100_000 if args.quick else 1_000_000
    info = machine()
    info["load before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with EmbeddedServer(name="bench-dashboard", max_memory="1GB", max_file="4GB") as server:
        lab = agentlab.Client.open(server.url, name="bench")
        org = Organisation(lab, "bench", heartbeat_interval=1.0, monitor_interval=1.0,
                           instances={"ceo": 0, "cfo": 0, "cto": 2}).start()
        completions = Completions(lab, "bench")
        completions.total_before = 0
        # calibrate: a first guess of ~12 messages a task, then measure at that load
        per_task = messages_per_task(lab, org, completions, args.rate / 12, 3.0)
        per_task = messages_per_task(lab, org, completions, args.rate / per_task, 3.0)
        task_rate = args.rate / per_task
        console.print(f"[dim]{per_task:.1f} messages per task: offering {task_rate:,.0f} "
                      f"tasks/s for ≈ {args.rate:,.0f} messages/s")
        without, with_ = [], []
        for r in range(rounds):
            for side in ((False, True) if r % 2 == 0 else (True, False)):
                res = one_round(lab, org, completions, task_rate, seconds, side,
                                f"Bench {r}{'w' if side else 'o'}")
                (with_ if side else without).append(res)
                console.print(f"[dim]round {r + 1} {'with   ' if side else 'without'} "
                              f"dashboard: {res['tasks_per_s']:,.0f} tasks/s done of "
                              f"{res['offered_per_s']:,.0f} offered"
                              + (f", observer tapped {res['observed_msgs_per_s']:,.0f} msg/s"
                                 if side else "") + f", process CPU {res['cpu']:.0%}")
        samples, observer = soak(lab, soak_total)
        org.stop()
        lab.close()
    info["load after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    base, dash = med(without, "tasks_per_s"), med(with_, "tasks_per_s")
    ratio = dash / base if base else 0.0
    worst = max((max(r["views"].values()) for r in with_), default=0.0)
    growth = samples[-1][1] - samples[0][1] if len(samples) > 1 else 0.0
    observed = med(with_, "observed_msgs_per_s")
    table = Table(title=f"Dashboard open vs closed: reference organisation at ≈ "
                        f"{args.rate:,.0f} messages/s (paced)",
                  caption=f"medians of {rounds} interleaved rounds of {seconds:g} s per side; "
                          "spread = (max - min) / median")
    for col in ("measure", "without dashboard", "with dashboard", "ratio", "target", "result"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    ok_ratio = ratio >= TARGET_RATIO
    table.add_row("tasks/s offered", f"{med(without, 'offered_per_s'):,.0f}",
                  f"{med(with_, 'offered_per_s'):,.0f}", "", "", "")
    table.add_row("tasks/s completed (delivered throughput)", f"{base:,.0f}", f"{dash:,.0f}",
                  f"{ratio:.2f}", f"≥ {TARGET_RATIO:.2f}", _verdict(ok_ratio))
    table.add_row("messages/s (with: tapped by the observer)", f"{base * per_task:,.0f}",
                  f"{observed:,.0f}", f"{observed / (base * per_task):.2f}" if base else "",
                  "", "")
    table.add_row("process CPU (all threads, 1.0 = one core)",
                  f"{med(without, 'cpu'):.2f}", f"{med(with_, 'cpu'):.2f}", "", "", "")
    table.add_row("spread of the rounds (tasks/s)",
                  spread([r["tasks_per_s"] for r in without]),
                  spread([r["tasks_per_s"] for r in with_]), "", "", "")
    ok_updates = worst <= TARGET_UPDATES
    table.add_row("view updates/s (busiest view)", "", f"{worst:.1f}", "", "≤ ~10",
                  _verdict(ok_updates))
    ok_memory = growth < TARGET_RSS_MIB
    table.add_row(f"RSS growth over {soak_total:,} messages", "",
                  f"{growth:+.1f} MiB", "", f"< {TARGET_RSS_MIB} MiB", _verdict(ok_memory))
    console.print(table)
    console.print(f"[dim]messages per task ≈ {per_task:.1f}; RSS samples (messages, MiB): "
                  + ", ".join(f"{s:,}: {m:.0f}" for s, m in samples)
                  + f"; soak observer saw {observer.recorder.received:,}, dropped "
                  f"{observer.recorder.dropped:,}; observer drops in paced rounds: "
                  f"{sum(r['observer_dropped'] for r in with_):,}")
    console.print("[dim]" + "  ".join(f"{k}: {v}" for k, v in info.items()))
    console.print(f"dashboard/without throughput ratio: {ratio:.2f}")
    verdicts = {"throughput ratio": ok_ratio, "view updates/s": ok_updates,
                "memory bounded": ok_memory}
    failed = [name for name, ok in verdicts.items() if not ok]
    if failed:
        console.print(f"[bold red]SUMMARY: {len(verdicts) - len(failed)}/{len(verdicts)} "
                      f"targets met; FAILED: {'; '.join(failed)}")
    else:
        console.print(f"[bold green]SUMMARY: all {len(verdicts)} targets met")
    if args.json:
        import json

        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "quick": args.quick, "rate": args.rate,
                       "seconds": seconds, "messages_per_task": per_task,
                       "task_rate": task_rate, "without": without, "with": with_,
                       "ratio": ratio, "rss_samples": samples, "verdicts": verdicts}, f,
                      indent=2)
    return 0


def _verdict(ok: bool) -> str:
    return "[green]PASS" if ok else "[bold red]FAIL"


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    raise SystemExit(main())
