"""A small real MCP server for tests/test_mcp_tools.py: stdio by default, ``--http PORT``
for streamable HTTP on 127.0.0.1 (path ``/mcp``).

    python tests/mcp_servers/arith.py             # stdio
    python tests/mcp_servers/arith.py --http 8765 # http://127.0.0.1:8765/mcp
"""

from __future__ import annotations

import argparse
import os
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("arith", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool(structured_output=False)  # text content only: the other result shape
def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper() + "!"


@server.tool()
def fail(reason: str = "no reason") -> str:
    """Always fails, with the reason given."""
    # ToolError, not any exception: MCPServer hides an unexpected exception's text.
    raise ToolError(f"failing on purpose: {reason}")


@server.tool()
def slow(seconds: float) -> str:
    """Sleeps, then answers: for timeouts."""
    time.sleep(seconds)
    return "done"


@server.tool()
def crash() -> str:
    """The server process exits mid-call, as a crashing server would."""
    os._exit(1)


@server.tool(name="bad.name")
def bad_name() -> str:
    """A name that is not one subject token: served as 'bad_name'."""
    return "unreachable"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP")
    options = parser.parse_args()
    if options.http:
        server.run("streamable-http", host="127.0.0.1", port=options.http)
    else:
        server.run("stdio")
