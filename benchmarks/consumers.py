"""The server's part of the scaling table's p50: raw nats-py delegating round-robin over N
durable consumers of one stream, with the consumers' state on file and in memory.

    make bench                                   # ..., scaling, then this
    python -m benchmarks.consumers --quick       # fewer messages (smoke test)

What it answers: the scaling table's p50 grows from 1 role to 100 for agentlab and for
FastStream alike. Is that the clients, or nats-server? Here no agentlab code runs: one
nats-py connection, one work-queue stream on file (as AGENT_TASKS), N durable pull
consumers each filtered to its own subject (as the roles' consumers). Each round trip asks
consumer k for one message, publishes one to its subject (acknowledged by the stream), and
times until the message is delivered, then acks it; k goes round-robin over the N, as the
CEO's delegations do. Measured with the consumers' state on file (JetStream's default, and
agentlab's) and in memory (``mem_storage``: delivery state lost on a restart), 1 and 100
consumers each, interleaved. The ratio 100 ÷ 1 on file is the floor under agentlab's own.
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

from .common import console, machine, parser, pct, raw_login

COUNTS = (1, 100)
STATES = ("file", "memory")
_streams = iter(range(1_000_000))


async def _round(url: str, consumers: int, state: str, n: int) -> list[float]:
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

        async def delivered(msg) -> None:
            if msg.reply:  # not a status
                arrived.put_nowait(time.perf_counter())
                await msg.ack()

        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=delivered)
        ask = json.dumps({"batch": 1, "expires": 5_000_000_000}).encode()
        took = []
        for i in range(n):
            k = i % consumers
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{name}.r{k}", ask, reply=inbox)
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
        p50: dict[tuple[str, int], list[float]] = {}
        console.print(f"[dim]{rounds} round(s) × {n} round trips per configuration, "
                      "interleaved…")
        for state in STATES:
            few: list[float] = []
            many: list[float] = []
            for r in range(rounds):  # ABBA: neither always in the warmer slot
                order = COUNTS if r % 2 == 0 else COUNTS[::-1]
                for count in order:
                    took = asyncio.run(_round(server.url, count, state, n))
                    (few if count == COUNTS[0] else many).append(pct(took, 0.5) * 1e6)
            p50[(state, COUNTS[0])], p50[(state, COUNTS[1])] = few, many
    finally:
        server.stop()
    print_table(p50, machine())
    return 0


def print_table(p50: dict[tuple[str, int], list[float]], info: dict) -> None:
    from rich.table import Table

    table = Table(title="nats-server alone: publish → delivery round-robin over N durable "
                        "consumers (raw nats-py, one connection)",
                  caption="p50 in µs, medians of the rounds; ratio: 100 consumers ÷ 1. "
                          "Consumer state on file is JetStream's default and agentlab's.")
    for col in ("consumer state", f"{COUNTS[0]} consumer", f"{COUNTS[1]} consumers",
                "ratio"):
        table.add_column(col, justify="right")
    for state in STATES:
        few = statistics.median(p50[(state, COUNTS[0])])
        many = statistics.median(p50[(state, COUNTS[1])])
        table.add_row(state, f"{few:,.0f}", f"{many:,.0f}", f"{many / few:.2f}")
    console.print(table)
    console.print("[dim]" + "  ".join(f"{k}: {v}" for k, v in info.items()))


if __name__ == "__main__":
    sys.exit(run(parser(__doc__).parse_args()))
