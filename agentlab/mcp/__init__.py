"""The Model Context Protocol on the bus: an MCP agent hub, and MCP servers' tools for agents.

    hub = AgentHub(lab.connect("mcp-hub"), org="acme").start()
    hub_server(hub).run("stdio")                 # what `agentlab mcp` runs
    McpToolServer(lab.connect("tools"), ["python", "my_mcp_server.py"]).start()

``hub`` is the hub's work in plain agentlab (a task desk, the ledger, the dead letters, the
reports); ``server`` puts it behind MCP tools and resources; ``toolservers`` serves an MCP
server's tools on ``tools.execute.*``. It needs the ``mcp`` extra.
"""

try:
    import mcp as _mcp_sdk  # noqa: F401  (the optional extra; say how to get it)
except ImportError as error:  # pragma: no cover - the test environment installs it
    raise ImportError("agentlab.mcp needs the official MCP Python SDK: "
                      "pip install 'agentlab-nats[mcp]'") from error

from .hub import AgentHub, HubInputError
from .server import HUB_TOOLS, hub_server
from .toolservers import McpServerError, McpToolError, McpToolServer

__all__: list[str] = ["AgentHub", "HubInputError", "hub_server", "HUB_TOOLS", "McpToolServer",
                      "McpToolError", "McpServerError"]
