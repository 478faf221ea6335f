"""What the server faults hit: one embedded nats-server, or a local three-node cluster."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any


class SingleServer:
    """One embedded nats-server: SIGKILLed and restarted on the same store dir and port."""

    replicas = 1

    def __init__(self, workdir: Path, sync_always: bool = True):
        from ..core.server import EmbeddedServer

        # sync_interval: always. nats-server acknowledges a write (a task, a KV create, a
        # ledger entry) once it has handed it to the operating system's file buffers, and
        # fsyncs them only every two minutes by default. A SIGKILL of the process leaves
        # those buffers to the kernel; the crash this test stands for (a machine or VM going
        # down, a power cut) loses them: acknowledged tasks gone, effects applied twice.
        # With "always" every write is fsynced before it is acknowledged, so "zero lost"
        # holds because acknowledged means on disk, not because the kernel survived.
        self.server = EmbeddedServer(name="chaos", store_dir=workdir / "store",
                                     sync_always=sync_always, max_file="8GB")

    @property
    def url(self) -> str:
        return self.server.url

    def client_env(self) -> dict[str, str]:
        return self.server.client_env()  # the URL and the credentials file, for the workers

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def kill(self, number: int) -> tuple[str, Any]:
        self.server.kill()
        return "server", None

    def restart(self, token: Any) -> None:
        self.server.restart()


class ClusterServers:
    """agentlab.cluster's three local nodes, streams and buckets with three replicas.

    The first fault SIGKILLs the node that leads AGENT_TASKS, later ones a random node; each
    comes back on its store. A write is acknowledged once two of the three nodes have it,
    so one node's SIGKILL loses nothing acknowledged (the node configs run unchanged).
    """

    replicas = 3

    def __init__(self, workdir: Path, rng: random.Random):
        from ..cluster import LocalCluster

        self.cluster = LocalCluster(3, store_dir=workdir / "cluster")
        self.random = rng

    @property
    def url(self) -> str:
        return self.cluster.url

    def client_env(self) -> dict[str, str]:
        return self.cluster.client_env()

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()

    def kill(self, number: int) -> tuple[str, Any]:
        from ..org.agent import TASK_STREAM

        if number == 1:
            name = self.cluster.wait_for_stream_leader(TASK_STREAM)
            label = f"{name}, the {TASK_STREAM} leader"
        else:
            name = self.random.choice([n.name for n in self.cluster.running()])
            label = name
        self.cluster.stop_node(name, kill=True)
        return label, name

    def restart(self, name: Any) -> None:
        self.cluster.start_node(name)
