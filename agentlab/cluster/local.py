"""LocalCluster: the node configs run as child processes on 127.0.0.1, and what the
cluster looks like from outside (meta leader, stream leaders, each node's copy of a stream).

Closed, as a single embedded server is: the nodes admit only the cluster's login (generated,
or ``user=``/``password=``), which this process uses by itself (``Client.open(cluster.url)``)
and ``credentials_path`` (mode 0600) holds for other processes (``client_env()``).
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.credentials import CREDENTIALS_ENV, Login, remember_login, write_credentials
from ..core.server import ServerStartError
from ..core.tls import LabCertificates, TlsFiles, tls_mode
from ..errors import AgentlabError, ServerUnreachable
from .config import NodeConfig, node_config_paths
from .node import ClusterNode, _free_ports

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["ROUTES_SETTLE", "ClusterTimeout", "LocalCluster"]

T = TypeVar("T")

# How long a restarted node's peers may count it (and it them) as unable to carry
# replication in the account (cluster_traffic: owner) after their routes form: until the next
# statsz heartbeat, every 10 s in nats-server (statsHBInterval), corrects the flag a new
# route starts with. Stopping another node within that time can leave a stream's new leader
# replicating in the system account while its follower listens in the account's: the
# stream takes no writes until the stopped node is back. With a margin for a loaded machine.
ROUTES_SETTLE = 12.0


class ClusterTimeout(AgentlabError, TimeoutError):
    """The cluster did not reach a state (a leader elected, a node caught up) in time."""


class LocalCluster:
    """``size`` nodes (``deploy/nats/node-1.conf``, ...) as child processes on 127.0.0.1."""

    def __init__(self, size: int = 3, store_dir: str | Path | None = None, *,
                 config_dir: str | Path | None = None, user: str | None = None,
                 password: str | None = None, tls: bool | str | None = None):
        self.tls = tls_mode(tls)  # TLS only, clients and routes, with one CA for all nodes
        self._certs: LabCertificates | None = None  # made with the nodes, in the store
        if (user is None) != (password is None):
            raise ValueError("Give the cluster's login whole: user= and password= together "
                             "(or neither, for a generated one).")
        self._login = Login(user, password) if user is not None and password is not None \
            else Login.generate()
        self._route_login = Login.generate("route")  # between the nodes only
        paths = node_config_paths(Path(config_dir) if config_dir else None)
        if not 1 <= size <= len(paths):
            raise ValueError(f"size={size}: there are node configs for 1 to {len(paths)} nodes "
                             f"in {paths[0].parent}.")
        self.configs = [NodeConfig.read(p) for p in paths[:size]]
        names = [c.server_name for c in self.configs]
        if len(set(names)) != len(names):
            raise ValueError(f"Two node configs share a server_name: {names}")
        if len({c.cluster_name for c in self.configs}) != 1:
            raise ValueError("The node configs name different clusters: "
                             f"{sorted({c.cluster_name for c in self.configs})}")
        everyone = {c.server_name for c in self._all(paths)}
        for c in self.configs:
            for host, _ in c.route_targets():
                if host not in everyone:
                    raise ValueError(f"{c.path}: the route to {host!r} names no node "
                                     f"(the nodes are {sorted(everyone)})")
        self.store_dir = Path(store_dir).expanduser().resolve() if store_dir else None
        self._temp_store = store_dir is None
        self.nodes: dict[str, ClusterNode] = {}
        self._clients: list[Client] = []
        self._lock = threading.RLock()
        self._renewed_at: dict[str, float] = {}  # node -> time.monotonic() its routes formed

    @staticmethod
    def _all(paths: list[Path]) -> list[NodeConfig]:
        return [NodeConfig.read(p) for p in paths]

    # -- life cycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30) -> LocalCluster:
        """Start every node, then wait until they have elected a JetStream meta leader."""
        with self._lock:
            first = not self.nodes
            if first:
                self._create_nodes()
            deadline = time.monotonic() + timeout
            try:
                try:
                    self._start_nodes(deadline)
                except ServerStartError as error:
                    # The cluster ports were free when chosen; if something took one since,
                    # choose again (once). Later starts keep their ports, as clients expect.
                    if not first or "address already in use" not in str(error):
                        raise
                    for node in self.nodes.values():
                        node.stop()
                    self.nodes.clear()
                    self._create_nodes()
                    self._start_nodes(deadline)
                self.wait_for_meta_leader(timeout=max(1.0, deadline - time.monotonic()))
                assert self.store_dir is not None  # _create_nodes() chose it
                path = write_credentials(self.store_dir / "credentials.json", self.url,
                                         self._login,
                                         f"agentlab local cluster of {len(self.configs)} nodes",
                                         tls=self.tls_files)
                remember_login(self.url, self._login, path)  # every node's URL: this file
            except BaseException:
                self.stop()
                raise
        return self

    def _start_nodes(self, deadline: float) -> None:
        for node in self.nodes.values():
            if not node.is_running:
                node.start(timeout=max(1.0, deadline - time.monotonic()))

    def _create_nodes(self) -> None:
        if self.store_dir is None:
            self.store_dir = Path(tempfile.mkdtemp(prefix="agentlab-cluster-"))
        if self.tls and self._certs is None:
            self._certs = LabCertificates.generate(self.store_dir / "tls",
                                                   mutual=self.tls == "mutual",
                                                   name="agentlab cluster")
        ports = dict(zip((c.server_name for c in self.configs), _free_ports(len(self.configs)),
                         strict=True))
        for config in self.configs:
            self.nodes[config.server_name] = self._new_node(config, ports[config.server_name])
        for config in self.configs:
            # The file's routes, pointed at the addresses and ports of the nodes they name; a
            # route to a node outside this cluster (size < the number of files) is left out.
            self.nodes[config.server_name].routes = [
                urllib.parse.urlsplit(route)._replace(
                    netloc=f"{self.nodes[host].host}:{ports[host]}").geturl()
                for route, (host, _) in zip(config.routes, config.route_targets(), strict=True)
                if host in ports]

    def _new_node(self, config: NodeConfig, cluster_port: int) -> ClusterNode:
        """One node, on loopback (the fault suite's partitions run each in a namespace)."""
        assert self.store_dir is not None  # _create_nodes() chose it
        return ClusterNode(config, self.store_dir / config.server_name, cluster_port,
                           login=self._login, route_login=self._route_login,
                           certs=self._certs)

    def stop(self) -> None:
        """Close the connections made by connect(), stop every node, drop a temporary store."""
        with self._lock:
            for client in self._clients:
                if not client.is_closed:
                    try:
                        client.close()
                    except Exception:  # its servers are going away anyway
                        pass
            self._clients.clear()
            for node in self.nodes.values():
                node.stop()
            if self._temp_store and self.store_dir is not None:
                shutil.rmtree(self.store_dir, ignore_errors=True)

    def stop_node(self, name: str, *, kill: bool = False) -> ClusterNode:
        """Stop one node: SIGTERM (an orderly shutdown), or SIGKILL with ``kill=True`` (a
        crash). Its store stays, so start_node() brings it back with its data."""
        node = self.node(name)
        if kill:
            node.kill()
        else:
            node.stop()
        return node

    def start_node(self, name: str, timeout: float = 10) -> ClusterNode:
        """Start a stopped node again, on the same store, ports and routes."""
        node = self.node(name).start(timeout=timeout)
        self.routes_renewed(name)
        return node

    def routes_renewed(self, name: str) -> None:
        """Node ``name``'s routes to its peers form again now (it was restarted, woken from a
        pause, or its partition healed): wait_for_catch_up() gives them ``ROUTES_SETTLE``."""
        self.node(name)  # an unknown name is refused now
        self._renewed_at[name] = time.monotonic()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- looking at it ------------------------------------------------------------------------
    def node(self, name: str) -> ClusterNode:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none yet: call start() first"
            raise KeyError(f"No node named {name!r} in this cluster (nodes: {known})") from None

    @property
    def names(self) -> list[str]:
        return [c.server_name for c in self.configs]

    def running(self) -> list[ClusterNode]:
        return [n for n in self.nodes.values() if n.is_running]

    @property
    def urls(self) -> list[str]:
        """Every node's client URL, stopped ones included: they come back on the same port."""
        return [n.url for n in self.nodes.values() if n.port]

    @property
    def url(self) -> str:
        """All client URLs in one string, comma-separated, as Client.open() and
        AGENTLAB_NATS_URL take them: a connection fails over between the nodes."""
        if not self.urls:
            raise ServerStartError("This cluster has not started", fix="Call start() first.")
        return ",".join(self.urls)

    @property
    def is_running(self) -> bool:
        return any(n.is_running for n in self.nodes.values())

    @property
    def pid(self) -> int | None:
        running = self.running()
        return running[0].pid if running else None

    @property
    def monitor_url(self) -> str | None:
        running = self.running()
        return running[0].monitor_url if running else None

    @property
    def credentials_path(self) -> Path | None:
        """The login as a nats CLI context file (mode 0600), once started."""
        path = self.store_dir / "credentials.json" if self.store_dir else None
        return path if path is not None and path.exists() else None

    def login(self) -> dict[str, str]:
        """``user=`` and ``password=`` of the cluster's login (secrets: never print them)."""
        return self._login.kwargs()

    @property
    def tls_files(self) -> TlsFiles | None:
        """With ``tls=``: the cluster's CA (and client certificate, mutual), else None."""
        return self._certs.client_files() if self._certs is not None else None

    def tls_context(self) -> ssl.SSLContext | None:
        """An ``ssl.SSLContext`` trusting the cluster's CA, for an outside client."""
        files = self.tls_files
        return files.context() if files is not None else None

    def client_env(self) -> dict[str, str]:
        """``AGENTLAB_NATS_URL`` (every node) and ``AGENTLAB_NATS_CREDENTIALS`` (the path)."""
        env = {"AGENTLAB_NATS_URL": self.url}
        if self.credentials_path is not None:
            env[CREDENTIALS_ENV] = str(self.credentials_path)
        return env

    def connect(self, name: str = "agentlab", **options: Any) -> Client:
        """A connection to the cluster (all node URLs); closed by stop()."""
        from ..core.client import Client

        client = Client.open(self.url, name=name, **options)
        self._clients.append(client)
        return client

    def _jsz(self, node: ClusterNode, **query: Any) -> dict[str, Any] | None:
        try:
            return node.jsz(**query)
        except (ServerUnreachable, ValueError):  # stopping, or not answering yet
            return None

    def meta_leader(self) -> str | None:
        """The node that leads the JetStream meta group (streams and consumers are created
        through it), if every running node agrees on one; else None."""
        leaders = set()
        for node in self.running():
            info = self._jsz(node)
            leaders.add(((info or {}).get("meta_cluster") or {}).get("leader") or None)
        leader = leaders.pop() if len(leaders) == 1 else None
        return leader if leader in {n.name for n in self.running()} else None

    def stream_detail(self, node: str, stream: str) -> dict[str, Any] | None:
        """``stream`` as one node sees it (its ``/jsz`` stream detail), or None."""
        info = self._jsz(self.node(node), accounts=True, streams=True) or {}
        for account in info.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail.get("name") == stream:
                    return detail
        return None

    def stream_state(self, node: str, stream: str) -> dict[str, Any] | None:
        """The stream's state in one node's own copy: messages, first_seq, last_seq, ..."""
        detail = self.stream_detail(node, stream)
        return detail.get("state") if detail else None

    def stream_leader(self, stream: str) -> str | None:
        """The running node that leads ``stream`` (it orders and acknowledges its writes).

        A node counts as leader once it says so and a majority of the cluster's nodes name
        it: a node just restarted may still believe in the leadership it had before.
        """
        votes: dict[str, int] = {}
        claims = set()
        for node in self.running():
            detail = self.stream_detail(node.name, stream)
            leader = ((detail or {}).get("cluster") or {}).get("leader")
            if leader:
                votes[leader] = votes.get(leader, 0) + 1
                if leader == node.name:
                    claims.add(leader)
        for leader in claims:
            if votes[leader] > len(self.configs) // 2:
                return leader
        return None

    def wait_for_meta_leader(self, timeout: float = 20) -> str:
        return self._wait(self.meta_leader, timeout, "a JetStream meta leader")

    def wait_for_stream_leader(self, stream: str, timeout: float = 20,
                               other_than: str | None = None) -> str:
        """The stream's leader, once there is one (one that is not ``other_than``)."""
        def leader() -> str | None:
            found = self.stream_leader(stream)
            return found if found != other_than else None

        return self._wait(leader, timeout, f"a leader for stream '{stream}'")

    def wait_for_catch_up(self, name: str, stream: str, timeout: float = 20
                          ) -> dict[str, Any]:
        """Wait until node ``name``'s own copy of ``stream`` has everything the leader had a
        moment before (its last sequence at least the leader's) and the leader counts it as
        current; returns that copy's state. Messages may go on arriving meanwhile.

        A node restored from the leader's snapshot holds every message while its Raft log
        still lags, so both are asked; and a node restarted by start_node() (or marked with
        routes_renewed()) counts as caught up only ``ROUTES_SETTLE`` seconds after, when it
        and its peers agree again on the account replication travels in. Stop another node
        sooner and a stream's new leader may be one the third node cannot follow: its writes
        hang, or are refused as "in process" (10158), until the stopped node returns.
        """
        def caught_up() -> dict[str, Any] | None:
            leader = self.stream_leader(stream)
            if leader is None or leader == name:  # a leader is its own latest copy
                return self.stream_state(name, stream) if leader else None
            detail = self.stream_detail(leader, stream) or {}
            theirs = detail.get("state")
            if not theirs:
                return None
            peers = (detail.get("cluster") or {}).get("replicas") or []
            if not any(p.get("name") == name and p.get("current") for p in peers):
                return None
            ours = self.stream_state(name, stream)  # read after theirs
            if ours and ours.get("last_seq", 0) >= theirs.get("last_seq", 0):
                return ours
            return None

        def settled() -> dict[str, Any] | None:
            renewed = self._renewed_at.get(name)
            if renewed is not None and time.monotonic() - renewed < ROUTES_SETTLE:
                return None
            return caught_up()

        return self._wait(settled, timeout, f"{name} to catch up on stream '{stream}'")

    def _wait(self, probe: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found:
                return found
            if time.monotonic() > deadline:
                raise ClusterTimeout(
                    f"No {what} within {timeout:g} s. Running nodes: "
                    f"{[n.name for n in self.running()] or 'none'}; a JetStream cluster needs "
                    f"a majority of its {len(self.configs)} nodes. The node logs are in "
                    f"{self.store_dir}/<node>/nats-server.log.")
            time.sleep(0.05)

    def status(self) -> list[dict[str, Any]]:
        """One row per node: name, state, client URL, monitoring URL, pid, meta leader."""
        meta = self.meta_leader() if self.is_running else None
        return [{"node": n.name, "state": "running" if n.is_running else "stopped",
                 "url": n.url if n.port else None, "monitoring": n.monitor_url,
                 "pid": n.pid if n.is_running else None, "meta_leader": n.name == meta}
                for n in self.nodes.values()]

    def __repr__(self) -> str:
        up = len(self.running())
        return f"<LocalCluster {len(self.configs)} nodes, {up} running, store={self.store_dir}>"

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>"
                       for h in ("node", "state", "client URL", "monitoring", "role"))
        rows = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'><code>{v}</code></td>" for v in (
                r["node"], r["state"], r["url"] or "", r["monitoring"] or "",
                "meta leader" if r["meta_leader"] else "")) + "</tr>"
            for r in self.status())
        return (f"<table><caption style='text-align:left'><b>local NATS cluster</b> "
                f"({len(self.configs)} nodes)</caption><tr>{head}</tr>{rows}</table>")
