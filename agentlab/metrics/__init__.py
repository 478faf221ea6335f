"""Prometheus metrics of queues, dead letters and agents: ``agentlab metrics``.

    from agentlab.metrics import MetricsExporter, collect_text
    exporter = MetricsExporter(lab, port=9477).start()   # scrape http://127.0.0.1:9477/metrics
    print(collect_text(lab))                             # or read it once, in a notebook
    $ agentlab metrics --port 9477 --url nats://127.0.0.1:4222

Modules:

- ``snapshot``: one read of the server (streams, durable consumers, agents), from leaders;
- ``collector``: the prometheus-client collector, its metric names and HELP (``METRICS``);
- ``exporter``: ``MetricsExporter`` (a Service: HTTP, the dead-letter feed, the handler
  duration histogram) and ``collect_text``;
- ``monitoring``: where the NATS server's own monitoring endpoint is (``agentlab status``).

The exporter needs the ``metrics`` extra (``pip install 'agentlab-nats[metrics]'``);
``monitoring`` does not, so its names are imported here at once and the exporter's only when
first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._extra import MetricsExtraMissing
from .monitoring import MONITOR_URL_ENV, MonitoringEndpoint, find_monitoring, monitoring_line

if TYPE_CHECKING:
    from .collector import METRICS, QueueCollector
    from .exporter import (
        DEFAULT_PORT,
        MetricsExporter,
        MetricsPortUnavailable,
        acollect_text,
        collect_text,
    )
    from .snapshot import Snapshot, aread_snapshot, read_snapshot

__all__ = ["DEFAULT_PORT", "METRICS", "MONITOR_URL_ENV", "MetricsExporter", "MetricsExtraMissing",
           "MetricsPortUnavailable", "MonitoringEndpoint", "QueueCollector", "Snapshot",
           "acollect_text", "aread_snapshot", "collect_text", "find_monitoring",
           "monitoring_line", "read_snapshot"]

_LAZY = {"METRICS": "collector", "QueueCollector": "collector", "DEFAULT_PORT": "exporter",
         "MetricsExporter": "exporter", "MetricsPortUnavailable": "exporter",
         "acollect_text": "exporter", "collect_text": "exporter", "Snapshot": "snapshot",
         "aread_snapshot": "snapshot", "read_snapshot": "snapshot"}


def __getattr__(name: str) -> Any:
    # prometheus-client is imported on first use: MetricsExtraMissing then says what to do.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
