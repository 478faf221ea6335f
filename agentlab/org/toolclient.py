"""The caller's side of asynchronous tool calls: publish a call, collect its result later.

    tools = ToolClient(lab.connect("triage"), "conv-7")
    call_id = tools.call_async("search", query="nats")    # returns once the call is stored
    print(tools.result(call_id, timeout=10).value)

Results arrive on ``{root}.tools.result.{conversation_id}`` (stream TOOL_RESULTS); see
:mod:`agentlab.org.tools` for the whole round trip.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..core.client import Client
from ..core.jetstream import PullConsumer
from ..core.lifecycle import Service
from ..core.received import Message, nak_unless_settled
from ..core.specs import ConsumerSpec
from ..core.subjects import Subjects, validate_token
from ..telemetry import tracing
from ..wire.messages import new_id
from .streams import TOOL_RESULT_STREAM as RESULT_STREAM
from .toolpayloads import (
    PAYLOAD_THRESHOLD,
    PayloadMissing,
    PayloadStore,
    ToolCall,
    ToolError,
    ToolFailure,
    ToolResult,
    ToolTimeout,
)
from .toolworkers import adiagnose_tool_workers, check_tool_name

log = logging.getLogger("agentlab")



class ToolClient(Service):
    """Calls tools for one conversation and collects their results as they come back.

    Result delivery: a JetStream pull consumer on TOOL_RESULTS, not a core subscription.
    TOOL_RESULTS has interest retention: the server keeps a result only while some
    consumer whose filter matches it has not yet acknowledged it, and drops it at once if
    no such consumer exists. This client creates its own consumer (filtered on
    ``tools.result.<conversation_id>``, deliver "new") before its first call is published,
    so every result of its calls is held for it: across a reconnect, or while the
    caller is busy, until it acks (the seed's "eligible for cleanup") or the stream's
    max_age (1 minute) passes. A core subscription
    would drop results that land while the connection is down, and would leave the
    stream with no interest, so it would store nothing. The cost is one consumer per
    ToolClient (one API round trip at start); it is deleted by ``close()``, or by the
    server after 60 s without pulls. Several ToolClients on one conversation each see
    all of its results.

    Every result is handed to the ``on_result`` handlers, then kept (the latest ``keep``)
    until claimed, once, by ``result(call_id)`` or by ``results()``. Duplicates (a call
    redelivered after a worker crash) are dropped by call id.
    """

    def __init__(self, client: Client, conversation_id: str, *,
                 subjects: Subjects | None = None, payload_threshold: int = PAYLOAD_THRESHOLD,
                 keep: int = 1000):
        self.client = client
        self.conversation_id = validate_token(conversation_id, "conversation_id")
        self.subjects = subjects or Subjects()
        self.result_subject = self.subjects.tool_result(conversation_id)
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", conversation_id)[:48]
        self.consumer_name = f"results-{safe}-{new_id()[:8]}"
        self.payloads = PayloadStore(client, threshold=payload_threshold)
        self.keep = keep
        self.received = 0
        self.duplicates = 0
        self._bridge = client._bridge
        self._declared = False  # the result consumer exists: close() deletes it
        self._closed = False
        self._task: asyncio.Task | None = None
        self._consumer: PullConsumer | None = None
        self._handlers: list[Callable[[ToolResult], Any]] = []
        self._arrived: OrderedDict[str, ToolResult] = OrderedDict()  # unclaimed
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._next_waiters: list[asyncio.Future] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._calls: dict[str, str] = {}  # call id -> tool, for calls still without a result

    # -- lifecycle --------------------------------------------------------------------
    async def _astart_service(self) -> None:
        """start(): create the result consumer (the first call does it for you)."""
        if self._closed:
            raise RuntimeError(f"ToolClient for '{self.conversation_id}' is closed")
        spec = ConsumerSpec(self.consumer_name, filter_subject=self.result_subject,
                            deliver="new", ack_wait=30.0, inactive_threshold=60.0,
                            description=f"Tool results of conversation "
                                        f"'{self.conversation_id}'")
        await self.client.js.adeclare_consumer(RESULT_STREAM, spec)
        self._declared = True
        self._consumer = await self.client.js.apull(RESULT_STREAM, self.consumer_name)
        self._task = asyncio.ensure_future(self._receive(self._consumer))

    def close(self) -> None:
        """Stop receiving and delete the result consumer (results then stop being kept)."""
        self._closed = True  # for good, even if never started: no call may start it after
        self._bridge.run(self._stop_service(), operation="close")

    async def aclose(self) -> None:
        self._closed = True
        await self._bridge.arun(self._stop_service())

    stop, astop = close, aclose  # a ToolClient is not started again: stopping is closing

    async def _astop_service(self) -> None:
        if self._task is not None:
            self._task.cancel()  # the consumer is deleted next, so a pending pull is moot
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        if self._declared and not self.client.is_closed:
            try:
                await self.client.js.adelete_consumer(RESULT_STREAM, self.consumer_name)
            except Exception as error:
                log.info("tool client %s: consumer not deleted (%s)", self.consumer_name, error)
        self._declared = False
        for future in [f for fs in self._waiters.values() for f in fs] + self._next_waiters:
            if not future.done():
                future.cancel()

    # -- calling ---------------------------------------------------------------------
    def call_async(self, tool: str, /, **arguments: Any) -> str:
        """Publish a call into TOOL_REQUESTS and return its call id; does not wait for it."""
        return self._bridge.run(self._call(tool, arguments), operation="call_async")

    async def acall_async(self, tool: str, /, **arguments: Any) -> str:
        return await self._bridge.arun(self._call(tool, arguments))

    def call(self, tool: str, /, *, timeout: float = 30.0, **arguments: Any) -> Any:
        """Call and wait: the tool's return value, ToolError if it failed, ToolTimeout.

        (A tool argument named ``timeout`` goes through call_async + result.)
        """
        return self._bridge.run(self._call_and_wait(tool, arguments, timeout), operation="call")

    async def acall(self, tool: str, /, *, timeout: float = 30.0, **arguments: Any) -> Any:
        return await self._bridge.arun(self._call_and_wait(tool, arguments, timeout))

    async def _call_and_wait(self, tool: str, arguments: dict[str, Any], timeout: float) -> Any:
        result = await self._wait_for(await self._call(tool, arguments), timeout)
        if not result.ok:
            raise ToolError(result)
        return result.value

    async def _call(self, tool: str, arguments: dict[str, Any]) -> str:
        subject = self.subjects.tool_execute(check_tool_name(tool))
        await self._start_service()
        call_id = new_id()
        sent = await self.payloads.aoffload(arguments, f"{call_id}/arguments",
                                           f"the arguments of tool '{tool}'")
        call = ToolCall(id=call_id, tool=tool, conversation_id=self.conversation_id,
                        arguments=sent, requested_by=self.client.name)
        self._calls[call_id] = tool
        tracer = tracing.tracer()
        try:
            if tracer is None:
                await self.client.js.apublish(subject, call, msg_id=call_id)
            else:  # the call's span: the worker's execution and the result are its children
                with tracing.internal(tracer, f"tool call {tool}", {
                        "agentlab.tool": tool, "agentlab.tool.call_id": call_id,
                        "messaging.message.conversation_id": self.conversation_id}):
                    await self.client.js.apublish(subject, call, msg_id=call_id)
        except BaseException:
            self._calls.pop(call_id, None)
            raise
        return call_id

    @property
    def in_flight(self) -> list[str]:
        """Ids of calls made here whose result has not arrived yet."""
        return list(self._calls)

    # -- results ---------------------------------------------------------------------
    def result(self, call_id: str, timeout: float = 30.0) -> ToolResult:
        """The result of ``call_id`` (an error result too), or ToolTimeout."""
        return self._bridge.run(self._wait_for(call_id, timeout), operation="result")

    async def aresult(self, call_id: str, timeout: float = 30.0) -> ToolResult:
        return await self._bridge.arun(self._wait_for(call_id, timeout))

    def results(self, count: int | None = None, timeout: float | None = None
                ) -> Iterator[ToolResult]:
        """Unclaimed results as they arrive, until ``count`` of them or ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        got = 0
        while count is None or got < count:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            item = self._bridge.run(self._next(left), operation="results")
            if item is None:
                return
            got += 1
            yield item

    async def aresults(self, count: int | None = None, timeout: float | None = None
                       ) -> AsyncIterator[ToolResult]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        got = 0
        while count is None or got < count:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            item = await self._bridge.arun(self._next(left))
            if item is None:
                return
            got += 1
            yield item

    def on_result(self, handler: Callable[[ToolResult], Any]) -> Callable[[ToolResult], Any]:
        """Call ``handler(result)`` (sync in a thread, async on the loop) for every result."""
        self._handlers.append(handler)
        if not self._bridge.in_loop_thread():
            self.start()
        return handler

    async def _wait_for(self, call_id: str, timeout: float) -> ToolResult:
        await self._start_service()
        if call_id in self._arrived:
            return self._arrived.pop(call_id)
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(call_id, []).append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            tool = self._calls.get(call_id, "?")
            hint, exists = await self._why_no_result(tool)
            raise ToolTimeout(tool, call_id, self.conversation_id, timeout, hint,
                              exists) from None
        finally:
            waiting = self._waiters.get(call_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(call_id, None)

    async def _next(self, timeout: float | None) -> ToolResult | None:
        await self._start_service()
        if self._arrived:
            return self._arrived.popitem(last=False)[1]
        future = asyncio.get_running_loop().create_future()
        self._next_waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            if future in self._next_waiters:
                self._next_waiters.remove(future)

    async def _why_no_result(self, tool: str) -> tuple[str, bool | None]:
        if tool == "?":
            return "It is not a call made by this ToolClient.", None
        return await adiagnose_tool_workers(self.client, tool, self.subjects)

    async def _receive(self, consumer: PullConsumer) -> None:
        while not self._closed:
            try:
                batch = await consumer.afetch(1, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self._closed or self.client.is_closed:
                    return
                log.warning("tool client %s: fetch failed (%s); retrying",
                            self.consumer_name, error)
                await asyncio.sleep(0.25)
                continue
            for msg in batch:
                try:
                    tracer = tracing.tracer()
                    if tracer is None:
                        await self._deliver(msg)
                        continue
                    with tracing.processing(tracer, msg.subject, msg.headers,
                                            consumer=self.consumer_name, stream=RESULT_STREAM,
                                            deliveries=_deliveries(msg)):
                        await self._deliver(msg)
                except Exception:
                    log.exception("tool client %s: result on '%s' not handled",
                                  self.consumer_name, msg.subject)
                    nak_unless_settled(msg, 1.0)

    async def _deliver(self, msg: Message) -> None:
        try:
            result = ToolResult.model_validate_json(msg.data)
        except Exception as error:
            log.warning("tool client %s: dropping a message that is not a ToolResult: %s",
                        self.consumer_name, error)
            msg.term("not a ToolResult")
            return
        if result.call_id in self._seen:
            self.duplicates += 1
            msg.ack()
            return
        self._seen[result.call_id] = None
        if len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        if result.ok:
            try:
                result.value = await self.payloads.aresolve(result.value)
            except PayloadMissing as error:
                result = result.model_copy(update={"status": "error", "value": None,
                                                   "error": ToolFailure(type="PayloadMissing",
                                                                        message=str(error))})
        self.received += 1
        self._calls.pop(result.call_id, None)
        msg.ack()
        for handler in list(self._handlers):
            try:
                await self._bridge.arun_handler(handler, result)
            except Exception:
                log.exception("on_result handler %r failed on call %s", handler, result.call_id)
        waiting = [f for f in self._waiters.get(result.call_id, []) if not f.done()]
        nexts = [f for f in self._next_waiters if not f.done()]
        if waiting:
            waiting[0].set_result(result)
        elif nexts:
            nexts[0].set_result(result)
        else:
            self._arrived[result.call_id] = result
            if len(self._arrived) > self.keep:
                self._arrived.popitem(last=False)

    def __repr__(self) -> str:
        return (f"<ToolClient {self.conversation_id} in_flight={len(self._calls)} "
                f"received={self.received} unclaimed={len(self._arrived)}>")


def _deliveries(msg: Message) -> int | None:
    try:
        return msg.info.num_delivered
    except ValueError:
        return None


__all__ = ["ToolClient", "RESULT_STREAM"]
