"""One agent in an OS process of its own, as a deployment runs it (and as a crash kills it).

    python -m agentlab.programs.worker --url nats://127.0.0.1:4222 --role cto --org acme \
        --instance cto-3
    python -m agentlab.programs.worker --url URL --role cto --handler mypackage.handlers:cto

The process connects, attaches to the role's durable consumer in AGENT_TASKS, prints one
line ``ready <instance> pid=<pid>`` on stdout and works until SIGTERM or Ctrl-C (a graceful
stop: the tasks in hand are finished) or SIGKILL (a crash: they are redelivered after
``--ack-wait``). Its connection reconnects forever, so it survives a server restart.

It logs in with the credentials file ``$AGENTLAB_NATS_CREDENTIALS`` names, when that file
is for ``--url``'s server (agentlab's servers admit only their own login): ``lab.client_env()``
sets it, and :class:`WorkerProcess` passes the file of a server this process runs.

``--handler module:function`` names any sync or async ``handler(task, ctx)``; without it
the reference role of that name (ceo, cto, cfo) runs, or an acknowledging no-op.
``--wait-for-server S`` keeps trying to connect and attach for S seconds (a server
restarting, a container started before its server). ``--stats-bucket NAME`` keeps the
agent's counters (processed, redeliveries, duplicates_suppressed, ...) in a key-value
bucket under ``<instance>.<pid>``, refreshed every ``--stats-every`` seconds, so they
outlive a SIGKILL (all but the last interval).

From Python, :class:`WorkerProcess` starts one and kills or stops it::

    worker = WorkerProcess(url, "cto", instance="cto-1").start()   # waits for "ready"
    worker.kill()                                                   # SIGKILL

With the ``otel`` extra installed, ``OTEL_TRACES_EXPORTER`` / ``OTEL_EXPORTER_OTLP_*`` /
``OTEL_SERVICE_NAME`` (or ``AGENTLAB_TRACE_FILE=path``, one JSON span per line) export the
agent's spans, which join the traces of the tasks it works on (agentlab.telemetry).

Exit codes: 0 after a requested stop, 2 an agentlab error (server unreachable, no
AGENT_TASKS stream, a handler that cannot be imported), printed without a traceback.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

EXIT_OK, EXIT_ERROR = 0, 2
READY = "ready"
LEDGER_PRECHECKS: dict[str, bool | Literal["auto"]] = {"auto": "auto", "always": True,
                                                       "redeliveries": False}


class HandlerNotFound(Exception):
    """``--handler`` does not name an importable callable."""


def load_handler(spec: str) -> Any:
    """``"package.module:function"`` (or ``"module:Class.method"``) to the callable it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise HandlerNotFound(f"--handler {spec!r} must look like 'package.module:function'.")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise HandlerNotFound(f"--handler {spec!r}: cannot import {module_name!r} ({error}).") \
            from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerNotFound(f"--handler {spec!r}: {module_name!r} has no {attr!r}.") \
                from None
    if not callable(target):
        raise HandlerNotFound(f"--handler {spec!r} is not callable.")
    return target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agentlab.programs.worker",
        description="Run one agent (one instance of a role) in this process until SIGTERM.")
    parser.add_argument("--url", default=os.environ.get("AGENTLAB_NATS_URL"),
                        help="the NATS server (default: $AGENTLAB_NATS_URL)")
    parser.add_argument("--role", required=True, help="the role, e.g. cto")
    parser.add_argument("--org", default="acme", help="the organisation (default: %(default)s)")
    parser.add_argument("--instance", default=None,
                        help="this instance's name (default: <role>-<pid>)")
    parser.add_argument("--handler", default=None, metavar="MODULE:FUNCTION",
                        help="handler(task, ctx) to run (default: the reference role, if any)")
    parser.add_argument("--ack-wait", type=float, default=30.0, metavar="S",
                        help="seconds without an ack before redelivery (default: %(default)s)")
    parser.add_argument("--max-deliver", type=int, default=3, metavar="N",
                        help="attempts before a task is a dead letter (default: %(default)s)")
    parser.add_argument("--max-ack-pending", type=int, default=5, metavar="N",
                        help="tasks in hand at once, per role (default: %(default)s)")
    parser.add_argument("--ledger-precheck", choices=tuple(LEDGER_PRECHECKS), default="auto",
                        help="when to read the task ledger before running a task: 'auto' "
                             "(a task that could be a repeat), 'always', or 'redeliveries' "
                             "(default: %(default)s)")
    parser.add_argument("--lease-ttl", type=int, default=None, metavar="S",
                        help="seconds a task's lease outlives its last renewal: a task "
                             "handed out again while its run lives waits that long for a "
                             "silent instance (default: --ack-wait, rounded up)")
    parser.add_argument("--no-lease", dest="lease", action="store_false",
                        help="run tasks without leases (a task handed out again while its "
                             "first run lives then runs next to it)")
    parser.add_argument("--consumer-state", choices=("file", "memory"), default=None,
                        help="where the server keeps the role consumer's delivery state: "
                             "'memory' makes deliveries cheaper when one server serves many "
                             "roles, and a lone server's restart forgets what was out (handed "
                             "out again, run once by the ledger and leases); 'file' survives "
                             "it (default: memory for a consumer this worker makes, an "
                             "existing one as it is)")
    parser.add_argument("--heartbeat", type=float, default=2.0, metavar="S",
                        help="heartbeat interval (default: %(default)s)")
    parser.add_argument("--reconnect-wait", type=float, default=0.25, metavar="S",
                        help="pause between reconnect attempts (default: %(default)s)")
    parser.add_argument("--wait-for-server", type=float, default=0.0, metavar="S",
                        help="keep trying to connect for S seconds (default: fail at once)")
    parser.add_argument("--declare-streams", action="store_true",
                        help="declare the reference streams first (on a fresh server)")
    parser.add_argument("--stats-bucket", default=None, metavar="NAME",
                        help="keep the agent's counters in this key-value bucket")
    parser.add_argument("--stats-every", type=float, default=0.25, metavar="S",
                        help="how often to refresh them (default: %(default)s)")
    return parser


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Run the agent ``args`` describe until ``stop`` is set (or SIGTERM/SIGINT)."""
    from ..core.stores import KeyValueBucket
    from ..org.roles import default_roles
    from ..telemetry.configure import configure_from_env_once

    # OTEL_TRACES_EXPORTER (or AGENTLAB_TRACE_FILE): this agent's spans join the traces of
    # the goals its tasks belong to, exported from this process (the first connection would
    # do it too; here it happens before anything else).
    configure_from_env_once()
    stop = stop or threading.Event()
    instance = args.instance or f"{args.role}-{os.getpid()}"
    handler = load_handler(args.handler) if args.handler else default_roles().get(args.role)
    if not args.url:
        from ..errors import ServerUnreachable

        raise ServerUnreachable("(no URL)", "pass --url or set AGENTLAB_NATS_URL")
    client, agent = _start(args, instance, handler, stop)
    try:
        stats = (KeyValueBucket.declare(client, args.stats_bucket)
                 if args.stats_bucket else None)
        print(f"{READY} {instance} pid={os.getpid()}", flush=True)
        key = f"{instance}.{os.getpid()}"
        while not stop.wait(args.stats_every if stats else 1.0):
            if stats is not None:
                _report(stats, key, agent)
        agent.stop()
        if stats is not None:
            _report(stats, key, agent)
    finally:
        client.close()
    return EXIT_OK


def _start(args: argparse.Namespace, instance: str, handler: Any,
           stop: threading.Event) -> tuple[Any, Any]:
    """Connect and start the agent. With ``--wait-for-server S``, keep trying for S seconds:
    a server restarting, a cluster electing a leader, a container starting after this one."""
    from ..core.client import Client
    from ..errors import AgentlabError
    from ..org.agent import Agent
    from ..org.streams import declare_reference_streams

    deadline = time.monotonic() + args.wait_for_server
    while True:
        client = None
        try:
            client = Client.open(args.url, name=instance, reconnect_wait=args.reconnect_wait)
            if args.declare_streams:
                declare_reference_streams(client)
            agent = Agent(client, args.role, args.org, handler, ack_wait=args.ack_wait,
                          max_deliver=args.max_deliver, max_ack_pending=args.max_ack_pending,
                          heartbeat_interval=args.heartbeat, instance=instance,
                          ledger_precheck=LEDGER_PRECHECKS[args.ledger_precheck],
                          lease=args.lease, lease_ttl=args.lease_ttl,
                          consumer_state=args.consumer_state).start()
            return client, agent
        except (AgentlabError, TimeoutError):
            if client is not None:
                client.close()
            if time.monotonic() >= deadline or stop.is_set():
                raise
            stop.wait(args.reconnect_wait)


def _report(bucket: Any, key: str, agent: Any) -> None:
    try:
        bucket.put(key, {**agent.stats, "instance": agent.instance, "pid": os.getpid(),
                         "at": time.time()})
    except Exception:  # the server is away: the next report carries the same counters
        pass


def main(argv: Sequence[str] | None = None) -> int:
    from rich.console import Console
    from rich.logging import RichHandler
    from rich.markup import escape

    from ..errors import AgentlabError

    args = build_parser().parse_args(argv)
    errors = Console(stderr=True)
    log = logging.getLogger("agentlab")
    if not log.handlers:
        log.addHandler(RichHandler(console=errors, show_path=False, show_time=False))
        log.setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return run(args, stop)
    except (AgentlabError, HandlerNotFound, TimeoutError) as error:
        text = str(error)
        if not isinstance(error, AgentlabError):  # nats-py's own: a JetStream call timed out
            text = (f"a JetStream request got no answer while the agent started ({text}). "
                    "Is the server (or the cluster) still starting or electing a leader? "
                    "--wait-for-server S keeps trying for S seconds.")
        errors.print(f"[bold red]agentlab worker {escape(args.role)} failed:[/] "
                     f"[red]{escape(text)}[/]")
        return EXIT_ERROR


class WorkerProcess:
    """A ``python -m agentlab.programs.worker`` child process: start, SIGKILL, SIGTERM.

    The child dies with this process (Linux: parent-death signal), so a crashed test or
    fault run leaves no agent behind. Its stderr goes to ``log_path`` if one is given.
    """

    def __init__(self, url: str, role: str, *, org: str = "acme", instance: str | None = None,
                 handler: str | None = None, options: Sequence[str] = (),
                 log_path: str | Path | None = None, env: dict[str, str] | None = None,
                 python: str = sys.executable):
        from ..core.credentials import CREDENTIALS_ENV, credentials_env_for

        self.role, self.org = role, org
        # The server admits only its login: the child gets its credentials file (the path).
        base = dict(os.environ if env is None else env)
        self.env = base if CREDENTIALS_ENV in base else base | credentials_env_for(url)
        self.instance = instance or role
        self.argv = [python, "-m", "agentlab.programs.worker", "--url", url, "--role", role,
                     "--org", org, "--instance", self.instance,
                     *(["--handler", handler] if handler else []), *options]
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0, wait: bool = True) -> WorkerProcess:
        """Spawn the process; with ``wait``, return once it printed its ready line."""
        from ..core.server import _die_with_parent, _prctl, _spawn

        stderr: Any = subprocess.DEVNULL
        if self.log_path is not None:
            stderr = open(self.log_path, "ab")
        try:
            self.proc = _spawn(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=stderr, start_new_session=True, env=self.env,
                               preexec_fn=functools.partial(_die_with_parent, os.getpid())
                               if _prctl else None)
        finally:
            if stderr is not subprocess.DEVNULL:
                stderr.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout = self.proc.stdout
        found: list[str] = []

        def read() -> None:
            for line in stdout:
                text = line.decode("utf-8", "replace").strip()
                if text.startswith(READY):
                    found.append(text)
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            code = self.proc.poll()
            state = f"exited with code {code}" if code is not None else "is not ready"
            raise RuntimeError(f"worker {self.instance} {state} after {timeout:g} s "
                               f"(its stderr: {self.log_path or 'not kept'})")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the agent dies mid-task, as a crash or an OOM kill would."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:  # alive
            proc.kill()
        proc.wait()
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM: finish the tasks in hand, then exit (SIGKILL after ``timeout``)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:  # alive
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_pipe()
        return proc.returncode if proc else None

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"<WorkerProcess {self.instance} pid={self.pid} {state}>"


if __name__ == "__main__":
    sys.exit(main())
