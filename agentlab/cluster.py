"""A three-node NATS JetStream cluster on this machine, from the configs docker compose uses.

    cluster = LocalCluster().start()           # deploy/nats/node-{1,2,3}.conf on 127.0.0.1
    client = cluster.connect("ops")            # one URL list: fails over between the nodes
    leader = cluster.stream_leader("AGENT_TASKS")
    cluster.stop_node(leader)                  # a new leader is elected; clients move over
    cluster.start_node(leader)                 # the node comes back and catches up
    cluster.stop()

``agentlab.start(cluster=3)`` does the above and declares the reference streams with three
replicas. Each node runs its config file from ``deploy/nats/`` unchanged, the very file that
``docker-compose.yml`` mounts; what must differ on one machine (127.0.0.1, free ports
instead of 4222/8222/6222, the routes to them, a store directory per node) is given on the
nats-server command line, which overrides the file. Each node is an
:class:`~agentlab.server.EmbeddedServer`, so it never outlives this process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import AgentlabError, ClientClosed, JetStreamError, ServerUnreachable
from .server import EmbeddedServer, ServerStartError

if TYPE_CHECKING:
    from .client import Client
    from .subjects import Subjects

__all__ = ["ClusterNode", "ClusterTimeout", "LocalCluster", "NodeConfig", "AckedPublisher",
           "config_dir", "declare_replicated_streams", "missing_acked", "node_config_paths",
           "parse_conf"]

log = logging.getLogger("agentlab")
T = TypeVar("T")

CONFIG_DIR_ENV = "AGENTLAB_NATS_CONFIG_DIR"


class ClusterTimeout(AgentlabError, TimeoutError):
    """The cluster did not reach a state (a leader elected, a node caught up) in time."""


# ---------------------------------------------------------------------------------------------
# the node config files


def config_dir() -> Path:
    """Where the node configs are: ``$AGENTLAB_NATS_CONFIG_DIR``, else the repository's
    ``deploy/nats`` next to this package (a checkout, or an editable install of it)."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[1] / "deploy" / "nats"


def node_config_paths(directory: Path | None = None) -> list[Path]:
    """``node-1.conf``, ``node-2.conf``, ... in ``directory``, in node order."""
    directory = Path(directory) if directory else config_dir()
    found = [(int(m.group(1)), p) for p in directory.glob("node-*.conf")
             if (m := re.fullmatch(r"node-(\d+)\.conf", p.name))]
    if not found:
        raise FileNotFoundError(
            f"No node configs (node-1.conf, ...) in {directory}. They ship with the agentlab "
            f"repository in deploy/nats/: run from a checkout (pip install -e .), or set "
            f"{CONFIG_DIR_ENV} to a folder that holds them.")
    return [p for _, p in sorted(found)]


class _ConfParser:
    """The part of the NATS config format that the node files use: ``key: value`` (also
    ``=`` or a space), ``{ maps }``, ``[ arrays ]``, quoted or bare strings, numbers,
    booleans, ``#`` and ``//`` comments. ``include`` and ``$variables`` are refused."""

    _BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

    def __init__(self, text: str, source: str):
        self.s, self.i, self.source = text, 0, source

    def fail(self, what: str) -> ValueError:
        line = self.s.count("\n", 0, self.i) + 1
        return ValueError(f"{self.source}, line {line}: {what}")

    def _comment_here(self) -> bool:
        s, i = self.s, self.i
        at_word_start = i == 0 or s[i - 1] in " \t\r\n,;{}[]"
        return at_word_start and (s[i] == "#" or s.startswith("//", i))

    def skip(self, separators: str = "") -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r" or c in separators:
                self.i += 1
            elif self._comment_here():
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                return

    def document(self) -> dict[str, Any]:
        return self.mapping(closing=None)

    def mapping(self, closing: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            self.skip("\n,;")
            if self.i >= len(self.s):
                if closing:
                    raise self.fail(f"missing '{closing}'")
                return out
            if closing and self.s[self.i] == closing:
                self.i += 1
                return out
            match = re.compile(r"[A-Za-z0-9_.$-]+|\"[^\"\n]*\"|'[^'\n]*'").match(self.s, self.i)
            if not match:
                raise self.fail(f"expected a key, found {self.s[self.i]!r}")
            key = match.group().strip("\"'")
            self.i = match.end()
            if key == "include":
                raise self.fail("'include' is not supported in the node configs")
            self.skip()
            if self.i < len(self.s) and self.s[self.i] in ":=":
                self.i += 1
                self.skip()
            if key in out:
                raise self.fail(f"'{key}' is set twice")
            out[key] = self.value()

    def value(self) -> Any:
        if self.i >= len(self.s):
            raise self.fail("a value is missing")
        c = self.s[self.i]
        if c == "{":
            self.i += 1
            return self.mapping(closing="}")
        if c == "[":
            self.i += 1
            items = []
            while True:
                self.skip("\n,")
                if self.i >= len(self.s):
                    raise self.fail("missing ']'")
                if self.s[self.i] == "]":
                    self.i += 1
                    return items
                items.append(self.value())
        if c in "\"'":
            end = self.s.find(c, self.i + 1)
            if end < 0:
                raise self.fail("unterminated string")
            text, self.i = self.s[self.i + 1:end], end + 1
            return text
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in "\n,;}]" and not self._comment_here():
            self.i += 1
        raw = self.s[start:self.i].strip()
        if raw.startswith("$"):
            raise self.fail("variables ($NAME) are not supported in the node configs")
        if re.fullmatch(r"-?\d+", raw):
            return int(raw)
        return self._BOOLS.get(raw.lower(), raw)


def parse_conf(text: str, source: str = "<config>") -> dict[str, Any]:
    """A nats-server config (the subset the node files use) as nested dicts and lists."""
    return _ConfParser(text, source).document()


def _host_port(value: Any, default_host: str = "0.0.0.0") -> tuple[str, int]:
    if isinstance(value, int):
        return default_host, value
    host, _, port = str(value).rpartition(":")
    return host or default_host, int(port)


@dataclass(frozen=True)
class NodeConfig:
    """What agentlab needs to know of one node's config file (the rest it leaves alone)."""

    path: Path
    server_name: str
    client_port: int
    http_port: int
    cluster_name: str
    cluster_port: int
    routes: tuple[str, ...]  # as written, e.g. nats-route://nats-2:6222
    settings: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def read(cls, path: str | Path) -> NodeConfig:
        path = Path(path).resolve()
        conf = parse_conf(path.read_text(encoding="utf-8"), str(path))

        def need(mapping: dict[str, Any], key: str, where: str = "") -> Any:
            if key not in mapping:
                raise ValueError(f"{path}: '{where}{key}' is missing")
            return mapping[key]

        cluster, js = need(conf, "cluster"), need(conf, "jetstream")
        if not isinstance(cluster, dict) or not isinstance(js, dict):
            raise ValueError(f"{path}: 'cluster' and 'jetstream' must be {{ blocks }}")
        if "store_dir" in js:
            raise ValueError(
                f"{path}: leave jetstream.store_dir out of the node config. Whoever runs the "
                "node passes it with --store_dir (docker-compose.yml: /data; agentlab: a "
                "directory per node), and nats-server refuses it in both places at once.")
        client = conf.get("listen", conf.get("port", 4222))
        http = conf.get("http", conf.get("http_port"))
        if http is None:
            raise ValueError(f"{path}: set http_port, the monitoring port agentlab reads")
        routes = need(cluster, "routes", "cluster.")
        return cls(path=path, server_name=str(need(conf, "server_name")),
                   client_port=_host_port(client)[1], http_port=_host_port(http)[1],
                   cluster_name=str(need(cluster, "name", "cluster.")),
                   cluster_port=_host_port(cluster.get("listen", cluster.get("port", 6222)))[1],
                   routes=tuple(str(r) for r in routes), settings=conf)

    def route_targets(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each route: in docker compose, a service name and its port."""
        out = []
        for route in self.routes:
            url = urllib.parse.urlsplit(route)
            if not url.hostname or not url.port:
                raise ValueError(f"{self.path}: route {route!r} needs a host and a port")
            out.append((url.hostname, url.port))
        return out


# ---------------------------------------------------------------------------------------------
# one node


class ClusterNode(EmbeddedServer):
    """One cluster node: its config file run unchanged, with loopback overrides as flags."""

    def __init__(self, config: NodeConfig, store_dir: Path, cluster_port: int):
        super().__init__(store_dir=store_dir, name=config.server_name)
        self.config = config
        self.cluster_port = cluster_port
        self.routes: list[str] = []  # loopback URLs, set by LocalCluster
        self._monitor_port: int | None = None

    @property
    def config_path(self) -> Path:
        return self.config.path

    def _write_config(self) -> None:
        pass  # the node's file is used as it is

    def _command(self, exe: Path) -> list[str]:
        store = self.store_dir.as_posix()
        args = [str(exe), "-c", str(self.config.path),
                "-a", "127.0.0.1", "-p", str(self.port or -1),
                "-m", str(self._monitor_port or -1),
                "--ports_file_dir", store, "-l", self.log_path.as_posix(), "-sd", store,
                "--cluster_listen", f"nats://127.0.0.1:{self.cluster_port}"]
        if self.routes:
            args += ["--routes", ",".join(self.routes)]
        return args

    def _wait_ready(self, deadline: float) -> None:
        super()._wait_ready(deadline)
        # Keep the monitoring port too across restarts: a bookmarked /jsz stays valid.
        self._monitor_port = int(self.monitor_url.rsplit(":", 1)[1])

    def __repr__(self) -> str:
        return super().__repr__().replace("<EmbeddedServer", "<ClusterNode", 1)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


# ---------------------------------------------------------------------------------------------
# the cluster


class LocalCluster:
    """``size`` nodes (``deploy/nats/node-1.conf``, ...) as child processes on 127.0.0.1."""

    def __init__(self, size: int = 3, store_dir: str | Path | None = None, *,
                 config_dir: str | Path | None = None):
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
        ports = dict(zip((c.server_name for c in self.configs), _free_ports(len(self.configs))))
        for config in self.configs:
            node = ClusterNode(config, self.store_dir / config.server_name,
                               ports[config.server_name])
            # The file's routes, pointed at the loopback ports of the nodes they name; a
            # route to a node outside this cluster (size < the number of files) is left out.
            node.routes = [urllib.parse.urlsplit(route)._replace(
                               netloc=f"127.0.0.1:{ports[host]}").geturl()
                           for route, (host, _) in zip(config.routes, config.route_targets())
                           if host in ports]
            self.nodes[config.server_name] = node

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
        return self.node(name).start(timeout=timeout)

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

    def connect(self, name: str = "agentlab", **options: Any) -> Client:
        """A connection to the cluster (all node URLs); closed by stop()."""
        from .client import Client

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
        moment before (its last sequence at least the leader's); returns that copy's state.
        Messages may go on arriving meanwhile."""
        def caught_up() -> dict[str, Any] | None:
            leader = self.stream_leader(stream)
            theirs = self.stream_state(leader, stream) if leader else None
            ours = self.stream_state(name, stream) if theirs else None  # read after theirs
            if ours and ours.get("last_seq", 0) >= theirs.get("last_seq", 0):
                return ours
            return None

        return self._wait(caught_up, timeout, f"{name} to catch up on stream '{stream}'")

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


# ---------------------------------------------------------------------------------------------
# replicated streams


_RETRYABLE = ("temporarily unavailable", "insufficient resources", "no suitable peers",
              "timed out", "timeout", "leader")


def declare_replicated_streams(client: Client, replicas: int = 3,
                               subjects: Subjects | None = None, timeout: float = 20
                               ) -> tuple[list[str], int]:
    """The reference streams with ``replicas`` copies each; returns (names, replicas used).

    A server that is not clustered cannot keep more than one copy: there, one is used (and
    a warning logged). Just after a cluster forms, JetStream may not place replicas yet; the
    declaration is retried until ``timeout``.
    """
    from .errors import RequestTimeout
    from .org.streams import declare_reference_streams

    if replicas > 1 and not client.nc._server_info.get("cluster"):
        log.warning("The server at %s is not part of a cluster: the streams get 1 replica, "
                    "not %d.", client.url, replicas)
        replicas = 1
    deadline = time.monotonic() + timeout
    while True:
        try:
            return declare_reference_streams(client, subjects, replicas=replicas), replicas
        except (JetStreamError, RequestTimeout) as error:
            retry = isinstance(error, RequestTimeout) or \
                any(word in str(error).lower() for word in _RETRYABLE)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# publishing through a failover


class AckedPublisher:
    """Publishes numbered messages from a thread of its own, each one until acknowledged.

        publisher = AckedPublisher(client, "genbrain.agents.cto.tasks").start()
        ...                                   # stop a node: publishes fail, then resume
        publisher.stop()
        publisher.acked                       # {msg_id: stream sequence} of every receipt

    A publish that gets no receipt (the leader is gone, a new one is being elected) is sent
    again with the same ``Nats-Msg-Id``, so the stream stores it once however often it is
    retried. ``acked`` holds only what the stream confirmed: that is what must never be lost.
    """

    def __init__(self, client: Client, subject: str, *, prefix: str | None = None,
                 payload: Callable[[int], Any] | None = None, interval: float = 0.01,
                 timeout: float = 1.0, retry_wait: float = 0.1):
        self.client, self.subject = client, subject
        self.prefix = prefix or f"msg-{os.getpid()}-{next(_publishers)}"
        self.payload = payload or (lambda n: {"n": n})
        self.interval, self.timeout, self.retry_wait = interval, timeout, retry_wait
        self.acked: dict[str, int] = {}
        self.duplicates = 0  # receipts for a resend the stream had already stored
        self.failures: list[tuple[float, str]] = []  # (seconds since start, what happened)
        self._ack_times: list[float] = []
        self._started = 0.0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> AckedPublisher:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"agentlab-publisher-{self.prefix}")
        self._thread.start()
        return self

    def stop(self, timeout: float = 5) -> AckedPublisher:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def __enter__(self) -> AckedPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def msg_id(self, n: int) -> str:
        return f"{self.prefix}-{n:06d}"

    def _run(self) -> None:
        for n in itertools.count(1):
            msg_id = self.msg_id(n)
            while not self._stop.is_set():
                try:
                    ack = self.client.js.publish(self.subject, self.payload(n), msg_id=msg_id,
                                                 timeout=self.timeout)
                except ClientClosed:
                    return
                except Exception as error:  # no receipt: send the same message again
                    self.failures.append((time.monotonic() - self._started,
                                          f"{type(error).__name__}: {error}"[:200]))
                    self._stop.wait(self.retry_wait)
                    continue
                with self._cond:
                    self.acked[msg_id] = ack.seq
                    self.duplicates += ack.duplicate
                    self._ack_times.append(time.monotonic())
                    self._cond.notify_all()
                break
            if self._stop.wait(self.interval):
                return

    def wait_for_acks(self, count: int, timeout: float = 10) -> int:
        """Block until at least ``count`` messages are acknowledged in all; returns how many."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.acked) >= count, timeout):
                raise ClusterTimeout(
                    f"Only {len(self.acked)} of {count} publishes acknowledged within "
                    f"{timeout:g} s; last failures: {self.failures[-3:]}")
            return len(self.acked)

    def acked_after(self, moment: float) -> int:
        """How many receipts arrived after ``moment`` (a time.monotonic() value)."""
        with self._cond:
            return sum(1 for t in self._ack_times if t > moment)

    def longest_pause(self) -> float:
        """The longest time between two receipts: how long publishing stalled."""
        with self._cond:
            times = list(self._ack_times)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def __repr__(self) -> str:
        state = "running" if self._thread and self._thread.is_alive() else "stopped"
        return (f"<AckedPublisher {self.subject!r} {state}: {len(self.acked)} acknowledged, "
                f"{len(self.failures)} failed attempts, longest pause "
                f"{self.longest_pause():.2f} s>")


_publishers = itertools.count(1)


def missing_acked(client: Client, stream: str, acked: dict[str, int]) -> list[str]:
    """The msg ids of ``acked`` ({msg_id: seq}) that are not at their sequence in ``stream``.

    Empty means every acknowledged message is stored where its receipt said.
    """
    async def check() -> list[str]:
        ctx = client.nc.jetstream()

        async def one(msg_id: str, seq: int) -> str | None:
            try:
                msg = await ctx.get_msg(stream, seq)
            except Exception:  # deleted, or never stored
                return msg_id
            return None if (msg.headers or {}).get("Nats-Msg-Id") == msg_id else msg_id

        items, missing = list(acked.items()), []
        for chunk in _chunks(items, 64):
            found = await asyncio.gather(*(one(m, s) for m, s in chunk))
            missing.extend(m for m in found if m)
        return missing

    return client._bridge.run(check(), operation="missing_acked")


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
