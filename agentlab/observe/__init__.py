"""Observe a lab: one connection taps the traffic, snapshots feed every view.

    from agentlab.observe import Observer
    obs = Observer(lab).start()
    obs.snapshot()                          # HTML in Jupyter, rich in a terminal
    print(obs.flow(limit=30).to_mermaid())  # the recorded flow as a Mermaid diagram
    obs.flow(trace=trace_id)                # one trace's messages only

    recorder = record_spans()               # OpenTelemetry spans kept in memory (otel extra)
    recorder.trace()                        # the latest trace as a waterfall

* ``observer``, ``recorder``, ``events``, ``snapshots``: the tap, its buffer, what it saw
* ``subscriptions``: a program's subscriptions beside the messages seen (who got which)
* ``cluster``: a cluster's nodes, meta leader and stream replicas, polled (ClusterWatch)
* ``spans``: the span recorder (an SDK span processor) and one trace's waterfall snapshot
* ``html``, ``svg``, ``waterfall``, ``mermaid``, ``terminal``: the renderers (``columns``,
  ``palette``: the tables' columns, the colours that mean something)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .cluster import ClusterSnapshot, ClusterWatch
from .events import FlowEvent
from .observer import Observer
from .recorder import FlowRecorder
from .snapshots import FlowSnapshot, LabSnapshot, StateSnapshot, TopologySnapshot
from .spans import (
    OtelExtraMissing,
    SpanRecord,
    SpanRecorder,
    TraceSnapshot,
    TraceSummary,
    WaterfallRow,
    record_spans,
)
from .subscriptions import SubscriptionsSnapshot, subscriptions_snapshot

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["Observer", "FlowRecorder", "FlowEvent", "FlowSnapshot", "TopologySnapshot",
           "StateSnapshot", "LabSnapshot", "observe", "OtelExtraMissing", "SpanRecord",
           "SpanRecorder", "TraceSnapshot", "TraceSummary", "WaterfallRow", "record_spans",
           "ClusterWatch", "ClusterSnapshot", "SubscriptionsSnapshot", "subscriptions_snapshot"]


def observe(client: Client, **options: Any) -> Observer:
    """``Observer(client, **options).start()``."""
    return Observer(client, **options).start()
