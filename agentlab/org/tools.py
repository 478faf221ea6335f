"""Asynchronous tool execution (seed 002): publish a call, carry on, pick the result up later.

    pool = ToolWorkerPool(lab.connect("tools"), "search", search_fn, workers=3).start()
    tools = ToolClient(lab.connect("triage"), "conv-7")
    call_id = tools.call_async("search", query="nats")    # returns once the call is stored
    ...                                                  # work on other conversations
    print(tools.result(call_id, timeout=10).value)
    tools.call("search", timeout=10, query="jetstream")  # or: call and wait, raise ToolError

Calls go to ``{root}.tools.execute.{tool}``, stored in the TOOL_REQUESTS work queue (message
id = call id). All workers of a tool, in any process, share one durable pull consumer
(``tool-<tool>``): a work-queue stream allows one consumer per subject, and that consumer
is where the calls queue up while no worker runs. A call for a tool that has no pool at
all simply waits in the stream until one starts or the stream's max_age (5 min) drops it;
``call()`` then times out with a ToolTimeout saying so. Results go to
``{root}.tools.result.{conversation_id}`` (stream TOOL_RESULTS).
"""

from __future__ import annotations

from .toolclient import RESULT_STREAM, ToolClient
from .toolpayloads import (
    PayloadMissing,
    RetryableToolError,
    ToolCall,
    ToolError,
    ToolFailure,
    ToolResult,
    ToolTimeout,
)
from .toolworkers import (
    REQUEST_STREAM,
    PoolStats,
    ToolWorkerPool,
    check_tool_name,
    default_retry_delay,
)

__all__ = ["ToolWorkerPool", "ToolClient", "PoolStats", "ToolCall", "ToolResult",
           "ToolFailure", "ToolError", "ToolTimeout", "RetryableToolError", "PayloadMissing",
           "default_retry_delay", "check_tool_name", "REQUEST_STREAM", "RESULT_STREAM"]
