"""``python -m agentlab.chaos``: run the fault suite and print its figures."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from .config import ChaosConfig
from .suite import run


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
    parser.add_argument("--ledger-precheck", choices=("auto", "always", "redeliveries"),
                        default=defaults.ledger_precheck,
                        help="when agents read the ledger before running a task (default: "
                             "%(default)s; 'redeliveries' shows the double runs 'auto' "
                             "prevents after a server restart)")
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
    parser.add_argument("--agent-pauses", type=int, default=defaults.agent_pauses, metavar="N",
                        help="SIGSTOP a random agent process N times, for twice the ack wait "
                             "(or --agent-pause S), then SIGCONT it")
    parser.add_argument("--agent-pause", type=float, default=None, metavar="S")
    parser.add_argument("--server-pauses", type=int, default=defaults.server_pauses,
                        metavar="N", help="SIGSTOP the server N times (cluster: the "
                        "AGENT_TASKS leader, for longer than an election timeout)")
    parser.add_argument("--server-pause", type=float, default=None, metavar="S",
                        help="seconds each server pause lasts (default: 1.5 ack waits; 12 on "
                             "a cluster)")
    parser.add_argument("--partitions", type=int, default=defaults.partitions, metavar="N",
                        help="cluster: cut the AGENT_TASKS leader off the network N times "
                             "(network namespaces; needs root, else skipped with the reason)")
    parser.add_argument("--partition-for", type=float, default=defaults.partition_for,
                        metavar="S", help="seconds each partition lasts (default: %(default)s)")
    parser.add_argument("--leader-kills", type=int, default=defaults.leader_kills, metavar="N",
                        help="cluster: SIGKILL the AGENT_TASKS leader N times and print the "
                             "distribution of the recoveries")
    parser.add_argument("--quiet", "-q", action="store_true", help="print only the figures")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    config = ChaosConfig(tasks=args.tasks, roles=tuple(r for r in args.roles.split(",") if r),
                         workers_per_role=args.workers_per_role, kill_every=args.kill_every,
                         server_kills=args.server_kills, fail_every=args.fail_every,
                         work=args.work, rate=args.rate, ack_wait=args.ack_wait,
                         ledger_precheck=args.ledger_precheck, timeout=args.timeout,
                         seed=args.seed, keep=args.keep, sync_always=not args.no_sync,
                         cluster=args.cluster, agent_pauses=args.agent_pauses,
                         agent_pause=args.agent_pause, server_pauses=args.server_pauses,
                         server_pause=args.server_pause, partitions=args.partitions,
                         partition_for=args.partition_for, leader_kills=args.leader_kills)
    if (args.partitions or args.leader_kills) and not args.cluster:
        build_parser().error("--partitions and --leader-kills need --cluster (one server "
                             "has no leader to lose and no peers to be cut off from)")
    progress = Console(stderr=True, quiet=args.quiet)
    log = logging.getLogger("agentlab")
    if not log.handlers:  # reconnects and dead letters, as readable lines
        log.addHandler(RichHandler(console=progress, show_path=False))
        log.setLevel(logging.ERROR if args.quiet else logging.WARNING)
    report = run(config, progress)
    console.print(report.to_table())
    console.print(report.verdict())
    return 0 if report.ok else 1
