"""Live widgets over an Observer (ipywidgets 8): they read snapshots, never drive NATS.

    from agentlab.widgets import Dashboard
    Dashboard(lab, org)            # flow, consumers, streams, topology and controls
    Dashboard(lab, org, spans=recorder)   # ... and a trace waterfall (agentlab.observe)

The views are built only from standard ipywidgets 8 controls (VBox, HBox, HTML, Button,
ToggleButton, Dropdown, Text, Textarea, Checkbox) filled with HTML and SVG rendered in
Python; there is no custom front-end module to install or load. So they render wherever
ipywidgets 8 renders: JupyterLab 4 and Notebook 7 (tests/test_browser.py runs the dashboard
notebook in both) and VS Code's notebook editor, whose Jupyter extension ships those
standard controls.
"""

from .dashboard import Dashboard
from .pump import UIPump, get_pump
from .views import ConsumersView, FlowView, StreamsView, TopologyView, TraceView

__all__ = ["Dashboard", "FlowView", "ConsumersView", "StreamsView", "TopologyView",
           "TraceView", "UIPump", "get_pump"]
