"""Observe a lab: one connection taps the traffic, snapshots feed every view.

    from agentlab.observe import Observer
    obs = Observer(lab).start()
    obs.snapshot()                          # HTML in Jupyter, rich in a terminal
    print(obs.flow(limit=30).to_mermaid())  # the recorded flow as a Mermaid diagram
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .events import FlowEvent
from .observer import Observer
from .recorder import FlowRecorder
from .snapshots import FlowSnapshot, LabSnapshot, StateSnapshot, TopologySnapshot

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["Observer", "FlowRecorder", "FlowEvent", "FlowSnapshot", "TopologySnapshot",
           "StateSnapshot", "LabSnapshot", "observe"]


def observe(client: Client, **options: Any) -> Observer:
    """``Observer(client, **options).start()``."""
    return Observer(client, **options).start()
