"""Observe a lab: one connection taps the traffic, snapshots feed every view.

    from agentlab.observe import Observer
    obs = Observer(lab).start()
    obs.snapshot()                          # HTML in Jupyter, rich in a terminal
    print(obs.flow(limit=30).to_mermaid())  # the recorded flow as a Mermaid diagram
"""

from .events import FlowEvent
from .observer import Observer
from .recorder import FlowRecorder
from .snapshots import FlowSnapshot, LabSnapshot, StateSnapshot, TopologySnapshot

__all__ = ["Observer", "FlowRecorder", "FlowEvent", "FlowSnapshot", "TopologySnapshot",
           "StateSnapshot", "LabSnapshot", "observe"]


def observe(client, **options) -> Observer:  # type: ignore[no-untyped-def]
    """``Observer(client, **options).start()``."""
    return Observer(client, **options).start()
