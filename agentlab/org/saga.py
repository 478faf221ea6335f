"""A saga: steps across agents; when one fails or times out, the finished ones are undone.

    saga = Saga(client, "order")
    saga.step("charge", action=("genbrain.svc.billing.charge", {"amount": 30}),
              compensate=("genbrain.svc.billing.refund", {}), timeout=2)
    saga.step("reserve", action=reserve, compensate=release)       # or plain callables
    result = saga.run({"order_id": 42})
    result.status      # "completed" | "compensated" | "failed_compensation"

A ``(subject, payload)`` step is a NATS request to whichever agent serves that subject
(``client.serve``); it receives a ``SagaRequest`` (the payload plus the saga's context and
the results so far). The step fails if the reply is ``{"error": ...}`` or carries an
``Agentlab-Error`` header (what ``client.serve`` sends when its handler raises), if nobody
serves the subject, or if no reply comes within ``timeout``. Callable steps get the same
``SagaRequest`` and fail by raising. Then the compensations of the completed steps run in
reverse order, each tried even if an earlier one failed (seed 002, "saga pattern").

A step that timed out is not compensated: its effect is unknown and it may still happen.
Make compensations idempotent and safe to run for an effect that never happened if you
want to undo timed-out steps too (give the next step its own check instead).

Progress goes out as events ``saga.started``, ``saga.step_completed``, ``saga.step_failed``,
``saga.compensated``, ``saga.compensation_failed``, ``saga.finished`` on
``{root}.events.saga.*``: watch them with ``on_event(client, "saga.>", print, group="")``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from ..core.client import Client
from ..core.received import Message
from ..core.subjects import Subjects, check_publish_subject
from ..errors import MessageDecodeError, NoResponders, RequestTimeout
from ..telemetry import tracing
from ..wire.messages import WireModel, decode_json, new_id, register_wire_model
from .triggers import aemit_event

log = logging.getLogger("agentlab")

Phase = Literal["action", "compensate"]
FailureKind = Literal["error", "timeout", "no_responders"]


@register_wire_model
class SagaRequest(WireModel):
    """What a step's agent receives: which saga and step, the phase, and what it needs."""

    saga_id: str = Field(min_length=1, description="This run of the saga.")
    saga: str = Field(min_length=1, description="The saga's name.")
    step: str = Field(min_length=1)
    phase: Phase
    payload: Any = Field(default=None, description="The step's own payload, as declared.")
    context: dict[str, Any] = Field(default_factory=dict, description="Given to saga.run().")
    results: dict[str, Any] = Field(default_factory=dict,
                                    description="Results of the steps completed so far.")


@dataclass(frozen=True)
class StepFailure:
    """Why a step's action or compensation failed: kind is error, timeout or no_responders."""

    step: str
    phase: Phase
    kind: FailureKind
    message: str


@dataclass
class SagaResult:
    """How a run ended: what completed, what was undone (in the order run) and why."""

    saga_id: str
    name: str
    status: Literal["completed", "compensated", "failed_compensation"] = "completed"
    completed: list[str] = field(default_factory=list)
    compensations: list[str] = field(default_factory=list)
    failed_step: str | None = None
    failures: list[StepFailure] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    step_ms: dict[str, float] = field(default_factory=dict)
    compensation_ms: dict[str, float] = field(default_factory=dict)
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    @property
    def error(self) -> StepFailure | None:
        """The failure that stopped the saga (None if it completed)."""
        return next((f for f in self.failures if f.phase == "action"), None)

    @property
    def compensation_errors(self) -> list[StepFailure]:
        return [f for f in self.failures if f.phase == "compensate"]


@dataclass(frozen=True)
class SagaStep:
    name: str
    action: Any
    compensate: Any | None
    timeout: float


class _StepFailed(Exception):
    def __init__(self, kind: FailureKind, message: str):
        super().__init__(message)
        self.kind = kind


def _check_spec(spec: Any, what: str) -> Any:
    if callable(spec):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        check_publish_subject(spec[0])  # a bad subject fails at definition, not mid-saga
        return spec
    raise TypeError(f"{what} must be (subject, payload) or a callable, got {spec!r}")


def _reply_value(reply: Message) -> Any:
    """The reply's value, or _StepFailed if the responder reported an error."""
    body: Any = None
    if reply.data:
        try:
            body = decode_json(reply.data, reply.subject)
        except MessageDecodeError:
            body = reply.text  # a plain-text answer is still an answer
    error_header = reply.headers.get("Agentlab-Error")
    if error_header or (isinstance(body, dict) and body.get("error")):
        detail = body.get("error") if isinstance(body, dict) else None
        raise _StepFailed("error", str(detail or error_header))
    return body


class Saga:
    """An ordered list of steps, each with an optional compensation. ``run()`` executes it."""

    def __init__(self, client: Client, name: str, *, subjects: Subjects | None = None,
                 default_timeout: float = 2.0):
        if not name:
            raise ValueError("a saga needs a name, e.g. 'order'")
        self.client = client
        self.name = name
        self.subjects = subjects or Subjects()
        self.default_timeout = default_timeout
        self.steps: list[SagaStep] = []

    def step(self, name: str, action: Any, compensate: Any | None = None, *,
             timeout: float | None = None) -> Saga:
        """Add a step; ``action``/``compensate`` are ``(subject, payload)`` or callables."""
        if any(s.name == name for s in self.steps):
            raise ValueError(f"saga {self.name!r} already has a step named {name!r}")
        self.steps.append(SagaStep(name, _check_spec(action, f"step {name!r} action"),
                                   None if compensate is None else
                                   _check_spec(compensate, f"step {name!r} compensate"),
                                   self.default_timeout if timeout is None else timeout))
        return self

    def run(self, context: dict[str, Any] | None = None, *,
            saga_id: str | None = None) -> SagaResult:
        """Run every step in order; on a failure, compensate the completed ones in reverse."""
        return self.client._bridge.run(self._run(context or {}, saga_id), operation="saga")

    async def arun(self, context: dict[str, Any] | None = None, *,
                   saga_id: str | None = None) -> SagaResult:
        return await self.client._bridge.arun(self._run(context or {}, saga_id))

    async def _run(self, context: dict[str, Any], saga_id: str | None) -> SagaResult:
        result = SagaResult(saga_id or f"{self.name}-{new_id()[:8]}", self.name)
        tracer = tracing.tracer()
        if tracer is None:
            return await self._run_steps(result, context)
        # One span for the run: its steps, their requests and the agents' handling of them
        # (in whichever process) are its descendants, one trace per run.
        with tracing.internal(tracer, f"saga {self.name}", {
                "agentlab.saga": self.name, "agentlab.saga.id": result.saga_id,
                "messaging.message.conversation_id": result.saga_id}) as span:
            await self._run_steps(result, context)
            span.set_attribute("agentlab.saga.status", result.status)
            if not result.ok:
                tracing.record_failure(result.status, f"saga {self.name} failed at step "
                                                      f"{result.failed_step!r}")
            return result

    async def _run_steps(self, result: SagaResult, context: dict[str, Any]) -> SagaResult:
        started = time.perf_counter()
        await self._progress(result, "started")
        done: list[SagaStep] = []
        for step in self.steps:
            t0 = time.perf_counter()
            try:
                value = await self._call(result, step, "action", context)
            except _StepFailed as failed:
                result.step_ms[step.name] = _ms(t0)
                result.failed_step = step.name
                result.failures.append(StepFailure(step.name, "action", failed.kind, str(failed)))
                await self._progress(result, "step_failed", step.name, error=str(failed))
                await self._compensate(result, reversed(done), context)
                break
            result.step_ms[step.name] = _ms(t0)
            result.results[step.name] = value
            result.completed.append(step.name)
            done.append(step)
            await self._progress(result, "step_completed", step.name)
        result.duration_ms = _ms(started)
        await self._progress(result, "finished")
        return result

    async def _compensate(self, result: SagaResult, steps: Iterable[SagaStep],
                          context: dict[str, Any]) -> None:
        result.status = "compensated"
        for step in steps:
            if step.compensate is None:
                continue  # nothing to undo (a read, a notification)
            result.compensations.append(step.name)
            t0 = time.perf_counter()
            try:
                await self._call(result, step, "compensate", context)
            except _StepFailed as failed:
                # Keep going: the other completed steps still deserve their undo.
                result.status = "failed_compensation"
                result.failures.append(StepFailure(step.name, "compensate", failed.kind,
                                                   str(failed)))
                await self._progress(result, "compensation_failed", step.name, error=str(failed))
            else:
                await self._progress(result, "compensated", step.name)
            result.compensation_ms[step.name] = _ms(t0)

    async def _call(self, result: SagaResult, step: SagaStep, phase: Phase,
                    context: dict[str, Any]) -> Any:
        tracer = tracing.tracer()
        if tracer is None:
            return await self._call_step(result, step, phase, context)
        with tracing.internal(tracer, f"saga step {self.name}.{step.name}", {
                "agentlab.saga": self.name, "agentlab.saga.id": result.saga_id,
                "agentlab.saga.step": step.name, "agentlab.saga.phase": phase}) as span:
            try:
                return await self._call_step(result, step, phase, context)
            except _StepFailed as failed:
                span.set_attribute("agentlab.saga.failure", failed.kind)
                raise

    async def _call_step(self, result: SagaResult, step: SagaStep, phase: Phase,
                         context: dict[str, Any]) -> Any:
        spec = step.action if phase == "action" else step.compensate
        assert spec is not None  # only a step that has a compensation is compensated
        request = SagaRequest(saga_id=result.saga_id, saga=self.name, step=step.name,
                              phase=phase, context=context, results=dict(result.results))
        if callable(spec):
            try:
                return await asyncio.wait_for(self.client._bridge.arun_handler(spec, request),
                                              step.timeout)
            except asyncio.TimeoutError:
                raise _StepFailed("timeout", f"no result within {step.timeout} s") from None
            except Exception as error:
                raise _StepFailed("error", f"{type(error).__name__}: {error}") from None
        subject, payload = spec
        request.payload = payload
        try:
            reply = await self.client.arequest(subject, request, timeout=step.timeout)
        except RequestTimeout as error:
            raise _StepFailed("timeout", str(error)) from None
        except NoResponders as error:
            raise _StepFailed("no_responders", str(error)) from None
        except Exception as error:  # permission denied, closed connection: still a failure
            raise _StepFailed("error", f"{type(error).__name__}: {error}") from None
        return _reply_value(reply)

    async def _progress(self, result: SagaResult, what: str, step: str | None = None,
                        **extra: Any) -> None:
        payload = {"saga_id": result.saga_id, "saga": self.name, "step": step, **extra}
        if what == "finished":  # the status is only final once compensation is over
            payload.update(status=result.status, completed=result.completed,
                           compensations=result.compensations, duration_ms=result.duration_ms)
        try:
            await aemit_event(self.client, f"saga.{what}", payload, source=f"saga:{self.name}",
                              correlation_id=result.saga_id, subjects=self.subjects)
        except Exception as error:
            # Watching is optional; undoing is not. A lost event must not skip compensation.
            log.warning("saga %s: could not publish saga.%s: %s", result.saga_id, what, error)

    def __repr__(self) -> str:
        return f"<Saga {self.name!r} steps={[s.name for s in self.steps]}>"


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1e3, 3)


__all__ = ["Saga", "SagaRequest", "SagaResult", "SagaStep", "StepFailure"]
