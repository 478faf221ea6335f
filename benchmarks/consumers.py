"""The server's part of the scaling table's p50: raw nats-py delegating round-robin over N
durable consumers of one stream, with the consumers' state on file and in memory.

    make bench                                   # ..., scaling, then this
    python -m benchmarks.consumers --quick       # fewer messages (smoke test)

What it answers: the scaling table's p50 grows from 1 role to 100 for agentlab and for
FastStream alike. Is that the clients, or nats-server? Here no agentlab code runs: one
nats-py connection, one work-queue stream on file (as AGENT_TASKS), N durable pull
consumers each filtered to its own subject (as the roles' consumers). Each round trip
publishes one message to consumer k's subject (acknowledged by the stream) and times until
it is delivered, then acks it; k goes round-robin over the N, as the CEO's delegations do.
Two ways to ask: a fresh pull request for one message before each publish ("a request per
message", what a fetch(1) loop does), or one long request for 5 parked at every consumer
and asked again when 2 are left ("parked requests", what agentlab's agents keep). Each with
the consumers' state on file (JetStream's default, and agentlab's) and in memory
(``mem_storage``: delivery state lost on a restart), 1 and 100 consumers each, ABBA.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

import agentlab

from .common import console, interleaved, machine, parser, pct, raw_login

COUNTS = (1, 100)
STATES = ("file", "memory")
ASKING = ("a request per message", "parked requests")
PARKED = {"batch": 5, "expires": 10_000_000_000, "idle_heartbeat": 5_000_000_000}
_streams = iter(range(1_000_000))


async def _round(url: str, consumers: int, state: str, parked: bool, n: int) -> list[float]:
    nc = await nats.connect(url, name="bench-consumers", **raw_login(url))
    js = nc.jetstream()
    name = f"BENCH_CONSUMERS_{next(_streams)}"
    try:
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.*"],
                                         retention=RetentionPolicy.WORK_QUEUE))
        for k in range(consumers):
            await js.add_consumer(name, ConsumerConfig(
                durable_name=f"r{k}", filter_subject=f"{name}.r{k}",
                ack_policy=AckPolicy.EXPLICIT, mem_storage=state == "memory"))
        arrived: asyncio.Queue[float] = asyncio.Queue()
        owed = [0] * consumers
        inbox = nc.new_inbox()

        async def ask(k: int, request: dict) -> None:
            owed[k] = request["batch"]
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{name}.r{k}",
                             json.dumps(request).encode(), reply=f"{inbox}.{k}")

        async def delivered(msg, k: int) -> None:
            if msg.reply:  # not a status
                arrived.put_nowait(time.perf_counter())
                await msg.ack()
                owed[k] -= 1
                if parked and owed[k] <= 2:
                    await ask(k, PARKED)
            elif parked and (msg.headers or {}).get("Status") in ("408", "409"):
                await ask(k, PARKED)

        for k in range(consumers):
            async def to(msg, k: int = k) -> None:  # nats-py wants a coroutine function
                await delivered(msg, k)
            await nc.subscribe(f"{inbox}.{k}", cb=to)
            if parked:
                await ask(k, PARKED)
        took = []
        for i in range(n):
            k = i % consumers
            if not parked:
                await ask(k, {"batch": 1, "expires": 5_000_000_000})
            began = time.perf_counter()
            await js.publish(f"{name}.r{k}", b"task")
            took.append(await asyncio.wait_for(arrived.get(), 5) - began)
        return took[n // 10:]  # the first pass over the consumers warms them
    finally:
        await js.delete_stream(name)
        await nc.close()


def run(args) -> int:
    n = 300 if args.quick else 2_000
    rounds = args.rounds or (1 if args.quick else 3)
    server = agentlab.EmbeddedServer(max_memory="1GB").start()
    try:
        p50: dict[tuple[str, str, int], list[float]] = {}
        console.print(f"[dim]{rounds} round(s) × {n} round trips per configuration, "
                      "interleaved…")
        for asking in ASKING:
            for state in STATES:
                def p50_of(count: int, state: str = state, asking: str = asking) -> float:
                    return pct(asyncio.run(_round(server.url, count, state,
                                                  asking == ASKING[1], n)), 0.5) * 1e6
                few, many = interleaved(rounds, lambda: p50_of(COUNTS[0]),
                                        lambda: p50_of(COUNTS[1]))
                p50[(asking, state, COUNTS[0])], p50[(asking, state, COUNTS[1])] = few, many
    finally:
        server.stop()
    print_table(p50, machine())
    return 0


def print_table(p50: dict[tuple[str, str, int], list[float]], info: dict) -> None:
    from rich.table import Table

    table = Table(title="nats-server alone: publish → delivery round-robin over N durable "
                        "consumers (raw nats-py, one connection)",
                  caption="p50 in µs, medians of the rounds; ratio: 100 consumers ÷ 1. "
                          "Consumer state on file is JetStream's default and agentlab's.")
    for col in ("asking", "consumer state", f"{COUNTS[0]} consumer", f"{COUNTS[1]} consumers",
                "ratio"):
        table.add_column(col, justify="right")
    for asking in ASKING:
        for state in STATES:
            few = statistics.median(p50[(asking, state, COUNTS[0])])
            many = statistics.median(p50[(asking, state, COUNTS[1])])
            table.add_row(asking, state, f"{few:,.0f}", f"{many:,.0f}", f"{many / few:.2f}")
    console.print(table)
    console.print("[dim]" + "  ".join(f"{k}: {v}" for k, v in info.items()))


if __name__ == "__main__":
    sys.exit(run(parser(__doc__).parse_args()))
