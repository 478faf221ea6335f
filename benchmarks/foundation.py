"""agentlab's sync API against raw nats-py, in one process, over one embedded nats-server.

    make bench                                   # or: python -m benchmarks.foundation
    python -m benchmarks.foundation --quick      # smoke test (CI)
    python -m benchmarks.foundation --json out.json

Method, and why:
* Raw nats-py runs on its own asyncio loop (``asyncio.run`` in the main thread) with no
  agentlab in the measured path; agentlab runs its public sync API from the same main
  thread. Both talk to the same server, so the ratio isolates what agentlab adds.
* Rounds are interleaved (raw, agentlab, agentlab, raw, ...) and we report the median of
  the per-round figures. On a small shared machine load comes and goes in bursts; measuring
  one side entirely before the other would charge a burst to one side only.
* The echo responder is a separate process (benchmarks/responder.py, raw nats-py), the same
  for both sides, so no responder competes for the GIL or a loop inside this process.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

import nats
from nats.js.api import StorageType, StreamConfig

import agentlab
from agentlab import find_nats_server

from .common import console, interleaved, main, pct, run_raw

ECHO, PUB = "bench.echo", "bench.pub"
TITLE = "agentlab sync API vs raw nats-py: 64-byte payloads, one server, one process"
CAPTION = ("ratio = agentlab ÷ raw. Latency and start time: LOWER is better; msg/s: HIGHER is "
           "better.\nFigures are medians of per-round figures; spread = (max - min) / median "
           "of the rounds.")
PAYLOAD = b"x" * 64
STREAMS = {"memory": ("BENCH_MEM", "bench.js.mem"), "file": ("BENCH_FILE", "bench.js.file")}


# -- the measured loops: each returns one round's figure --------------------------------
# Latency rounds return per-request latencies in µs; throughput rounds return msg/s.
async def raw_latency(nc: nats.NATS, n: int, warm: int) -> list[float]:
    clock, out = time.perf_counter_ns, []
    for _ in range(warm + n):
        t0 = clock()
        await nc.request(ECHO, PAYLOAD, timeout=2)
        out.append((clock() - t0) / 1000)
    return out[warm:]  # the warm-up requests are not counted


def al_latency(client: agentlab.Client, n: int, warm: int) -> list[float]:
    clock, out = time.perf_counter_ns, []
    for _ in range(warm + n):
        t0 = clock()
        client.request(ECHO, PAYLOAD, timeout=2)
        out.append((clock() - t0) / 1000)
    return out[warm:]


async def raw_js(nc: nats.NATS, n: int, warm: int, subject: str) -> float:
    js = nc.jetstream()
    for _ in range(warm):
        await js.publish(subject, PAYLOAD)
    t0 = time.perf_counter()
    for _ in range(n):  # sequential: one publish, its PubAck, then the next
        await js.publish(subject, PAYLOAD)
    return n / (time.perf_counter() - t0)


def al_js(client: agentlab.Client, n: int, warm: int, subject: str) -> float:
    for _ in range(warm):
        client.js.publish(subject, PAYLOAD)
    t0 = time.perf_counter()
    for _ in range(n):
        client.js.publish(subject, PAYLOAD)
    return n / (time.perf_counter() - t0)


async def raw_pub(nc: nats.NATS, n: int, warm: int) -> float:
    for _ in range(warm):
        await nc.publish(PUB, PAYLOAD)
    await nc.flush()
    t0 = time.perf_counter()
    for _ in range(n):
        await nc.publish(PUB, PAYLOAD)
    await nc.flush()  # the timing ends once the server has accepted every message
    return n / (time.perf_counter() - t0)


def al_pub(client: agentlab.Client, n: int, warm: int) -> float:
    for _ in range(warm):
        client.publish(PUB, PAYLOAD)
    client.flush()
    t0 = time.perf_counter()
    for _ in range(n):
        client.publish(PUB, PAYLOAD)
    client.flush()
    return n / (time.perf_counter() - t0)


# -- server start-up ------------------------------------------------------------------
def bare_start(exe: str) -> float:
    """The binary alone: spawn nats-server -js on a free port, poll until it accepts TCP."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="bench-bare-") as store:
        t0 = time.perf_counter()
        proc = subprocess.Popen([exe, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", store],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return time.perf_counter() - t0
                except OSError:
                    if proc.poll() is not None or time.perf_counter() - t0 > 10:
                        raise RuntimeError("bare nats-server did not start") from None
                    time.sleep(0.001)
        finally:
            proc.terminate()
            proc.wait()


def timed_start(start, stop) -> float:
    t0 = time.perf_counter()
    thing = start()
    elapsed = time.perf_counter() - t0
    stop(thing)
    return elapsed


# -- orchestration ------------------------------------------------------------------
def start_responder(server: agentlab.EmbeddedServer) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.responder", server.url],
                            env={**os.environ, **server.client_env()},  # its login's file
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True)  # Ctrl-C is ours to handle, not its
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the echo responder did not come up")
    except BaseException:  # including Ctrl-C while we wait
        proc.kill()
        proc.wait()
        raise
    return proc


def run(args: argparse.Namespace, results: dict) -> None:
    quick, rounds = args.quick, args.rounds or (1 if args.quick else 3)
    n_req, n_js, n_pub = (1000, 500, 20_000) if quick else (5000, 3000, 200_000)
    warm_req, warm_js, n_starts = (100, 50, 3) if quick else (500, 300, 10)

    server = agentlab.EmbeddedServer(max_memory="1GB").start()
    responder = client = None
    try:
        url = server.url
        responder = start_responder(server)
        client = agentlab.Client.open(url, name="bench-agentlab")

        async def make_streams(nc):
            js = nc.jetstream()
            for storage, (name, subject) in STREAMS.items():
                await js.add_stream(StreamConfig(name=name, subjects=[subject],
                                                 storage=StorageType(storage), max_msgs=200_000))
        run_raw(url, make_streams)

        console.print(f"[dim]request/reply: {rounds} round(s) × {n_req} requests per side…")
        raws, als = interleaved(rounds, lambda: run_raw(url, raw_latency, n_req, warm_req),
                                lambda: al_latency(client, n_req, warm_req))
        for q, key in ((0.5, "p50"), (0.99, "p99")):
            results[f"request/reply {key} (µs)"] = {
                "lower_is_better": True, "target": 1.2 if key == "p50" else None,
                "raw_rounds": [pct(r, q) for r in raws],
                "agentlab_rounds": [pct(a, q) for a in als]}

        for storage, (_, subject) in STREAMS.items():
            if quick and storage == "file":
                continue
            console.print(f"[dim]JetStream {storage}: {rounds} round(s) × {n_js} publishes…")
            raws, als = interleaved(
                rounds, lambda s=subject: run_raw(url, raw_js, n_js, warm_js, s),
                lambda s=subject: al_js(client, n_js, warm_js, s))
            results[f"JetStream publish+ack, {storage} (msg/s)"] = {
                "target": 0.8, "raw_rounds": raws, "agentlab_rounds": als}

        console.print(f"[dim]core publish: {rounds} round(s) × {n_pub:,} messages…")
        raws, als = interleaved(rounds, lambda: run_raw(url, raw_pub, n_pub, n_pub // 20),
                                lambda: al_pub(client, n_pub, n_pub // 20))
        results[f"core publish ×{n_pub:,} (msg/s)"] = {
            "target": 0.5, "raw_rounds": raws, "agentlab_rounds": als}
    finally:
        if client is not None:
            client.close()
        if responder is not None:
            responder.kill()
            responder.wait()
        server.stop()

    console.print(f"[dim]server start: {n_starts} starts each…")
    exe = str(find_nats_server())
    raws, als = interleaved(n_starts, lambda: bare_start(exe), lambda: timed_start(
        lambda: agentlab.EmbeddedServer().start(), lambda server: server.stop()))
    results["server start → ready (s)"] = {
        "lower_is_better": True, "absolute": 0.5, "raw_rounds": raws, "agentlab_rounds": als}
    results["agentlab.start(fresh=True) (s)"] = {  # reference only: start + connect, no target
        "lower_is_better": True, "raw_rounds": [],
        "agentlab_rounds": [timed_start(lambda: agentlab.start(fresh=True, name="bench-lab"),
                                        lambda lab: lab.close()) for _ in range(1 if quick else 3)]}


if __name__ == "__main__":
    sys.exit(main(__doc__, run, TITLE, CAPTION,
                  interrupted="interrupted: server stopped, responder killed"))
