"""The worker side of asynchronous tool calls: a pool of loops that pull calls and run a tool.

    pool = ToolWorkerPool(lab.connect("tools"), "search", search_fn, workers=3).start()
    pool.stats.ok                                  # counters; pool.stop() when done

All workers of a tool, in any process, share one durable pull consumer (``tool-<tool>``) on
the TOOL_REQUESTS work queue; see :mod:`agentlab.org.tools` for the whole round trip.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.client import Client
from ..core.jetstream import PullConsumer
from ..core.lifecycle import Service
from ..core.received import Message, nak_unless_settled
from ..core.specs import ConsumerSpec
from ..core.subjects import Subjects, subject_matches, validate_token
from ..telemetry import tracing
from .deadletters import adead_letter_now, aremember_failure
from .services import MicroService, aderegister, aregister_tool_pool
from .streams import TOOL_REQUEST_STREAM as REQUEST_STREAM
from .toolpayloads import (
    PAYLOAD_THRESHOLD,
    PayloadMissing,
    PayloadStore,
    RetryableToolError,
    ToolCall,
    ToolFailure,
    ToolResult,
)

log = logging.getLogger("agentlab")

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


class ToolWorkerPool(Service):
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

    A running pool is the NATS micro service ``agentlab-tool-<tool>`` (``$SRV.PING/INFO/
    STATS``, a ``stats`` endpoint; see :mod:`agentlab.org.services`) unless
    ``discoverable=False``.
    """

    def __init__(self, client: Client, tool: str, fn: Callable[..., Any], *, workers: int = 2,
                 timeout: float = 5.0, max_deliver: int = 3,
                 retry_delay: float | Callable[[int], float] = default_retry_delay,
                 retry_on: tuple[type[BaseException], ...] = (
                     RetryableToolError, TimeoutError, ConnectionError),
                 ack_wait: float | None = None, subjects: Subjects | None = None,
                 payload_threshold: int = PAYLOAD_THRESHOLD, name: str | None = None,
                 discoverable: bool = True):
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
        self.discoverable = discoverable
        self.payloads = PayloadStore(client, threshold=payload_threshold)
        self._stats = PoolStats()
        self._bridge = client._bridge
        self._running = False
        self._tasks: list[asyncio.Task] = []
        self._consumers: list[PullConsumer] = []
        self._micro: MicroService | None = None
        try:
            self._signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have none; skip the argument check
            self._signature = None

    @property
    def consumer_name(self) -> str:
        return f"tool-{self.tool}"

    @property
    def consumer_spec(self) -> ConsumerSpec:
        return ConsumerSpec(self.consumer_name,
                            filter_subject=self.subjects.tool_execute(self.tool),
                            ack_wait=self.ack_wait, max_deliver=self.max_deliver, deliver="all",
                            description=f"Workers of tool '{self.tool}'")

    @property
    def stats(self) -> PoolStats:
        """A snapshot of the counters."""
        return replace(self._stats, per_worker=dict(self._stats.per_worker))

    # -- lifecycle --------------------------------------------------------------------
    async def _astart_service(self) -> None:
        """start(): create or update the tool's consumer and start the workers."""
        await self.client.js.adeclare_consumer(REQUEST_STREAM, self.consumer_spec)
        for _ in range(self.workers):  # one by one: a failed start closes those made
            self._consumers.append(await self.client.js.apull(REQUEST_STREAM,
                                                              self.consumer_name))
        self._running = True
        self._tasks = [asyncio.ensure_future(self._work(f"{self.name}.w{i}", consumer))
                       for i, consumer in enumerate(self._consumers)]
        # Best effort, as an agent's (org/services.py): a refused $SRV leaves it working.
        self._micro = await aregister_tool_pool(self) if self.discoverable else None
        log.info("tool pool %s: %d workers on '%s'", self.name, self.workers, self.tool)

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the calls in hand, then stop. Later calls wait in TOOL_REQUESTS."""
        self._stop_blocking(timeout)

    async def astop(self, timeout: float = 5.0) -> None:
        await self._bridge.arun(self._stop_service(timeout))

    async def _astop_service(self, timeout: float = 5.0) -> None:
        micro, self._micro = self._micro, None
        await aderegister(micro, f"tool pool {self.name}")
        # Let each worker's pull run out (<= 0.5 s) rather than cancel it: a cancelled pull
        # would stay on the server and could take a call that nobody then works on.
        self._running = False
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
        self._tasks = []
        for consumer in self._consumers:
            # On the loop: the handler pool's threads may all be held by hung sync tools.
            try:
                await consumer.aclose()
            except Exception as error:  # the connection closed first: nothing to undo
                log.info("tool pool %s: pull subscription not closed (%s)", self.name, error)
        self._consumers = []

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
                    tracer = tracing.tracer()
                    if tracer is None:
                        await self._process(worker, msg)
                        continue
                    # A child of the caller's "tool call" span (the call's traceparent).
                    with tracing.processing(tracer, msg.subject, msg.headers,
                                            consumer=self.consumer_name, stream=REQUEST_STREAM,
                                            deliveries=msg.info.num_delivered,
                                            attributes={"agentlab.tool": self.tool,
                                                        "agentlab.tool.worker": worker}):
                        await self._process(worker, msg)
                except Exception:
                    log.exception("tool worker %s: call on '%s' failed", worker, msg.subject)
                    nak_unless_settled(msg, self._delay(msg.info.num_delivered))

    async def _process(self, worker: str, msg: Message) -> None:
        attempt = msg.info.num_delivered
        try:
            call = ToolCall.model_validate_json(msg.data)
            result_subject = self.subjects.tool_result(call.conversation_id)
        except Exception as error:  # poison: no retry can fix it, and nobody to answer
            reason = f"not a ToolCall: {error}"[:500]
            try:
                await adead_letter_now(self.client, self.subjects, msg, reason)
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
        if failure is not None:
            tracing.record_failure(failure.type, failure.message)
        if failure is None:
            try:
                value = await self.payloads.aoffload(value, f"{call.id}/result",
                                                    f"the result of tool '{self.tool}'")
            except TypeError as error:
                failure = ToolFailure(type="UnserializableResult", message=str(error))
        if failure is not None and failure.retryable and attempt < self.max_deliver:
            await aremember_failure(self.client, msg, f"{failure.type}: {failure.message}")
            msg.nak(delay=self._delay(attempt))
            self._stats.retries += 1
            return
        result = ToolResult(call_id=call.id, tool=call.tool, conversation_id=call.conversation_id,
                            status="ok" if failure is None else "error",
                            value=value if failure is None else None, error=failure,
                            attempts=attempt, worker=worker,
                            duration_ms=(time.perf_counter() - started) * 1000)
        # Counted before the result leaves: whoever receives it may read the stats at once.
        if failure is None:
            self._stats.ok += 1
        else:
            self._stats.errors += 1
        # Publish first, ack second: a crash in between repeats the call (and the result's
        # msg id makes TOOL_RESULTS drop the second copy), it never loses the answer.
        await self.client.js.apublish(result_subject, result, msg_id=f"{call.id}.result")
        if failure is None:
            msg.ack()
        else:
            msg.term(f"{failure.type}: {failure.message}"[:200])

    async def _execute(self, call: ToolCall) -> tuple[Any, ToolFailure | None]:
        try:
            arguments = await self.payloads.aresolve(call.arguments)
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
            self._bridge.arun_handler(functools.partial(self.fn, **arguments)))
        # asyncio.wait, not wait_for: a TimeoutError raised *by* fn must not read as ours.
        done, _ = await asyncio.wait({job}, timeout=self.timeout)
        if not done:
            job.cancel()  # cancels a coroutine; a sync function's thread runs on regardless
            self._stats.timeouts += 1
            return None, ToolFailure(type="ToolTimeout", retryable=True, timeout=True,
                                     message=f"'{self.tool}' ran longer than {self.timeout:g} s")
        try:
            # (A sync fn that returned a coroutine had it awaited inside the job, in time.)
            value = job.result()
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
        s = self._stats
        return (f"<ToolWorkerPool {self.name} tool={self.tool} workers={self.workers} "
                f"{self.service_state} "
                f"ok={s.ok} errors={s.errors} retries={s.retries}>")

async def adiagnose_tool_workers(client: Client, tool: str, subjects: Subjects | None = None
                                ) -> tuple[str, bool | None]:
    """Is any consumer of TOOL_REQUESTS taking ``tool``'s calls? A hint for a ToolTimeout,
    and whether such a consumer exists (None: could not tell)."""
    subject = (subjects or Subjects()).tool_execute(tool)
    try:
        infos = await client.js.aconsumers(REQUEST_STREAM)
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


__all__ = ["ToolWorkerPool", "PoolStats", "default_retry_delay", "check_tool_name",
           "adiagnose_tool_workers", "REQUEST_STREAM"]
