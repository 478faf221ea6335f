"""A cluster as it is now: which nodes run, who leads the meta group, and for each stream its
leader and its replicas, how current each copy is, and what changed on the way.

    watch = ClusterWatch(cluster).start()     # cluster: a LocalCluster (agentlab.cluster)
    watch.snapshot()                          # a ClusterSnapshot: HTML in Jupyter
    watch.stop()

It only reads. Every ``interval`` seconds it asks, from a connection of its own, the
JetStream API for every stream's info (``$JS.API.STREAM.INFO``: the leader, and for each
follower whether it is current, offline, how many operations it lags and when it was last
heard from: what ``nats stream report`` shows), and each running node's ``/jsz`` for the
meta leader (the JetStream API does not name it). Nodes up or down come from the cluster's
own processes. Each change (a node down, a new leader, a copy behind or caught up) is kept
in a short history, newest last.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from ..core.bridge import get_bridge
from ..core.client import Client
from ..core.lifecycle import Service
from ..errors import AgentlabError
from ..telemetry import untraced

if TYPE_CHECKING:
    from ..cluster.local import LocalCluster

__all__ = ["ClusterSnapshot", "ClusterWatch", "NodeState", "ReplicaState", "StreamPlacement",
           "cluster_html"]

HISTORY = 40


@dataclass(frozen=True)
class NodeState:
    name: str
    running: bool
    url: str = ""


@dataclass(frozen=True)
class ReplicaState:
    """One copy of a stream: on which node, whether it leads, how far behind it is."""

    node: str
    leader: bool = False
    current: bool = True
    offline: bool = False
    lag: int = 0                # operations behind the leader
    active: float = 0.0         # seconds since the leader last heard from it

    @property
    def healthy(self) -> bool:
        return self.leader or (self.current and not self.offline)


@dataclass(frozen=True)
class StreamPlacement:
    name: str
    leader: str
    replicas: tuple[ReplicaState, ...]
    messages: int = 0
    last_seq: int = 0


@dataclass(frozen=True)
class ClusterSnapshot:
    nodes: tuple[NodeState, ...]
    meta_leader: str | None
    streams: tuple[StreamPlacement, ...]
    history: tuple[tuple[float, str], ...] = ()
    taken_at: float = 0.0
    polls: int = 0
    error: str = ""

    def node(self, name: str) -> NodeState:
        return next(node for node in self.nodes if node.name == name)

    def problems(self) -> list[str]:
        """What keeps the cluster from being whole: nodes down, no meta leader, a stream
        without a leader or with a copy behind, the last poll failed. Empty: whole."""
        found = [f"{node.name} is down" for node in self.nodes if not node.running]
        if not self.polls:
            found.append("not polled yet")
        elif self.meta_leader is None:
            found.append("no meta leader")
        if self.error:
            found.append(f"the last stream list failed ({self.error})")
        for stream in self.streams:
            if not stream.leader:
                found.append(f"{stream.name} has no leader")
            found += [f"{stream.name} on {r.node} is behind" for r in stream.replicas
                      if not r.healthy]
        return found

    @property
    def whole(self) -> bool:
        return not self.problems()

    def stream(self, name: str) -> StreamPlacement:
        return next(stream for stream in self.streams if stream.name == name)

    def _repr_html_(self) -> str:
        return cluster_html(self)


def _placement(info: Any) -> StreamPlacement:
    cluster = info.cluster
    leader = (cluster.leader if cluster else "") or ""
    replicas = [ReplicaState(leader, leader=True)] if leader else []
    for peer in (cluster.replicas if cluster and cluster.replicas else ()):
        replicas.append(ReplicaState(str(peer.name), current=bool(peer.current),
                                     offline=bool(peer.offline), lag=int(peer.lag or 0),
                                     active=(peer.active or 0) / 1e9))
    return StreamPlacement(info.config.name, leader, tuple(sorted(replicas, key=lambda r: r.node)),
                           messages=int(info.state.messages), last_seq=int(info.state.last_seq))


class ClusterWatch(Service):
    """Polls a LocalCluster every ``interval`` seconds into ClusterSnapshots."""

    def __init__(self, cluster: LocalCluster, *, interval: float = 0.5,
                 name: str = "agentlab-cluster-watch", api_timeout: float = 2.0):
        self.cluster = cluster
        self.interval = interval
        self.name = name
        self.api_timeout = api_timeout
        self.client: Client | None = None
        self._bridge = get_bridge()
        self._task: asyncio.Future | None = None
        self._snapshot = ClusterSnapshot(nodes=(), meta_leader=None, streams=())
        self._history: deque[tuple[float, str]] = deque(maxlen=HISTORY)

    async def _astart_service(self) -> None:
        self.client = await Client.aopen(self.cluster.url, name=self.name)
        await self._poll_once()
        self._task = asyncio.ensure_future(self._poll_forever())

    async def _astop_service(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    @property
    def version(self) -> int:
        """Changes at every poll."""
        return self._snapshot.polls

    def snapshot(self) -> ClusterSnapshot:
        return self._snapshot

    def wait_whole(self, timeout: float = 30.0) -> ClusterSnapshot:
        """Wait until a poll finds the cluster whole again (every node up, every stream led
        and its copies current); TimeoutError naming what is still wrong."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self._snapshot
            problems = snap.problems()
            if not problems:
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"The cluster is not whole after {timeout:g} s: "
                                   f"{'; '.join(problems)}. cluster.start_node(name) brings "
                                   "a stopped node back; copies catch up on their own.")
            time.sleep(min(0.1, self.interval))

    def _repr_html_(self) -> str:
        return cluster_html(self._snapshot)

    async def _poll_forever(self) -> None:
        while self.client is not None:
            await asyncio.sleep(self.interval)
            await self._poll_once()

    async def _poll_once(self) -> None:
        with untraced():  # a watcher's reads are nobody's work
            nodes, meta = await asyncio.to_thread(self._nodes)
            streams: tuple[StreamPlacement, ...] | None = None
            error = ""
            client = self.client
            if client is not None and any(node.running for node in nodes):
                try:
                    infos = await client.js.astreams(timeout=self.api_timeout)
                    streams = tuple(sorted((_placement(i) for i in infos),
                                           key=lambda s: s.name))
                except (AgentlabError, asyncio.TimeoutError) as failure:
                    # a cluster electing leaders answers slowly: keep what we knew
                    error = f"{type(failure).__name__}: {failure}"
        before = self._snapshot
        if streams is None:  # no answer: what was known (marked by the error), or nothing
            streams = before.streams if error else ()
        now = time.time()
        self._note_changes(before, nodes, meta, streams, now)
        self._snapshot = ClusterSnapshot(nodes=nodes, meta_leader=meta, streams=streams,
                                         history=tuple(self._history), taken_at=now,
                                         polls=before.polls + 1, error=error)

    def _nodes(self) -> tuple[tuple[NodeState, ...], str | None]:
        nodes = tuple(NodeState(name, self.cluster.node(name).is_running,
                                self.cluster.node(name).url if self.cluster.node(name).port
                                else "")
                      for name in self.cluster.names)
        meta = self.cluster.meta_leader() if any(n.running for n in nodes) else None
        return nodes, meta

    def _note_changes(self, before: ClusterSnapshot, nodes: tuple[NodeState, ...],
                      meta: str | None, streams: tuple[StreamPlacement, ...],
                      now: float) -> None:
        if not before.polls:
            return
        was = {node.name: node.running for node in before.nodes}
        for node in nodes:
            if was.get(node.name) is not None and was[node.name] != node.running:
                self._history.append((now, f"{node.name} {'up' if node.running else 'down'}"))
        if meta != before.meta_leader:
            self._history.append((now, f"meta leader: {meta or 'none (electing)'}"))
        old = {s.name: s for s in before.streams}
        for stream in streams:
            prior = old.get(stream.name)
            if prior is None:
                continue
            if stream.leader != prior.leader:
                self._history.append((now, f"{stream.name} leader: "
                                           f"{stream.leader or 'none (electing)'}"))
            behind = {r.node for r in stream.replicas if not r.healthy}
            was_behind = {r.node for r in prior.replicas if not r.healthy}
            for peer in sorted(behind - was_behind):
                self._history.append((now, f"{stream.name} on {peer}: behind"))
            for peer in sorted(was_behind - behind):
                if any(r.node == peer for r in stream.replicas):
                    self._history.append((now, f"{stream.name} on {peer}: caught up"))

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ClusterWatch {state} polls={self._snapshot.polls}>"


def cluster_html(snap: ClusterSnapshot) -> str:
    """Nodes, the meta leader, each stream's leader and replicas, and the recent changes."""
    from .html import _view

    names = [node.name for node in snap.nodes]
    cards = []
    for node in snap.nodes:
        colour, state = ("#16a34a", "up") if node.running else ("#dc2626", "down")
        crown = " · <b>meta leader</b>" if node.name == snap.meta_leader else ""
        cards.append(f"<span style='display:inline-block;margin:0 8px 6px 0;padding:4px 10px;"
                     f"border-radius:6px;border:2px solid {colour};background:"
                     f"{'#f0fdf4' if node.running else '#fef2f2'}'><b>{escape(node.name)}"
                     f"</b> <span style='color:{colour}'>{state}</span>{crown}</span>")
    meta = snap.meta_leader or "<span class='al-warn'>none: electing, or no majority</span>"
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for stream in snap.streams:
        by_node = {r.node: r for r in stream.replicas}
        cells = []
        for name in names:
            replica = by_node.get(name)
            if replica is None:
                cells.append("<td style='color:#cbd5e1'>—</td>")
            elif replica.leader:
                cells.append("<td style='background:#dcfce7'><b>★ leader</b></td>")
            elif replica.offline or not snap.node(name).running:
                cells.append("<td style='background:#fee2e2' class='al-warn'>offline</td>")
            elif not replica.current:
                cells.append(f"<td style='background:#fef9c3'>behind · lag {replica.lag:,}"
                             f" · seen {replica.active:.1f} s ago</td>")
            else:
                cells.append(f"<td>current · seen {replica.active:.1f} s ago</td>")
        leader = escape(stream.leader) if stream.leader else \
            "<span class='al-warn'>none (electing)</span>"
        rows.append(f"<tr><td><b>{escape(stream.name)}</b></td><td>{leader}</td>"
                    f"<td class='n'>{stream.messages:,}</td>{''.join(cells)}</tr>")
    # Scrolls sideways in a narrow column (a course page) instead of overflowing it.
    table = (f"<div style='overflow-x:auto'><table class='al-cluster'><thead><tr>"
             f"<th>stream</th><th>leader</th>"
             f"<th class='n'>messages</th>{head}</tr></thead><tbody>"
             f"{''.join(rows) or f'<tr><td colspan={3 + len(names)}>no streams</td></tr>'}"
             "</tbody></table></div>")
    changes = "".join(
        f"<li>{time.strftime('%H:%M:%S', time.localtime(at))} {escape(text)}</li>"
        for at, text in reversed(snap.history[-12:]))
    history = (f"<h3 style='margin-top:8px'>Changes (newest first)</h3><ul style='margin:2px 0'>"
               f"{changes}</ul>") if changes else ""
    polled = (f"polled {time.strftime('%H:%M:%S', time.localtime(snap.taken_at))} "
              f"(poll #{snap.polls})" if snap.taken_at else "not polled yet")
    if snap.error:
        polled += f" · <span class='al-warn'>last stream list failed: {escape(snap.error)}</span>"
    return _view("Cluster", "The nodes, the meta leader that places streams, and for each "
                 "stream its leader and its copies: current, behind (how many operations) or "
                 "offline.", "".join(cards) + f"<div class='al-meta'>meta leader: {meta}</div>"
                 + table + history, polled)
