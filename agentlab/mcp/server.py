"""The MCP agent hub as an MCP server: tools an LLM client calls to join the organisation.

    server = hub_server(AgentHub(lab.connect("mcp-hub"), org="acme").start())
    server.run("stdio")          # what `agentlab mcp` does (or streamable HTTP: --http PORT)

Each tool is a thin shell over :class:`~agentlab.mcp.hub.AgentHub`: its arguments are
JSON-schema'd by their annotations, its answer is structured content. Whatever a caller
sends, a tool either answers or returns an MCP tool error that names the field and the fix:
an agentlab error becomes a :class:`ToolError` with agentlab's message, and anything else
is caught by the SDK as an error result, so the hub keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from .. import __version__
from ..errors import AgentlabError
from ..protocol.asyncapi import asyncapi_document, render
from .hub import AgentHub

__all__ = ["hub_server", "HUB_TOOLS"]

T = TypeVar("T")

HUB_TOOLS = ("list_agents", "delegate_task", "get_task", "next_task", "complete_task",
             "fail_task", "post_to_meeting", "read_meeting", "call_tool", "list_dead_letters",
             "redrive_dead_letter", "stream_report", "consumer_report")

INSTRUCTIONS = """\
You are connected to an agentlab organisation on NATS JetStream: agents by role (ceo, cto,
cfo, ...) with durable task queues. delegate_task gives work to a role and waits for its
completion; get_task looks a task up. To work as a role yourself: next_task(role) takes the
next task from its queue and holds it for you; finish each one with complete_task(id,
result) or fail_task(id, error, retry). A task you neither complete nor fail goes back to
its queue after its ack wait."""

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

Role = Annotated[str, Field(description="A role of the organisation, e.g. 'cto' (one subject "
                                        "token: letters, digits, '-' and '_')",
                            min_length=1, max_length=64)]
TaskId = Annotated[str, Field(description="A task id, as delegate_task or next_task returned "
                                          "it", min_length=1, max_length=128)]
Result = dict[str, Any]


def _tool_errors(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """agentlab's errors say what is wrong and how to fix it: the caller reads them."""
    @functools.wraps(fn)
    async def call(*args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except AgentlabError as error:
            raise ToolError(str(error)) from None
    return call


def hub_server(hub: AgentHub) -> MCPServer:
    """An MCP server whose tools (HUB_TOOLS) and resources act through ``hub``."""
    server: MCPServer = MCPServer("agentlab", instructions=INSTRUCTIONS, version=__version__,
                                  title=f"agentlab hub of {hub.org}")

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def list_agents() -> Result:
        """The roles of the organisation: their running instances (NATS micro services),
        health, and queue depth (tasks waiting, in progress, redelivered)."""
        return await hub.alist_agents()

    @server.tool(annotations=WRITES)
    @_tool_errors
    async def delegate_task(
            role: Role, title: Annotated[str, Field(min_length=1, max_length=500)],
            ctx: Context,
            details: Annotated[dict[str, Any] | None,
                               Field(description="Anything the role needs (JSON object)")] = None,
            wait_s: Annotated[float, Field(ge=0, le=600, description="How long to wait for "
                                           "the completion; 0 returns the id at once")] = 30.0,
    ) -> Result:
        """Give a role a durable task. Returns its completion (result, instance, deliveries)
        if it comes within wait_s, else its id and state to poll with get_task. Progress
        notes from the working agent arrive as progress notifications."""
        return await _with_progress(ctx, lambda report: hub.adelegate(
            role, title, details, wait_s, report))

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def get_task(id: TaskId) -> Result:  # noqa: A002 (the field name callers see)
        """A task's state: waiting, in_progress, completed (with its result) or
        dead_lettered (with its reason)."""
        return await hub.aget_task(id)

    @server.tool(annotations=WRITES)
    @_tool_errors
    async def next_task(
            role: Role,
            wait_s: Annotated[float, Field(gt=0, le=300, description="How long to wait for a "
                                           "task to arrive")] = 10.0,
            hold_s: Annotated[float | None, Field(gt=0, le=3600, description="How long the "
                                                  "hub keeps the task yours")] = None,
    ) -> Result:
        """Take the next task from a role's durable queue and hold it while you work on it.
        Finish it with complete_task or fail_task; state 'empty' if none arrived."""
        held = await hub.anext_task(role, wait_s, hold_s)
        if held is None:
            return {"state": "empty", "role": role,
                    "hint": f"no task for '{role}' arrived within {wait_s:g} s"}
        return held

    @server.tool(annotations=WRITES)
    @_tool_errors
    async def complete_task(
            id: TaskId,  # noqa: A002
            result: Annotated[dict[str, Any] | str, Field(description="The task's result: a "
                                                        "JSON object, or text")],
    ) -> Result:
        """Record a held task's result in the ledger (announced on tasks.completed, once)
        and acknowledge it."""
        value = result if isinstance(result, dict) else {"answer": result}
        return await hub.acomplete_task(id, value)

    @server.tool(annotations=WRITES)
    @_tool_errors
    async def fail_task(
            id: TaskId,  # noqa: A002
            error: Annotated[str, Field(min_length=1, max_length=2000)],
            retry: Annotated[bool, Field(description="True: back to the queue after a delay; "
                                         "False: a dead letter now")] = True,
    ) -> Result:
        """Give a held task back: to be retried, or to the dead letters with your error."""
        return await hub.afail_task(id, error, retry)

    @server.tool(annotations=WRITES)
    @_tool_errors
    async def post_to_meeting(
            meeting_id: Annotated[str, Field(min_length=1, max_length=64)],
            text: Annotated[str, Field(min_length=1, max_length=4000)],
            sender: Annotated[str | None, Field(description="Who speaks (default: the hub's "
                                                "name)")] = None,
            decision: Annotated[bool, Field(description="Record it as a decision")] = False,
    ) -> Result:
        """Say something in a meeting (or record a decision); it joins the transcript."""
        return await hub.apost_to_meeting(meeting_id, text, sender, decision)

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def read_meeting(meeting_id: Annotated[str, Field(min_length=1, max_length=64)]
                           ) -> Result:
        """A meeting's transcript and decisions, oldest first."""
        return await hub.aread_meeting(meeting_id)

    @server.tool(annotations=WRITES)
    @_tool_errors
    async def call_tool(
            tool: Annotated[str, Field(min_length=1, max_length=64,
                                       description="The organisation's async tool")],
            arguments: Annotated[dict[str, Any] | None, Field(description="Its arguments")
                                 ] = None,
            wait_s: Annotated[float, Field(gt=0, le=300)] = 30.0,
    ) -> Result:
        """Call one of the organisation's asynchronous tools (tools.execute.<tool>) and wait
        for its result."""
        return await hub.acall_tool(tool, arguments or {}, wait_s)

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def list_dead_letters(limit: Annotated[int, Field(ge=1, le=1000)] = 50) -> Result:
        """The dead letters (tasks and tool calls that will not be processed), with why."""
        return {"dead_letters": await hub.alist_dead_letters(limit)}

    @server.tool(annotations=WRITES)
    @_tool_errors
    async def redrive_dead_letter(seq: Annotated[int, Field(ge=1, description="Its seq in "
                                                            "list_dead_letters")]) -> Result:
        """Put a dead letter back on its original subject (its queue) and remove it."""
        return await hub.aredrive_dead_letter(seq)

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def stream_report() -> Result:
        """Every stream: messages, bytes, consumers (as `nats stream report` shows)."""
        return {"report": await hub.astream_report()}

    @server.tool(annotations=READ_ONLY)
    @_tool_errors
    async def consumer_report(
            stream: Annotated[str, Field(min_length=1, max_length=64)] = "AGENT_TASKS"
    ) -> Result:
        """A stream's consumers: pending, ack pending, redelivered, oldest unprocessed."""
        return {"report": await hub.aconsumer_report(stream)}

    @server.resource("agentlab://protocol/asyncapi.json", mime_type="application/json",
                     description="The AsyncAPI 3.0 document of every subject and message")
    def protocol() -> str:
        return render(asyncapi_document())

    @server.resource("agentlab://streams/report", mime_type="text/plain",
                     description="The current stream report")
    async def streams() -> str:
        return await hub.astream_report()

    return server


async def _with_progress(ctx: Context,
                         work: Callable[[Callable[[str], None]], Awaitable[Result]]) -> Result:
    """Run ``work(report)`` (on the bridge loop) and send each note it reports as an MCP
    progress notification from this loop, the MCP session's."""
    loop = asyncio.get_running_loop()
    notes: asyncio.Queue[str] = asyncio.Queue()

    def report(text: str) -> None:  # called on the bridge loop's thread
        loop.call_soon_threadsafe(notes.put_nowait, text)

    job = asyncio.ensure_future(work(report))
    sent = 0
    while True:
        getter = asyncio.ensure_future(notes.get())
        await asyncio.wait({job, getter}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
        texts = [getter.result()] if getter.done() and not getter.cancelled() else []
        while job.done() and not notes.empty():
            texts.append(notes.get_nowait())
        for text in texts:
            sent += 1
            await ctx.report_progress(sent, None, text)
        if job.done():
            return job.result()
