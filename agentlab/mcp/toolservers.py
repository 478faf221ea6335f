"""MCP servers' tools for agents: each tool of an MCP server served on ``tools.execute.<tool>``.

    weather = McpToolServer(lab.connect("mcp-tools"), ["python", "weather.py"],
                            prefix="wx-").start()
    weather.tools["wx-forecast"].input_schema       # the JSON schema to offer a model
    ToolClient(lab.connect("triage"), "conv-7").call("wx-forecast", city="Oslo", timeout=30)
    weather.stop()                                  # the pools, then the MCP session

``server`` is a command (a list of str, or ``StdioServerParameters``), run as a subprocess
that speaks MCP over stdio, or an ``http(s)://`` URL of a streamable-HTTP MCP server. One
MCP session serves every call; each MCP tool gets its own :class:`ToolWorkerPool`, so an
agent calls it like any other tool (``ToolClient.call`` / ``call_async``), and the calls
queue in TOOL_REQUESTS while the server is down or busy.

Names: the agentlab tool is ``prefix`` + the MCP name, with each character a tool name
cannot hold ('.', '/', ...) replaced by '_' (``files.read`` -> ``files_read``); two MCP
names that map to the same tool keep the first, and the other is skipped with a warning.
``tools=[...]`` takes the names as the MCP server lists them.

Results: the call's ``structured_content`` if the tool gave one (MCPServer wraps a plain
return value as ``{"result": value}``), else its text parts joined by newlines, else its
content parts as JSON dicts (images, resources). An MCP error result fails the call, not
retried, with the server's error text (:class:`McpToolError`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
from mcp import Client as McpClient
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, ContentBlock, TextContent, Tool

from ..core.client import Client
from ..core.lifecycle import Service
from ..core.subjects import Subjects
from ..errors import AgentlabError
from ..llm.role import ToolSpec
from ..org.toolpayloads import RetryableToolError
from ..org.toolworkers import ToolWorkerPool, check_tool_name

log = logging.getLogger("agentlab")

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_-]")
_MAX_PAGES = 100  # a server whose tools/list cursor never ends must not hang start()
_LOST = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
         ConnectionError)


class McpToolError(AgentlabError, RuntimeError):
    """The MCP server answered a call with an error; the message is the server's text."""


class McpServerError(AgentlabError, ConnectionError):
    """The MCP server could not be started or reached, or its session has ended."""


class McpToolServer(Service):
    """Serves the tools of one MCP server to agents, one ToolWorkerPool per tool.

    ``timeout`` bounds each call (the pools' timeout; a call that runs longer is retried
    as any tool's is), ``start_timeout`` the launch, handshake and tool listing. Other
    keywords go to every ToolWorkerPool (``max_deliver=1`` to never repeat a call). A
    server that exits or drops the connection later makes calls fail with a
    McpServerError, and ``is_running`` False: ``start()`` again reconnects.
    """

    def __init__(self, client: Client, server: Sequence[str] | StdioServerParameters | str,
                 *, tools: Sequence[str] | None = None, workers: int = 2, prefix: str = "",
                 timeout: float = 30.0, subjects: Subjects | None = None,
                 start_timeout: float = 30.0, **pool_options: Any):
        if prefix:
            check_tool_name(prefix)  # so a bad prefix fails here, not on every tool
        if isinstance(tools, str):
            raise TypeError(f"tools= takes a list of names, e.g. [{tools!r}]")
        self.client = client
        self.target, self.describe = _target(server)
        self.only = list(tools) if tools is not None else None
        self.workers, self.prefix, self.timeout = workers, prefix, timeout
        self.start_timeout = start_timeout
        self.subjects = subjects or Subjects()
        # Not ConnectionError (a pool's default), which McpServerError is: a dead session
        # stays dead until start() again, so a retry would only delay the error.
        pool_options.setdefault("retry_on", (RetryableToolError, TimeoutError))
        self.pool_options = pool_options
        self.tools: dict[str, Tool] = {}
        self.pools: dict[str, ToolWorkerPool] = {}
        self._bridge = client._bridge
        self._session: McpClient | None = None
        self._holder: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._lost: str | None = None

    @property
    def is_running(self) -> bool:
        holder = self._holder
        return (super().is_running and self._lost is None
                and holder is not None and not holder.done())

    # -- lifecycle --------------------------------------------------------------------
    async def _astart_service(self) -> None:
        """start(): open the MCP session, list its tools, start a pool for each."""
        self._closing, self._lost = asyncio.Event(), None
        ready: asyncio.Future[list[Tool]] = asyncio.get_running_loop().create_future()
        self._holder = asyncio.ensure_future(self._hold_session(ready))
        done, _ = await asyncio.wait({ready}, timeout=self.start_timeout)
        if not done:
            ready.cancel()
            raise McpServerError(
                f"MCP server {self.describe} did not answer the MCP handshake and tools/list "
                f"within {self.start_timeout:g} s. Check that it is an MCP server (a command "
                "must speak MCP on stdin/stdout; a URL must be its streamable-HTTP endpoint, "
                "usually ending in /mcp), or raise start_timeout=.")
        try:
            listing = ready.result()
        except Exception as error:
            raise McpServerError(_start_failure(self.describe, self.target, error)) from error
        self.tools = self._served(listing)
        if not self.tools:
            log.warning("MCP server %s: no tools to serve", self.describe)
        for name, tool in self.tools.items():
            pool = ToolWorkerPool(self.client, name, self._caller(tool.name),
                                  workers=self.workers, timeout=self.timeout,
                                  subjects=self.subjects, **self.pool_options)
            self.pools[name] = pool  # before its start: a failed start stops those made
            await pool.astart()
        log.info("MCP server %s: serving %s", self.describe, ", ".join(self.tools) or "nothing")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the pools (calls in hand finish), then close the MCP session."""
        self._stop_blocking(timeout)

    async def astop(self, timeout: float = 5.0) -> None:
        await self._bridge.arun(self._stop_service(timeout))

    async def _astop_service(self, timeout: float = 5.0) -> None:
        pools, self.pools, self.tools = list(self.pools.values()), {}, {}
        outcomes = await asyncio.gather(*(pool.astop(timeout) for pool in pools),
                                        return_exceptions=True)
        for pool, outcome in zip(pools, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("MCP server %s: pool %s did not stop cleanly (%s)",
                            self.describe, pool.name, outcome)
        self._closing.set()
        holder, self._holder = self._holder, None
        if holder is not None:
            # Still in the handshake (a failed start) it would not see _closing: cancel it.
            done = set() if self._session is None else (
                await asyncio.wait({holder}, timeout=timeout))[0]
            if not done:
                holder.cancel()
                await asyncio.wait({holder}, timeout=timeout)
        self._session = None

    async def _hold_session(self, ready: asyncio.Future[list[Tool]]) -> None:
        # The MCP client is anyio task groups and cancel scopes, which must be entered and
        # left in one task: this one, for the session's whole life. Calls come from others.
        try:
            async with McpClient(self.target) as session:
                listing = await _list_tools(session)
                self._session = session
                if not ready.done():
                    ready.set_result(listing)
                await self._closing.wait()
        except Exception as error:
            if not ready.done():
                ready.set_exception(error)
            elif not self._closing.is_set():
                self._lost = _reason(error)
                log.warning("MCP server %s: session ended (%s)", self.describe, self._lost)
        finally:
            self._session = None

    # -- calls --------------------------------------------------------------------------
    def _caller(self, mcp_name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def call_mcp_tool(**arguments: Any) -> Any:
            return await self._call(mcp_name, arguments)
        return call_mcp_tool

    async def _call(self, name: str, arguments: dict[str, Any]) -> Any:
        session = self._session
        if session is None or self._lost is not None:
            raise McpServerError(self._gone(self._lost or "the session is closed"))
        try:
            result = await session.call_tool(name, arguments)
        except MCPError as error:
            if error.code != CONNECTION_CLOSED:
                raise McpToolError(f"{error.message} (MCP error {error.code})") from error
            self._lost = _reason(error)
            raise McpServerError(self._gone(self._lost)) from error
        except _LOST as error:
            self._lost = _reason(error)
            raise McpServerError(self._gone(self._lost)) from error
        if result.is_error:
            raise McpToolError(_texts(result.content) or f"MCP tool '{name}' failed (no text)")
        if result.structured_content is not None:
            return result.structured_content
        return _content_value(result.content)

    def _gone(self, reason: str) -> str:
        return (f"The session with MCP server {self.describe} has ended ({reason}): the server "
                "exited or the connection dropped. start() the McpToolServer again to "
                "reconnect.")

    def _served(self, listing: list[Tool]) -> dict[str, Tool]:
        offered = {tool.name: tool for tool in listing}
        if self.only is not None:
            unknown = [name for name in self.only if name not in offered]
            if unknown:
                raise ValueError(
                    f"MCP server {self.describe} has no tool {', '.join(map(repr, unknown))}; "
                    f"it offers: {', '.join(offered) or 'no tools at all'}.")
            listing = [offered[name] for name in self.only]
        served: dict[str, Tool] = {}
        for tool in listing:
            name = self.prefix + _NOT_IN_NAME.sub("_", tool.name)
            if name in served:
                log.warning("MCP server %s: tools %r and %r are both agentlab tool %r; "
                            "skipping %r", self.describe, served[name].name, tool.name, name,
                            tool.name)
                continue
            try:
                check_tool_name(name)
            except ValueError as error:
                log.warning("MCP server %s: skipping tool %r (%s)", self.describe, tool.name,
                            error)
                continue
            if name != self.prefix + tool.name:
                log.info("MCP server %s: tool %r is served as %r", self.describe, tool.name,
                         name)
            served[name] = tool
        return served

    def tool_specs(self) -> list[ToolSpec]:
        """The served tools as a model-backed role offers them to its model (name, description,
        JSON Schema): ``model_role("...", tools=server.tool_specs())``."""
        return [ToolSpec(name, tool.description or "", dict(tool.input_schema or {}),
                         timeout=self.timeout) for name, tool in self.tools.items()]

    def __repr__(self) -> str:
        return (f"<McpToolServer {self.describe} {self.service_state} "
                f"tools={list(self.tools)}>")


def _target(server: Sequence[str] | StdioServerParameters | str
            ) -> tuple[StdioServerParameters | str, str]:
    """What the MCP client connects to, and how messages name it."""
    if isinstance(server, StdioServerParameters):
        return server, f"`{shlex.join([server.command, *server.args])}`"
    if isinstance(server, str):
        if not server.startswith(("http://", "https://")):
            raise ValueError(
                f"server {server!r}: a str must be an http(s):// URL (streamable HTTP); pass "
                f"a command as a list, e.g. {shlex.split(server)!r}")
        return server, server
    command = list(server)
    if not command or not all(isinstance(part, str) for part in command):
        raise ValueError(f"server {server!r}: a command is a non-empty list of str, "
                         "e.g. ['python', 'server.py']")
    return (StdioServerParameters(command=command[0], args=command[1:]),
            f"`{shlex.join(command)}`")


async def _list_tools(session: McpClient) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await session.list_tools(cursor=cursor)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _leaves(error: BaseException) -> list[BaseException]:
    # anyio's task groups wrap the real cause in (nested) exception groups.
    inner = getattr(error, "exceptions", None)
    if isinstance(inner, tuple) and inner:
        return [leaf for e in inner for leaf in _leaves(e)]
    return [error]


def _reason(error: BaseException) -> str:
    return "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in _leaves(error))


def _start_failure(describe: str, target: StdioServerParameters | str,
                   error: BaseException) -> str:
    leaves = _leaves(error)
    if isinstance(target, str):
        fix = ("Is it running, and is this its streamable-HTTP endpoint (usually ending in "
               "/mcp)?")
    elif any(isinstance(leaf, OSError) for leaf in leaves):
        fix = (f"Is {target.command!r} installed and on PATH? Pass its full path, or fix "
               "the command.")
    else:
        fix = ("It may have exited before it answered: run the command in a terminal to see "
               "its error (its stderr is printed above).")
    return f"Could not start MCP server {describe}: {_reason(error)}. {fix}"


def _texts(content: Sequence[ContentBlock]) -> str:
    return "\n".join(part.text for part in content if isinstance(part, TextContent))


def _content_value(content: Sequence[ContentBlock]) -> Any:
    if all(isinstance(part, TextContent) for part in content):
        return _texts(content)
    return [part.model_dump(mode="json", by_alias=True, exclude_none=True) for part in content]


__all__ = ["McpToolServer", "McpToolError", "McpServerError"]
