"""Live widgets over an Observer (ipywidgets 8): they read snapshots, never drive NATS.

    from agentlab.widgets import Dashboard
    Dashboard(lab, org)            # flow, consumers, streams, topology and controls
    Dashboard(lab, org, spans=recorder)   # ... and a trace waterfall (agentlab.observe)

The views are built only from standard ipywidgets 8 controls (VBox, HBox, HTML, Button,
ToggleButton, Dropdown, Text, Textarea, Checkbox) filled with HTML and SVG rendered in
Python; there is no custom front-end module to install or load. So they render wherever
ipywidgets 8 renders: JupyterLab 4 and Notebook 7 (tests/test_browser.py runs the dashboard
notebook in both) and VS Code's notebook editor, whose Jupyter extension ships those
standard controls. Each view (and the dashboard) also leaves its HTML in the output it is
displayed in, for pages without a kernel; ``static_snapshots`` tells what they show at the
end of a run (agentlab.widgets.static).

One widget is a participant, not a view: ``BrowserAgent(org, role="cto")`` (anywidget, the
``dashboard`` extra) lets the learner's browser tab work a role's queue over NATS WebSocket,
with the NATS JavaScript client shipped in the package (agentlab.widgets.browser_agent).
"""

from typing import Any

from .cluster import ClusterView
from .dashboard import Dashboard
from .pump import UIPump, get_pump, view_records
from .scaling import ScalingView, scaling_html
from .static import static_snapshots
from .subscriptions import SubscriptionsView
from .views import ConsumersView, FlowView, StreamsView, TopologyView, TraceView


def __getattr__(name: str) -> Any:
    # anywidget is the dashboard extra: agentlab.widgets imports without it.
    if name in ("BrowserAgent", "NoWebSocket", "browser_permissions"):
        from . import browser_agent

        return getattr(browser_agent, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# BrowserAgent, NoWebSocket and browser_permissions load on first use (above) and are left
# out of __all__, so that `from agentlab.widgets import *` works without anywidget too.
__all__ = ["Dashboard", "FlowView", "ConsumersView", "StreamsView", "TopologyView",
           "TraceView", "UIPump", "get_pump", "static_snapshots", "ClusterView",
           "SubscriptionsView", "view_records", "ScalingView", "scaling_html"]
