"""Delegation through agentlab's Agent against the same flow in raw nats-py, one process.

    make bench                                   # foundation, then this
    python -m benchmarks.delegation --quick      # smoke test (CI)
    python -m benchmarks.delegation --json out.json

The flow, over one embedded nats-server with the reference streams: a CEO publishes a Task
(JSON, Nats-Msg-Id = id) into AGENT_TASKS; a durable pull consumer (explicit ack,
max_deliver 3, max_ack_pending 256) hands it to a worker that decodes it, runs a trivial
async handler, records its TaskCompleted in TASK_LEDGER (key "<org>.<id>", first record wins,
Nats-Msg-Id "<org>.<id>.completed") and acks. The ledger's stream republishes the record on the
completion subject (stored by AGENT_EVENTS), which the CEO observes: agentlab/org/ledger.py.
agentlab: a Task model through ``client.js.publish`` from the main thread, an ``Agent`` with
default options on its own client (it keeps pull requests outstanding for as many tasks as
it has room for: agentlab/continuous_pull.py), a subscription. Raw: hand-written nats-py on
``asyncio.run``.
The raw flow has no lease, so the compared Agent runs with ``lease=False``; its default
``ledger_precheck="auto"`` reads the ledger before the handler only when a delivery could be
a repeat, which makes it the raw flow's equivalent here. The indented rows show
``ledger_precheck=True``, which reads it before every task, and the Agent's defaults, which
claim each task's lease before running it (one replicated write more: org/leases.py).

Method, and why:
* Same process on purpose: agentlab runs CEO and agent in one process (caller thread plus
  bridge thread, one GIL), so raw does too; a subprocess would give raw a GIL of its own.
* Latency: one task in flight, from building the task to seeing its completion. Raw pulls
  with fetch(1), its best choice here (a pull for more waits until all came or it expired).
* Throughput: N tasks pre-loaded with the worker stopped (one untimed loader for both: a
  sync publish loop would time the publisher); the clock runs from starting the worker
  until the N-th completion is seen. Raw pulls batches, up to 256 outstanding, and runs them
  concurrently; the Agent runs up to max_ack_pending = 256 tasks at once.
* Each round uses a fresh role (durable consumer); rounds interleave as in foundation.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError

import agentlab
from agentlab.org import (
    LEDGER_BUCKET,
    TASK_STREAM,
    Agent,
    Task,
    TaskLedger,
    declare_reference_streams,
)

from .common import console, interleaved, main, pct, raw_login, run_raw

MAX_ACK = 256
ALREADY_RECORDED = 10077  # the ledger keeps one message per key: "maximum messages per subject"
TASKS, COMPLETED = "genbrain.agents.{}.tasks", "genbrain.org.{}.tasks.completed"
_roles = itertools.count(1)
TITLE = "agentlab Agent vs raw nats-py: delegation through JetStream, one server, one process"
CAPTION = ("ratio = agentlab ÷ raw. Latency: LOWER is better; tasks/s: HIGHER is better.\n"
           "Figures are medians of per-round figures; spread = (max - min) / median of the "
           "rounds.")


# -- raw nats-py: the same flow, written by hand -------------------------------------------
class RawWorker:
    """Pull, decode, handle, record in the ledger (which the server announces), ack: what
    the Agent does."""

    def __init__(self, nc: nats.NATS, role: str, batch: int):
        self.nc, self.role, self.batch = nc, role, batch
        self.instance = f"{role}-1"
        self.running, self.loop_task = True, None

    async def start(self) -> None:
        js = self.nc.jetstream()
        await js.add_consumer(TASK_STREAM, ConsumerConfig(
            durable_name=self.role, filter_subject=TASKS.format(self.role),
            ack_policy=AckPolicy.EXPLICIT, ack_wait=300, max_deliver=3,
            max_ack_pending=MAX_ACK, deliver_policy=DeliverPolicy.ALL,
            mem_storage=True))  # as agentlab's role consumers keep their state by default
        self.js = js
        psub = await js.pull_subscribe_bind(durable=self.role, stream=TASK_STREAM)
        self.loop_task = asyncio.ensure_future(self.consume(psub))

    async def stop(self) -> None:
        self.running = False
        if self.loop_task is not None:
            await self.loop_task  # ends after its current fetch (<= 0.5 s), as Agent.stop()

    async def consume(self, psub) -> None:
        in_hand: set[asyncio.Future] = set()
        while self.running:
            if len(in_hand) >= self.batch:
                await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                msgs = await psub.fetch(self.batch - len(in_hand), timeout=0.5)
            except asyncio.TimeoutError:
                continue
            for msg in msgs:
                job = asyncio.ensure_future(self.process(msg))
                in_hand.add(job)
                job.add_done_callback(in_hand.discard)
        if in_hand:
            await asyncio.wait(in_hand)

    async def process(self, msg) -> None:
        task = json.loads(msg.data)
        started = time.perf_counter()
        result = await handler(task)
        event = {"task_id": task["id"], "org": task["org"], "role": self.role,
                 "instance": self.instance, "title": task["title"], "result": result,
                 "deliveries": msg.metadata.num_delivered,
                 "duration_ms": (time.perf_counter() - started) * 1e3,
                 "completed_at": datetime.now(timezone.utc).isoformat(),
                 "correlation_id": task.get("correlation_id") or task["id"]}
        # The record is the announcement: the ledger's stream republishes it as the completion.
        try:
            await self.js.publish(f"$KV.{LEDGER_BUCKET}.{task['org']}.{task['id']}",
                                  json.dumps(event).encode(),
                                  headers={"Nats-Msg-Id": f"{task['org']}.{task['id']}.completed"})
        except APIError as error:
            if error.err_code != ALREADY_RECORDED:
                raise
            # recorded already: the Agent would ack and announce again; not on this path
        await msg.ack()


async def handler(task, ctx=None) -> dict:
    """The trivial async handler, on both sides."""
    return {"ok": True}


class CountTo:
    """Observes completions (async, so it runs on the loop); sets ``done`` at the n-th."""

    def __init__(self, n: int, done):
        self.n, self.seen, self.done = n, 0, done

    async def __call__(self, msg) -> None:
        self.seen += 1
        if self.seen == self.n:
            self.done.set()


def raw_task(org: str, role: str) -> tuple[str, bytes]:
    task_id = uuid.uuid4().hex
    return task_id, json.dumps({
        "id": task_id, "org": org, "role": role, "title": "bench", "details": {},
        "requested_by": "ceo", "created_at": datetime.now(timezone.utc).isoformat(),
        "correlation_id": None, "causation_id": None}).encode()


async def raw_session(url: str, batch: int, body):
    """A fresh role, a CEO and a worker connection (set-up and tear-down are not timed)."""
    role = f"bench-raw-{next(_roles)}"
    ceo = await nats.connect(url, name="bench-raw-ceo", **raw_login(url))
    wnc = await nats.connect(url, name="bench-raw-worker", **raw_login(url))
    worker = RawWorker(wnc, role, batch)
    try:
        return await body(ceo, role, worker)
    finally:
        await worker.stop()
        await wnc.close()
        await ceo.close()


def raw_latency(url: str, n: int, warm: int) -> list[float]:
    async def body(ceo, role, worker):
        js, box = ceo.jetstream(), {}

        async def on_completed(msg):
            box["done"].set_result(msg)
        await ceo.subscribe(COMPLETED.format("bench-raw"), cb=on_completed)
        await worker.start()
        clock, out = time.perf_counter_ns, []
        for _ in range(warm + n):
            box["done"] = asyncio.get_running_loop().create_future()
            t0 = clock()
            task_id, payload = raw_task("bench-raw", role)
            await js.publish(TASKS.format(role), payload, headers={"Nats-Msg-Id": task_id})
            msg = await asyncio.wait_for(box["done"], 5)
            out.append((clock() - t0) / 1000)
            assert json.loads(msg.data)["task_id"] == task_id
        return out[warm:]
    return asyncio.run(raw_session(url, 1, body))


def raw_throughput(url: str, n: int) -> float:
    async def body(ceo, role, worker):
        await preload(ceo, "bench-raw-t", role, n)
        observer = CountTo(n, asyncio.Event())
        await ceo.subscribe(COMPLETED.format("bench-raw-t"), cb=observer.__call__)
        await ceo.flush()
        t0 = time.perf_counter()
        await worker.start()
        await asyncio.wait_for(observer.done.wait(), 120)
        return n / (time.perf_counter() - t0)
    return asyncio.run(raw_session(url, MAX_ACK, body))


async def preload(nc: nats.NATS, org: str, role: str, n: int) -> None:
    """Store n Task messages (agentlab's model, so both sides get the same bytes); untimed."""
    js = nc.jetstream()
    for start in range(0, n, 1000):
        tasks = [Task(org=org, role=role, title="bench", requested_by="ceo")
                 for _ in range(min(1000, n - start))]
        await asyncio.gather(*(js.publish(TASKS.format(role), t.model_dump_json().encode(),
                                          headers={"Nats-Msg-Id": t.id}) for t in tasks))


# -- agentlab ------------------------------------------------------------------------------
def new_agent(client: agentlab.Client, org: str, **options) -> Agent:
    return Agent(client, f"bench-cto-{next(_roles)}", org=org, handler=handler,
                 max_ack_pending=MAX_ACK, ack_wait=300, max_deliver=3, **options)


def al_latency(ceo: agentlab.Client, worker: agentlab.Client, sub, n: int, warm: int,
               **options) -> list[float]:
    agent = new_agent(worker, "bench-al", **options).start()
    subject, clock, out = TASKS.format(agent.role), time.perf_counter_ns, []
    try:
        for _ in range(warm + n):
            t0 = clock()
            task = Task(org="bench-al", role=agent.role, title="bench", requested_by="ceo")
            ceo.js.publish(subject, task, msg_id=task.id)
            msg = sub.next(timeout=5)
            out.append((clock() - t0) / 1000)
            assert msg.json()["task_id"] == task.id
    finally:
        agent.stop()
    return out[warm:]


def al_throughput(url: str, ceo: agentlab.Client, worker: agentlab.Client, n: int,
                  **options) -> float:
    agent = new_agent(worker, "bench-al-t", **options)
    run_raw(url, preload, "bench-al-t", agent.role, n)
    observer = CountTo(n, threading.Event())
    sub = ceo.subscribe(COMPLETED.format("bench-al-t"), observer.__call__)
    try:
        t0 = time.perf_counter()
        agent.start()
        if not observer.done.wait(120):
            raise RuntimeError(f"agentlab: {observer.seen} of {n} completions in 120 s")
        return n / (time.perf_counter() - t0)
    finally:
        agent.stop()
        sub.unsubscribe()


# -- orchestration -------------------------------------------------------------------------
# The compared flow (no lease, as raw), the ledger read before every task, the defaults.
CONFIGS: tuple[dict, ...] = ({"lease": False}, {"lease": False, "ledger_precheck": True}, {})


def run(args, results: dict) -> None:
    quick, rounds = args.quick, args.rounds or (1 if args.quick else 3)
    n_lat, warm, n_tput = (300, 50, 2_000) if quick else (2_000, 200, 20_000)
    server = agentlab.EmbeddedServer(max_memory="1GB").start()
    clients: list[agentlab.Client] = []
    try:
        url = server.url
        ceo = agentlab.Client.open(url, name="bench-ceo")
        worker = agentlab.Client.open(url, name="bench-cto")
        clients += [ceo, worker]
        declare_reference_streams(ceo)
        TaskLedger.declare(ceo)  # append-only, and republishes each record as its completion
        completions = ceo.subscribe(COMPLETED.format("bench-al"))

        console.print(f"[dim]delegation latency: {rounds} round(s) × {n_lat} tasks, one in "
                      "flight (agentlab: lease=False, then ledger_precheck=True, then the "
                      "defaults, leases on)…")
        raws, als = interleaved(rounds, lambda: raw_latency(url, n_lat, warm), lambda: tuple(
            al_latency(ceo, worker, completions, n_lat, warm, **options)
            for options in CONFIGS))
        for name, q, i, extra in (
                ("delegation p50 (µs)", 0.5, 0, {"absolute": 1000, "target": 1.3,
                                                  "target_text": "< 1 ms, ≤ 1.30"}),
                ("delegation p99 (µs)", 0.99, 0, {}),
                ("  p50, ledger read every task (µs)", 0.5, 1, {}),
                ("  p99, ledger read every task (µs)", 0.99, 1, {}),
                ("  p50, leases on: the defaults (µs)", 0.5, 2, {}),
                ("  p99, leases on: the defaults (µs)", 0.99, 2, {})):
            results[name] = {"lower_is_better": True, **extra,
                             "raw_rounds": [pct(r, q) for r in raws],
                             "agentlab_rounds": [pct(a[i], q) for a in als]}

        console.print(f"[dim]throughput: {rounds} round(s) × {n_tput:,} pre-loaded tasks…")
        raws, als = interleaved(rounds, lambda: raw_throughput(url, n_tput), lambda: tuple(
            al_throughput(url, ceo, worker, n_tput, **options) for options in CONFIGS))
        results[f"tasks/s ({n_tput:,} queued)"] = {
            "absolute": 5000, "target": 1 / 1.3, "target_text": "≥ 5,000, ≥ 0.77",
            "raw_rounds": raws, "agentlab_rounds": [a[0] for a in als]}
        results["  tasks/s, ledger read every task"] = {
            "raw_rounds": raws, "agentlab_rounds": [a[1] for a in als]}
        results["  tasks/s, leases on: the defaults"] = {
            "raw_rounds": raws, "agentlab_rounds": [a[2] for a in als]}
    finally:
        for client in clients:
            client.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main(__doc__, run, TITLE, CAPTION, "agentlab"))
