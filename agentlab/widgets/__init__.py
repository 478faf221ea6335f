"""Live widgets over an Observer (ipywidgets 8): they read snapshots, never drive NATS.

    from agentlab.widgets import Dashboard
    Dashboard(lab, org)            # flow, consumers, streams, topology and controls
"""

from .dashboard import Dashboard
from .pump import UIPump, get_pump
from .views import ConsumersView, FlowView, StreamsView, TopologyView

__all__ = ["Dashboard", "FlowView", "ConsumersView", "StreamsView", "TopologyView",
           "UIPump", "get_pump"]
