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

import asyncio
import functools
import inspect
import itertools
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from ..client import Client
from ..jetstream import PullConsumer
from ..received import Message
from ..specs import ConsumerSpec
from ..subjects import Subjects, subject_matches, validate_token
from .deadletters import dead_letter_now, remember_failure
from .toolpayloads import (
    PAYLOAD_THRESHOLD,
    PayloadMissing,
    PayloadStore,
    RetryableToolError,
    ToolCall,
    ToolError,
    ToolFailure,
    ToolResult,
    ToolTimeout,
)

log = logging.getLogger("agentlab")

REQUEST_STREAM = "TOOL_REQUESTS"
RESULT_STREAM = "TOOL_RESULTS"
_NAME_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_pools = itertools.count(1)


def default_retry_delay(attempt: int) -> float:
    """Wait before attempt ``attempt + 1``: 0.5 s, 1 s, 2 s ... capped at 10 s."""
    return min(10.0, 0.5 * 2 ** (attempt - 1))


def check_tool_name(tool: str) -> str:
    """A tool name is one subject token that is also a valid consumer name."""
    validate_token(tool, "tool")
    if tool == "*" or not _NAME_OK.match(tool):
        raise ValueError(f"tool name {tool!r}: use letters, digits, '_' and '-' only "
                         "(it names a subject token and the consumer 'tool-<name>').")
    return tool


def _nak_unless_settled(msg: Message, delay: float) -> None:
    try:
        msg.nak(delay=delay)
    except ValueError:  # already acked or termed before the failure
        pass


@dataclass
class PoolStats:
    """Counts since the pool was created. ``calls`` counts attempts (redeliveries too)."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    retries: int = 0
    timeouts: int = 0
    poison: int = 0
    per_worker: dict[str, int] = field(default_factory=dict)


class ToolWorkerPool:
    """``workers`` loops on the bridge loop, each pulling one call at a time and running ``fn``.

    ``fn(**arguments)`` may be sync (run in the bridge's handler thread pool) or async (run on
    the loop). It gets ``timeout`` seconds per attempt. An async function is cancelled then;
    a sync one cannot be: its thread keeps running until the function returns, its result is
    thrown away, and meanwhile it holds one of the bridge's shared handler threads.

    A timeout or an exception in ``retry_on`` is retried: the call is nak'ed with
    ``retry_delay(attempt)`` (a number or a function of the attempt) until ``max_deliver``
    attempts. Any other exception, arguments that do not fit ``fn``'s signature, or the last
    attempt's failure publish an error result at once and ``term()`` the call, so the
    caller always hears back. Only a worker that dies mid-call (or hangs past ``ack_wait``)
    on every attempt leaves no result; the server's MAX_DELIVERIES advisory then sends the
    call to the DeadLetterOffice, with the last error recorded here.
    """

    def __init__(self, client: Client, tool: str, fn: Callable[..., Any], *, workers: int = 2,
                 timeout: float = 5.0, max_deliver: int = 3,
                 retry_delay: float | Callable[[int], float] = default_retry_delay,
                 retry_on: tuple[type[BaseException], ...] = (
                     RetryableToolError, TimeoutError, ConnectionError),
                 ack_wait: float | None = None, subjects: Subjects | None = None,
                 payload_threshold: int = PAYLOAD_THRESHOLD, name: str | None = None):
        if workers < 1 or max_deliver < 1 or timeout <= 0:
            raise ValueError("workers and max_deliver must be at least 1, timeout above 0")
        self.client = client
        self.tool = check_tool_name(tool)
        self.fn = fn
        self.workers = workers
        self.timeout = timeout
        self.max_deliver = max_deliver
        self.retry_delay = retry_delay
        self.retry_on = retry_on
        # A hung sync function must not be redelivered while this pool still waits for it.
        self.ack_wait = ack_wait if ack_wait is not None else max(10.0, timeout + 5.0)
        self.subjects = subjects or Subjects()
        self.name = name or f"{tool}-{next(_pools)}"
        self.payloads = PayloadStore(client, threshold=payload_threshold)
        self._stats = PoolStats()
        self._bridge = client._bridge
        self._running = False
        self._tasks: list[asyncio.Task] = []
        self._consumers: list[PullConsumer] = []
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none; skip the argument check
            self._signature = None

    @property
    def consumer_name(self) -> str:
        return f"tool-{self.tool}"

    @property
    def consumer_spec(self) -> ConsumerSpec:
        return ConsumerSpec(self.consumer_name, filter_subject=self.subjects.tool_execute(self.tool),
                            ack_wait=self.ack_wait, max_deliver=self.max_deliver, deliver="all",
                            description=f"Workers of tool '{self.tool}'")

    @property
    def stats(self) -> PoolStats:
        """A snapshot of the counters."""
        return replace(self._stats, per_worker=dict(self._stats.per_worker))

    @property
    def running(self) -> bool:
        return self._running

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> ToolWorkerPool:
        """Create or update the tool's consumer and start the workers. Returns self."""
        return self._bridge.run(self._start(), operation="start")

    async def astart(self) -> ToolWorkerPool:
        return await self._bridge.arun(self._start())

    async def _start(self) -> ToolWorkerPool:
        if self._running:
            return self
        await self.client.js.adeclare_consumer(REQUEST_STREAM, self.consumer_spec)
        self._consumers = [await self.client.js.apull(REQUEST_STREAM, self.consumer_name)
                           for _ in range(self.workers)]
        self._running = True
        self._tasks = [asyncio.ensure_future(self._work(f"{self.name}.w{i}", consumer))
                       for i, consumer in enumerate(self._consumers)]
        log.info("tool pool %s: %d workers on '%s'", self.name, self.workers, self.tool)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the calls in hand, then stop. Later calls wait in TOOL_REQUESTS."""
        self._bridge.run(self._stop(timeout), operation="stop")

    async def astop(self, timeout: float = 5.0) -> None:
        await self._bridge.arun(self._stop(timeout))

    async def _stop(self, timeout: float) -> None:
        # Let each worker's pull run out (<= 0.5 s) rather than cancel it: a cancelled pull
        # would stay on the server and could take a call that nobody then works on.
        self._running = False
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        self._tasks = []
        loop = asyncio.get_running_loop()
        for consumer in self._consumers:
            # PullConsumer has no async close(); its sync one is safe from a pool thread.
            try:
                await loop.run_in_executor(self._bridge.handler_pool, consumer.close)
            except Exception as error:  # the connection closed first: nothing to undo
                log.info("tool pool %s: pull subscription not closed (%s)", self.name, error)
        self._consumers = []

    def __enter__(self) -> ToolWorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the work loop ------------------------------------------------------------------
    async def _work(self, worker: str, consumer: PullConsumer) -> None:
        while self._running:
            try:
                batch = await consumer.afetch(1, timeout=0.5)
            except Exception as error:
                if not self._running or self.client.is_closed:
                    return
                log.warning("tool worker %s: fetch failed (%s); retrying", worker, error)
                await asyncio.sleep(0.25)
                continue
            for msg in batch:  # fetched, so ours to finish even if stop() was asked meanwhile
                try:
                    await self._process(worker, msg)
                except Exception:
                    log.exception("tool worker %s: call on '%s' failed", worker, msg.subject)
                    _nak_unless_settled(msg, self._delay(msg.info.num_delivered))

    async def _process(self, worker: str, msg: Message) -> None:
        attempt = msg.info.num_delivered
        try:
            call = ToolCall.model_validate_json(msg.data)
            result_subject = self.subjects.tool_result(call.conversation_id)
        except Exception as error:  # poison: no retry can fix it, and nobody to answer
            reason = f"not a ToolCall: {error}"[:500]
            try:
                await dead_letter_now(self.client, self.subjects, msg, reason)
            except Exception as dlq_error:
                log.warning("tool pool %s: could not dead-letter poison call: %s",
                            self.name, dlq_error)
            msg.term(reason[:200])
            self._stats.poison += 1
            return
        self._stats.calls += 1
        self._stats.per_worker[worker] = self._stats.per_worker.get(worker, 0) + 1
        started = time.perf_counter()
        value, failure = await self._execute(call)
        if failure is None:
            try:
                value = await self.payloads.offload(value, f"{call.id}/result",
                                                    f"the result of tool '{self.tool}'")
            except TypeError as error:
                failure = ToolFailure(type="UnserializableResult", message=str(error))
        if failure is not None and failure.retryable and attempt < self.max_deliver:
            await remember_failure(self.client, msg, f"{failure.type}: {failure.message}")
            msg.nak(delay=self._delay(attempt))
            self._stats.retries += 1
            return
        result = ToolResult(call_id=call.id, tool=call.tool, conversation_id=call.conversation_id,
                            status="ok" if failure is None else "error",
                            value=value if failure is None else None, error=failure,
                            attempts=attempt, worker=worker,
                            duration_ms=(time.perf_counter() - started) * 1000)
        # Publish first, ack second: a crash in between repeats the call (and the result's
        # msg id makes TOOL_RESULTS drop the second copy), it never loses the answer.
        await self.client.js.apublish(result_subject, result, msg_id=f"{call.id}.result")
        if failure is None:
            msg.ack()
            self._stats.ok += 1
        else:
            msg.term(f"{failure.type}: {failure.message}"[:200])
            self._stats.errors += 1

    async def _execute(self, call: ToolCall) -> tuple[Any, ToolFailure | None]:
        try:
            arguments = await self.payloads.resolve(call.arguments)
        except PayloadMissing as error:
            return None, ToolFailure(type="PayloadMissing", message=str(error))
        if not isinstance(arguments, dict):
            return None, ToolFailure(type="InvalidArguments",
                                     message=f"arguments must be an object, got {arguments!r:.80}")
        if self._signature is not None:
            try:
                self._signature.bind(**arguments)
            except TypeError as error:
                return None, ToolFailure(type="InvalidArguments",
                                         message=f"{self.tool}{self._signature}: {error}")
        job = asyncio.ensure_future(
            self._bridge.run_handler(functools.partial(self.fn, **arguments)))
        # asyncio.wait, not wait_for: a TimeoutError raised *by* fn must not read as ours.
        done, _ = await asyncio.wait({job}, timeout=self.timeout)
        if not done:
            job.cancel()  # cancels a coroutine; a sync function's thread runs on regardless
            self._stats.timeouts += 1
            return None, ToolFailure(type="ToolTimeout", retryable=True, timeout=True,
                                     message=f"'{self.tool}' ran longer than {self.timeout:g} s")
        try:
            value = job.result()
            if inspect.isawaitable(value):  # a sync callable that returned a coroutine
                value = await asyncio.wait_for(value, self.timeout)
        except self.retry_on as error:
            return None, ToolFailure(type=type(error).__name__, message=str(error),
                                     retryable=True)
        except Exception as error:
            return None, ToolFailure(type=type(error).__name__, message=str(error))
        return value, None

    def _delay(self, attempt: int) -> float:
        delay = self.retry_delay(attempt) if callable(self.retry_delay) else self.retry_delay
        return max(0.0, float(delay))

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        s = self._stats
        return (f"<ToolWorkerPool {self.name} tool={self.tool} workers={self.workers} {state} "
                f"ok={s.ok} errors={s.errors} retries={s.retries}>")


class ToolClient:
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
        self.consumer_name = f"results-{safe}-{uuid.uuid4().hex[:8]}"
        self.payloads = PayloadStore(client, threshold=payload_threshold)
        self.keep = keep
        self.received = 0
        self.duplicates = 0
        self._bridge = client._bridge
        self._started = False
        self._closed = False
        self._start_lock: asyncio.Lock | None = None
        self._task: asyncio.Task | None = None
        self._consumer: PullConsumer | None = None
        self._handlers: list[Callable[[ToolResult], Any]] = []
        self._arrived: OrderedDict[str, ToolResult] = OrderedDict()  # unclaimed
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._next_waiters: list[asyncio.Future] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._calls: dict[str, str] = {}  # call id -> tool, for calls still without a result

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> ToolClient:
        """Create the result consumer (done for you by the first call). Returns self."""
        return self._bridge.run(self._ensure_started(), operation="start")

    async def astart(self) -> ToolClient:
        return await self._bridge.arun(self._ensure_started())

    async def _ensure_started(self) -> ToolClient:
        if self._started:
            return self
        self._start_lock = self._start_lock or asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return self
            if self._closed:
                raise RuntimeError(f"ToolClient for '{self.conversation_id}' is closed")
            spec = ConsumerSpec(self.consumer_name, filter_subject=self.result_subject,
                                deliver="new", ack_wait=30.0, inactive_threshold=60.0,
                                description=f"Tool results of conversation "
                                            f"'{self.conversation_id}'")
            await self.client.js.adeclare_consumer(RESULT_STREAM, spec)
            self._consumer = await self.client.js.apull(RESULT_STREAM, self.consumer_name)
            self._task = asyncio.ensure_future(self._receive(self._consumer))
            self._started = True
        return self

    def close(self) -> None:
        """Stop receiving and delete the result consumer (results then stop being kept)."""
        self._bridge.run(self._close(), operation="close")

    async def aclose(self) -> None:
        await self._bridge.arun(self._close())

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()  # the consumer is deleted next, so a pending pull is moot
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self._started and not self.client.is_closed:
            try:
                await self.client.nc.jetstream().delete_consumer(RESULT_STREAM,
                                                                 self.consumer_name)
            except Exception as error:
                log.info("tool client %s: consumer not deleted (%s)", self.consumer_name, error)
        for future in [f for fs in self._waiters.values() for f in fs] + self._next_waiters:
            if not future.done():
                future.cancel()

    def __enter__(self) -> ToolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        await self._ensure_started()
        call_id = uuid.uuid4().hex
        sent = await self.payloads.offload(arguments, f"{call_id}/arguments",
                                           f"the arguments of tool '{tool}'")
        call = ToolCall(id=call_id, tool=tool, conversation_id=self.conversation_id,
                        arguments=sent, requested_by=self.client.name)
        self._calls[call_id] = tool
        try:
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
        await self._ensure_started()
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
        await self._ensure_started()
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
        """Is any consumer of TOOL_REQUESTS taking this tool's calls? Say so in the error."""
        if tool == "?":
            return "It is not a call made by this ToolClient.", None
        subject = self.subjects.tool_execute(tool)
        try:
            infos = await self.client.nc.jetstream().consumers_info(REQUEST_STREAM)
        except Exception as error:
            return f"(Could not list the consumers of {REQUEST_STREAM}: {error}.)", None
        matching = [i for i in infos if any(
            subject_matches(f, subject)
            for f in [i.config.filter_subject, *(i.config.filter_subjects or [])] if f)]
        if not matching:
            return (f"No worker pool is consuming '{subject}': no consumer on stream "
                    f"{REQUEST_STREAM} filters it, so the call waits in the stream (until its "
                    f"max_age drops it) for ToolWorkerPool(client, '{tool}', fn).start()."), False
        info = matching[0]
        idle = " No worker is pulling now: is the pool stopped?" \
            if not info.num_waiting and not info.num_ack_pending else ""
        return (f"Worker pool consumer '{info.name}' exists ({info.num_pending} calls waiting, "
                f"{info.num_ack_pending} in progress, {info.num_waiting} pulls waiting).{idle} "
                "The tool may be slow or retrying: raise timeout= or check the pool's "
                "stats."), True

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
                    await self._deliver(msg)
                except Exception:
                    log.exception("tool client %s: result on '%s' not handled",
                                  self.consumer_name, msg.subject)
                    _nak_unless_settled(msg, 1.0)

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
                result.value = await self.payloads.resolve(result.value)
            except PayloadMissing as error:
                result = result.model_copy(update={"status": "error", "value": None,
                                                   "error": ToolFailure(type="PayloadMissing",
                                                                        message=str(error))})
        self.received += 1
        self._calls.pop(result.call_id, None)
        msg.ack()
        for handler in list(self._handlers):
            try:
                outcome = self._bridge.run_handler(handler, result)
                if inspect.isawaitable(outcome):
                    await outcome
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


__all__ = ["ToolWorkerPool", "ToolClient", "PoolStats", "ToolCall", "ToolResult",
           "ToolFailure", "ToolError", "ToolTimeout", "RetryableToolError", "PayloadMissing",
           "default_retry_delay", "check_tool_name"]
