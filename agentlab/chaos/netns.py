"""A network of this machine's own for the cluster nodes, so that one of them can be cut off.

    with LabNetwork.create(3) as net:       # NetworkUnavailable (with the reason) if it can't
        net.hosts                           # ['10.213.7.11', '10.213.7.12', '10.213.7.13']
        net.command(0, ["nats-server", ...])  # runs in node 1's network namespace
        net.isolate(0); ...; net.rejoin(0)  # a partition of node 1, healed

Each node gets a Linux network namespace of its own with one address on a bridge, created for
this run (unique names, so parallel runs do not meet) and removed afterwards, on failure too.
This process, the agents and every other client stay in the host's namespace and reach the
nodes over the bridge, which has an address of its own in the same private /24 and is
connected to no physical interface: nothing outside this machine can reach the nodes.

``isolate()`` takes a node's link to the bridge down. The node goes on running, but its routes
to the other nodes and its clients' connections stop passing packets (nothing is refused or
reset: a partition, not a crash), so the other two nodes elect new leaders for what it led,
and its clients, once they notice, reconnect to them. ``rejoin()`` brings the link back; the
TCP connections that survived carry on, the node learns of the newer terms and catches up.

It needs root (CAP_NET_ADMIN) and the ``ip`` tool of iproute2, both checked up front. A run
that is SIGKILLed cannot remove its network; the next ``create()`` removes every one whose
creating process is gone (the namespace names and the bridge's alias carry its pid).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..cluster.local import LocalCluster
from ..cluster.node import ClusterNode
from ..errors import AgentlabError

__all__ = ["LabNetwork", "NamespacedCluster", "NetworkUnavailable", "unavailable"]

_PREFIX = "agentlab-chaos"
_LOCK = Path(tempfile.gettempdir()) / "agentlab-netns.lock"


class NetworkUnavailable(AgentlabError):
    """Network namespaces cannot be made here (not root, no ``ip``): partitions are skipped."""


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None if they can (root and ``ip``)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return ("network namespaces need root (CAP_NET_ADMIN); run the partition as root, "
                "e.g. in CI or a container, or leave --partitions out")
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise NetworkUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LabNetwork:
    """A bridge and ``count`` network namespaces, one per node, each with a 10.x address."""

    def __init__(self, count: int):
        self.count = count
        self.tag = f"{os.getpid() % 100_000:05d}{random.randrange(16 ** 3):03x}"
        self.bridge = f"alb{self.tag}"                     # interface names: 15 chars at most
        self.namespaces = [f"{_PREFIX}-{os.getpid()}-{self.tag}-n{i + 1}" for i in range(count)]
        self._veths = [f"alv{self.tag}{i + 1}" for i in range(count)]
        self.hosts: list[str] = []
        self.gateway = ""
        self._made: list[tuple[str, str]] = []              # what remove() takes away
        self.isolated: set[int] = set()

    @classmethod
    def create(cls, count: int = 3) -> LabNetwork:
        """Make the network, or raise NetworkUnavailable saying why (and leave nothing)."""
        why = unavailable()
        if why:
            raise NetworkUnavailable(why)
        net = cls(count)
        try:
            # Choosing a free /24 and taking it: one at a time. O_NOFOLLOW: as root, never
            # through a link someone else put at this path.
            fd = os.open(_LOCK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                remove_stale()
                net._make()
        except BaseException:
            net.remove()
            raise
        return net

    def _make(self) -> None:
        subnet = _free_subnet()
        addresses = list(subnet.hosts())
        self.gateway = str(addresses[0])
        self.hosts = [str(addresses[10 + i]) for i in range(self.count)]
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", self.bridge))
        _ip("link", "set", self.bridge, "alias", f"{_PREFIX} pid {os.getpid()}")
        _ip("addr", "add", f"{self.gateway}/{subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        # The nodes are for this machine only: nothing arriving on the bridge is routed on,
        # whatever the host's ip_forward says (Docker and CI hosts often set it).
        forwarding = Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/forwarding")
        if forwarding.exists():
            forwarding.write_text("0\n")
        for ns, veth, host in zip(self.namespaces, self._veths, self.hosts, strict=True):
            _ip("netns", "add", ns)
            self._made.append(("netns", ns))
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            inside = ("netns", "exec", ns, "ip")
            _ip(*inside, "link", "set", "lo", "up")
            _ip(*inside, "addr", "add", f"{host}/{subnet.prefixlen}", "dev", "eth0")
            _ip(*inside, "link", "set", "eth0", "up")

    def command(self, index: int, argv: list[str]) -> list[str]:
        """``argv`` run inside node ``index``'s namespace (``ip netns exec`` execs it: the
        pid is the program's own, so signals reach it directly)."""
        return ["ip", "netns", "exec", self.namespaces[index], *argv]

    def isolate(self, index: int) -> None:
        """Cut node ``index`` off from the bridge: from the other nodes and from its clients."""
        _ip("link", "set", self._veths[index], "down")
        self.isolated.add(index)

    def rejoin(self, index: int) -> None:
        _ip("link", "set", self._veths[index], "up")
        self.isolated.discard(index)

    def remove(self) -> None:
        """Remove the namespaces (their veths go with them) and the bridge; never raises."""
        for kind, name in reversed(self._made):
            _ip(kind, "del", name, check=False)
        self._made.clear()

    def __enter__(self) -> LabNetwork:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (f"<LabNetwork {self.bridge} {self.gateway}: {len(self.hosts)} namespaces"
                + (f", isolated {sorted(self.isolated)}" if self.isolated else "") + ">")


class _NamespacedNode(ClusterNode):
    """A cluster node that runs in its namespace of a LabNetwork, on its address there."""

    def __init__(self, *args: Any, network: LabNetwork, index: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.network, self.index = network, index
        self.host = network.hosts[index]

    def _command(self, exe: Path) -> list[str]:
        return self.network.command(self.index, super()._command(exe))


class NamespacedCluster(LocalCluster):
    """A LocalCluster whose nodes run each in a namespace of ``network`` (see LabNetwork):
    ``cluster.network.isolate(i)`` partitions node ``i`` while it goes on running."""

    def __init__(self, size: int, network: LabNetwork, **options: Any):
        if network.count < size:
            raise ValueError(f"{network!r} has {network.count} namespaces for {size} nodes")
        super().__init__(size, **options)
        self.network = network

    def _new_node(self, config: Any, cluster_port: int) -> ClusterNode:
        assert self.store_dir is not None
        return _NamespacedNode(config, self.store_dir / config.server_name, cluster_port,
                               login=self._login, route_login=self._route_login,
                               certs=self._certs, network=self.network,
                               index=len(self.nodes))

    def index(self, name: str) -> int:
        """The namespace (LabNetwork index) node ``name`` runs in."""
        return self.names.index(name)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no interface or route of this machine overlaps."""
    taken = []
    for line in _ip("-4", "-o", "addr", "show").stdout.splitlines():
        taken.append(ipaddress.ip_interface(line.split()[3]).network)
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        words = line.split()
        if words and words[0] in ("local", "broadcast", "unicast", "anycast", "multicast"):
            words = words[1:]
        first = words[0] if words else ""
        try:
            taken.append(ipaddress.ip_network(first, strict=False))
        except ValueError:  # "default", "local", "broadcast" ...
            continue
    for _ in range(200):
        candidate = ipaddress.IPv4Network(f"10.{random.randrange(200, 208)}."
                                         f"{random.randrange(256)}.0/24")
        if not any(candidate.overlaps(net) for net in taken if net.prefixlen > 0):
            return candidate
    raise NetworkUnavailable("no free /24 in 10.200.0.0/13 for the lab network")


def remove_stale() -> None:
    """Remove the networks of runs whose process is gone (a SIGKILLed run leaves its own)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if name.startswith(_PREFIX + "-") and len(parts) >= 5 and parts[2].isdigit() \
                and not _pid_alive(int(parts[2])):
            _ip("netns", "del", name, check=False)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        fields = line.split()
        name = fields[1].rstrip(":") if len(fields) > 1 else ""
        if not name.startswith("alb") or "alias" not in fields:
            continue
        alias = fields[fields.index("alias") + 1:]
        if len(alias) >= 3 and alias[:2] == [_PREFIX, "pid"] and alias[2].isdigit() \
                and not _pid_alive(int(alias[2])):
            _ip("link", "del", name, check=False)
