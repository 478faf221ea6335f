"""What the server faults hit: one embedded nats-server, or a local three-node cluster."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any


class SingleServer:
    """One embedded nats-server: SIGKILLed and restarted on the same store dir and port,
    or paused (SIGSTOP, then SIGCONT)."""

    replicas = 1
    partition_unavailable = "a partition needs --cluster (one server has no peers to lose)"

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

    killed_at = 0.0  # time.time() of the latest SIGKILL (after any leader lookup)

    def kill(self, number: int, leader: bool = False) -> tuple[str, Any]:
        self.killed_at = time.time()
        self.server.kill()
        return "server", None

    def restart(self, token: Any) -> None:
        self.server.restart()

    def catch_up(self, token: Any) -> None:
        pass  # one server has nobody to catch up with

    def pause(self) -> tuple[str, int, Any]:
        """SIGSTOP the server; returns its label, the pid to SIGCONT and catch_up()'s token."""
        assert self.server.pid is not None  # started
        os.kill(self.server.pid, signal.SIGSTOP)
        return "server", self.server.pid, None

    def isolate(self) -> tuple[str, Any]:
        raise RuntimeError(self.partition_unavailable)

    def rejoin(self, token: Any) -> None:
        raise RuntimeError(self.partition_unavailable)


class ClusterServers:
    """agentlab.cluster's three local nodes, streams and buckets with three replicas.

    The first fault SIGKILLs the node that leads AGENT_TASKS, later ones a random node
    (``leader=True``: the leader again); each comes back on its store. A write is
    acknowledged once two of the three nodes have it, so one node's SIGKILL loses nothing
    acknowledged (the node configs run unchanged). Pauses and partitions hit the AGENT_TASKS
    leader. With ``partition=True`` the nodes run in network namespaces of their own
    (:mod:`agentlab.chaos.netns`), so that one can be cut off; where namespaces cannot be
    made, ``partition_unavailable`` says why and the nodes run on loopback.
    """

    replicas = 3
    killed_at = 0.0  # time.time() of the latest SIGKILL (after the leader lookup)

    def __init__(self, workdir: Path, rng: random.Random, partition: bool = False):
        self.workdir, self.random = workdir, rng
        self.partition_unavailable: str | None = "not asked for" if not partition else None
        self.network: Any = None
        self.cluster: Any = None

    @property
    def url(self) -> str:
        return self.cluster.url

    def client_env(self) -> dict[str, str]:
        return self.cluster.client_env()

    def start(self) -> None:
        from ..cluster import LocalCluster
        from .netns import LabNetwork, NamespacedCluster, NetworkUnavailable

        store = self.workdir / "cluster"
        if self.partition_unavailable is None:
            try:
                self.network = LabNetwork.create(3)
            except NetworkUnavailable as why:
                self.partition_unavailable = str(why)
        try:
            self.cluster = (NamespacedCluster(3, self.network, store_dir=store) if self.network
                            else LocalCluster(3, store_dir=store))
            self.cluster.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        try:
            if self.cluster is not None:
                self.cluster.stop()
        finally:
            if self.network is not None:
                self.network.remove()

    def leader(self) -> str:
        from ..org.agent import TASK_STREAM

        return self.cluster.wait_for_stream_leader(TASK_STREAM)

    def kill(self, number: int, leader: bool = False) -> tuple[str, Any]:
        from ..org.agent import TASK_STREAM

        if number == 1 or leader:
            name = self.leader()
            label = f"{name}, the {TASK_STREAM} leader"
        else:
            name = self.random.choice([n.name for n in self.cluster.running()])
            label = name
        self.killed_at = time.time()
        self.cluster.stop_node(name, kill=True)
        return label, name

    def restart(self, name: Any) -> None:
        self.cluster.start_node(name)

    def catch_up(self, name: str) -> None:
        """Wait (a while) until node ``name`` has the tasks again and its routes have
        settled, so that the next fault starts from three current nodes."""
        from ..cluster import ClusterTimeout
        from ..org.agent import TASK_STREAM

        self.cluster.routes_renewed(name)  # restarted, woken, or its link back
        try:
            self.cluster.wait_for_catch_up(name, TASK_STREAM, timeout=30)
        except ClusterTimeout:
            pass  # the run goes on; the checks at the end tell whether anything was lost

    def pause(self) -> tuple[str, int, Any]:
        from ..org.agent import TASK_STREAM

        name = self.leader()
        pid = self.cluster.node(name).pid
        os.kill(pid, signal.SIGSTOP)
        return f"{name}, the {TASK_STREAM} leader", pid, name

    def isolate(self) -> tuple[str, Any]:
        from ..org.agent import TASK_STREAM

        if self.network is None:
            raise RuntimeError(self.partition_unavailable)
        name = self.leader()
        self.network.isolate(self.cluster.index(name))
        return f"{name}, the {TASK_STREAM} leader", name

    def rejoin(self, name: Any) -> None:
        self.network.rejoin(self.cluster.index(name))
        self.catch_up(name)
