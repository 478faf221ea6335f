"""The processes benchmarks/scaling.py measures: agent hosts (agentlab or FastStream) and a tap.

    python -m benchmarks.scaling_hosts host agentlab --prefix r10- --count 10 --org bench-al
    python -m benchmarks.scaling_hosts host agentlab --shared --prefix s10- --count 10 ...
    python -m benchmarks.scaling_hosts host faststream --prefix f10- --count 10 --org bench-fs
    python -m benchmarks.scaling_hosts tap --seconds 10

Environment: ``AGENTLAB_NATS_URL`` and ``AGENTLAB_NATS_CREDENTIALS`` (``server.client_env()``).

A host runs N roles, each its own durable pull consumer on AGENT_TASKS. agentlab: one
``Agent`` per role on a connection of its own (``--shared``: all on one connection, as
``Organisation(shared_connection=True)`` runs them), with the options
``agentlab.programs.worker`` gives an agent by default (ack wait 30 s, 3 deliveries, 5 tasks
in hand, a heartbeat every 2 s). The worker itself runs one role per process, so this host
stands in for N of them sharing a process. FastStream: one ``NatsBroker`` (one connection, as
FastStream has it) with a pull subscriber per role: a durable consumer with the same limits,
``PullSub()`` (its default batch of 1), ``max_workers=5``, the completion published to
JetStream by a ``@broker.publisher``. FastStream's per-message INFO log is off
(``logger=None``): agentlab logs nothing per task either.

The host prints one JSON line per step on stdout: ``{"loaded"}`` once imported (the parent
reads the baseline RSS then), ``{"ready"}`` once working; then it answers the lines
``stop`` (every role stops pulling), ``start``, ``count`` (an agentlab host: how many times
its event loop has woken so far, ``{"wakeups": n}``) and ``quit`` on stdin, each with one
line.

The tap counts, for ``--seconds`` and from a process of its own (so that counting costs the
measured ones nothing), the JetStream API requests (``$JS.API.>``, pull requests included)
and the agents' heartbeat messages (``genbrain.agents.heartbeats``, one per process and
interval with every agent's beat, and ``genbrain.agents.*.heartbeat``, one agent's beat
alone), with the beats they carry. It does not tap ``_INBOX.>``:
a tap on every inbox makes agentlab's pull requests short (agentlab/core/pull.py).

The parent's handles on them are here too: :class:`Host` (one process), :class:`Group` (the
hosts of one configuration) and :class:`Stat` (a process's CPU time, RSS and threads, read
from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# At module level: FastStream resolves the handler's annotation (a string, with the
# __future__ import) in this module's globals.
from agentlab.org import Task

from .common import raw_login

ROOT = Path(__file__).resolve().parents[1]
_CLK = os.sysconf("SC_CLK_TCK")
TASKS, COMPLETED = "genbrain.agents.{}.tasks", "genbrain.org.{}.tasks.completed"
HEARTBEATS = ("genbrain.agents.heartbeats", "genbrain.agents.*.heartbeat")  # batched, alone
ACK_WAIT, MAX_DELIVER, MAX_ACK_PENDING, HEARTBEAT = 30.0, 3, 5, 2.0  # the worker's defaults


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def login() -> dict[str, str]:
    """user= and password= of $AGENTLAB_NATS_URL's server (from $AGENTLAB_NATS_CREDENTIALS),
    for the raw nats-py and FastStream clients."""
    return raw_login(os.environ["AGENTLAB_NATS_URL"])


async def handler(task: Any, ctx: Any = None) -> dict:
    """The trivial handler, on both sides."""
    return {"ok": True}


# -- agentlab ------------------------------------------------------------------------------
def count_wakeups(loop: asyncio.AbstractEventLoop) -> list[int]:
    """Count the iterations of ``loop`` (each one a wakeup: a timer, a socket, a callback
    from another thread) in the list's one item. asyncio's own loop only."""
    counter, run_once = [0], getattr(loop, "_run_once", None)
    if run_once is None:
        return [-1]

    def counted() -> None:
        counter[0] += 1
        run_once()
    loop._run_once = counted  # type: ignore[attr-defined]
    return counter


def host_agentlab(roles: list[str], org: str, shared: bool = False,
                   on_file: bool = False) -> None:
    import agentlab
    from agentlab.core.bridge import get_bridge
    from agentlab.org import Agent

    say(loaded=True)
    sys.stdin.readline()  # "go": the parent has read the baseline
    url, bridge = os.environ["AGENTLAB_NATS_URL"], get_bridge()
    wakeups = count_wakeups(bridge.loop)

    async def connect_all() -> list[agentlab.Client]:
        if shared:
            one = await agentlab.Client.aopen(url, name="bench-agents")
            return [one] * len(roles)
        return list(await asyncio.gather(*(agentlab.Client.aopen(url, name=f"bench-{role}")
                                           for role in roles)))

    clients = bridge.run(connect_all(), operation="connect")
    agents = [Agent(c, role, org, handler=handler, ack_wait=ACK_WAIT, max_deliver=MAX_DELIVER,
                    max_ack_pending=MAX_ACK_PENDING, heartbeat_interval=HEARTBEAT,
                    instance=f"{role}-1", lease=False,  # as FastStream's flow: no lease
                    consumer_state="file" if on_file else None)
              for c, role in zip(clients, roles, strict=True)]

    async def each(verb: str) -> int:
        # Concurrently, since a stop waits out its pull requests (<= 0.5 s), but a hundred
        # at a time: a thousand starts at once time out at JetStream (each asks it twice:
        # consumer, ledger bucket), a thousand stops at once stall the loop past nats-py's
        # flush timeouts.
        batch, retried = 100, 0
        for first in range(0, len(agents), batch):
            some = agents[first:first + batch]
            for attempt in range(3):  # a start that timed out (a busy server) is asked again
                outcomes = await asyncio.gather(*(getattr(a, verb)() for a in some),
                                                return_exceptions=True)
                failed = [(a, o) for a, o in zip(some, outcomes, strict=True)
                          if isinstance(o, Exception)]
                if not failed:
                    break
                if attempt == 2:
                    raise failed[0][1]
                print(f"retrying {len(failed)} {verb}: {failed[0][1]}", file=sys.stderr)
                retried += len(failed)
                some = [a for a, _ in failed]
        return retried

    started = time.perf_counter()
    retried = bridge.run(each("astart"), operation="start")
    say(ready=True, seconds=round(time.perf_counter() - started, 3), retried=retried)
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        if command == "count":
            say(wakeups=wakeups[0])
            continue
        retried = bridge.run(each("astop" if command == "stop" else "astart"),
                             operation=command)
        say(done=command, retried=retried)
    bridge.run(each("astop"), operation="stop")
    for client in set(clients):
        client.close()
    say(done="quit")


# -- FastStream ----------------------------------------------------------------------------
def faststream_broker(url: str, roles: list[str], org: str) -> Any:
    from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsUserPassword, PullSub

    from agentlab.org import EVENTS_STREAM, TASK_STREAM

    auth = login()
    broker = NatsBroker(url, name="bench-fs-agents", logger=None,
                        security=NatsUserPassword(auth["user"], auth["password"])
                        if auth else None)
    tasks = JStream(TASK_STREAM, declare=False)  # agentlab's streams, declared by the bench
    completed = broker.publisher(COMPLETED.format(org), stream=JStream(EVENTS_STREAM,
                                                                       declare=False))
    limits = ConsumerConfig(ack_wait=ACK_WAIT, max_deliver=MAX_DELIVER,
                            max_ack_pending=MAX_ACK_PENDING)

    def worker(role: str) -> Any:
        async def work(task: Task) -> dict:  # FastStream decodes and validates the Task
            return {"task_id": task.id, "org": task.org, "role": role,
                    "result": await handler(task), "correlation_id": task.correlation_id}
        return work

    for role in roles:  # what @broker.subscriber(...) over @completed does, once per role
        broker.subscriber(TASKS.format(role), stream=tasks, durable=role, config=limits,
                          pull_sub=PullSub(), max_workers=MAX_ACK_PENDING)(
            completed(worker(role)))
    return broker


def host_faststream(roles: list[str], org: str) -> None:
    import faststream  # noqa: F401  (imported before "loaded": the baseline includes it)

    say(loaded=True)
    sys.stdin.readline()
    url = os.environ["AGENTLAB_NATS_URL"]

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        broker = faststream_broker(url, roles, org)
        await broker.start()
        say(ready=True, seconds=round(time.perf_counter() - started, 3))
        while True:
            command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if command in ("quit", ""):
                break
            if command == "stop":  # closing the connection drops its parked pull requests
                await broker.stop()
            else:                  # a broker is started once: a new one, as a restart makes
                broker = faststream_broker(url, roles, org)
                await broker.start()
            say(done=command)
        await broker.stop()
        say(done="quit")

    asyncio.run(serve())


# -- the tap -------------------------------------------------------------------------------
def tap(seconds: float) -> None:
    import nats

    async def count() -> None:
        nc = await nats.connect(os.environ["AGENTLAB_NATS_URL"], name="bench-tap", **login())
        kinds: Counter[str] = Counter()

        async def seen(msg: Any) -> None:
            kinds["pull" if ".CONSUMER.MSG.NEXT." in msg.subject else "other"] += 1

        async def beat(msg: Any) -> None:
            kinds["heartbeat"] += 1
            kinds["beats"] += len(json.loads(msg.data)["beats"]) \
                if msg.subject == HEARTBEATS[0] else 1
        await nc.subscribe("$JS.API.>", cb=seen)
        for subject in HEARTBEATS:
            await nc.subscribe(subject, cb=beat)
        await nc.flush()
        say(ready=True)
        await asyncio.sleep(seconds)
        await nc.close()
        say(seconds=seconds, **kinds)

    asyncio.run(count())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    host = sub.add_parser("host")
    host.add_argument("kind", choices=("agentlab", "faststream"))
    host.add_argument("--prefix", required=True)
    host.add_argument("--first", type=int, default=0)
    host.add_argument("--count", type=int, required=True)
    host.add_argument("--step", type=int, default=1)
    host.add_argument("--org", required=True)
    host.add_argument("--shared", action="store_true",
                      help="agentlab: every role on one connection")
    host.add_argument("--on-file", action="store_true",
                      help="agentlab: the consumers' state on file (consumer_state='file'; "
                           "default: in memory)")
    sub.add_parser("tap").add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    if args.what == "tap":
        tap(args.seconds)
        return
    roles = [f"{args.prefix}{args.first + i * args.step}" for i in range(args.count)]
    if args.kind == "agentlab":
        host_agentlab(roles, args.org, shared=args.shared, on_file=args.on_file)
    else:
        host_faststream(roles, args.org)


# -- the parent's handles on them ---------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    cpu: float      # seconds, user + system
    rss: int        # bytes
    threads: int

    @classmethod
    def of(cls, pid: int) -> Stat:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        found = {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1))
                 for k in ("VmRSS", "Threads")}
        return cls((int(fields[11]) + int(fields[12])) / _CLK, found["VmRSS"] * 1024,
                   found["Threads"])


class Host:
    """One scaling_hosts process: JSON lines out, commands in."""

    def __init__(self, kind: str, roles: tuple[str, int, int, int], org: str, env: dict,
                 logs: Path, shared: bool = False, on_file: bool = False):
        prefix, first, count, step = roles
        self.count, self.log = count, logs / f"{kind}-{prefix}{first}.log"
        argv = [sys.executable, "-m", "benchmarks.scaling_hosts", "host", kind, "--prefix",
                prefix, "--first", str(first), "--count", str(count), "--step", str(step),
                "--org", org] + (["--shared"] if shared else []) + \
            (["--on-file"] if on_file else [])
        with open(self.log, "wb") as stderr:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=stderr, env=env, cwd=ROOT, text=True)
        self.base: Stat | None = None

    def read(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise TimeoutError(f"no answer within {timeout:g} s (log: {self.log})")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"host exited ({self.proc.poll()}); log: {self.log}")
        return json.loads(line)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stat(self) -> Stat:
        return Stat.of(self.proc.pid)

    def wakeups(self) -> int:
        """An agentlab host's event-loop wakeups so far (-1: not counted)."""
        self.send("count")
        return int(self.read(10).get("wakeups", -1))

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send("quit")
                self.read(30)
        except (OSError, TimeoutError, RuntimeError, ValueError):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()


class Group:
    """The hosts of one configuration: N roles over ``processes`` processes."""

    def __init__(self, kind: str, prefix: str, n: int, processes: int, org: str, env: dict,
                 logs: Path, shared: bool = False, on_file: bool = False):
        self.roles = [f"{prefix}{i}" for i in range(n)]
        self.shared, self.on_file = shared, on_file
        self.retried = 0  # agent starts asked again after a JetStream timeout
        self.hosts = [Host(kind, (prefix, i, len(self.roles[i::processes]), processes), org,
                           env, logs, shared, on_file) for i in range(min(processes, n))]

    def start(self, limit: float) -> float:
        """Wait until every host works; its baseline RSS is read before its agents exist."""
        for host in self.hosts:
            host.read(60)  # loaded
            host.base = host.stat()
            host.send("go")
        started = time.perf_counter()
        for host in self.hosts:
            self.retried += host.read(max(1.0, limit - (time.perf_counter() - started))).get(
                "retried", 0)
        return time.perf_counter() - started

    def ask(self, command: str) -> None:
        for host in self.hosts:  # all at once, then every answer
            host.send(command)
        for host in self.hosts:
            self.retried += host.read(60).get("retried", 0)

    def close(self) -> None:
        for host in self.hosts:
            host.close()


if __name__ == "__main__":
    main()
