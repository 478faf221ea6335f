"""A live view of a cluster: nodes up and down, the meta leader, each stream's leader and
replicas with their lag, and the changes as they happen (a node killed, a leader elected, a
copy catching up).

    view = ClusterView(cluster)           # cluster: a LocalCluster; its own ClusterWatch
    ClusterView(watch)                    # ... or a ClusterWatch (agentlab.observe.cluster)
    view.close()                          # stops the watch it started

The view reads ClusterSnapshots (agentlab.observe.cluster); the watch polls the cluster.
"""

from __future__ import annotations

from typing import Any

from ..observe.cluster import ClusterSnapshot, ClusterWatch, cluster_html
from .views import _LiveView

__all__ = ["ClusterView"]


class ClusterView(_LiveView):
    """Nodes, meta leader, and per stream its leader and replicas (current, lag, offline)."""

    min_interval = 0.25

    def __init__(self, cluster: Any, *, interval: float = 0.5, **kwargs: Any):
        if isinstance(cluster, ClusterWatch):
            self.watch, self._own_watch = cluster, False
        else:
            self.watch, self._own_watch = ClusterWatch(cluster, interval=interval).start(), True
        super().__init__(**kwargs)

    def snapshot(self) -> ClusterSnapshot:
        return self.watch.snapshot()

    def wait_whole(self, timeout: float = 30.0) -> ClusterSnapshot:
        """Until the view shows the cluster whole again (see ClusterWatch.wait_whole)."""
        return self.watch.wait_whole(timeout)

    def _key(self) -> Any:
        return self.watch.version

    def render(self) -> str:
        return cluster_html(self.watch.snapshot())

    def close(self) -> None:
        if self._own_watch:
            self.watch.stop()
        super().close()
