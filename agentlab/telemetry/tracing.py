"""The spans agentlab makes, made here and nowhere else, and nothing at all when tracing is off.

    from agentlab.telemetry import tracing
    tracer = tracing.tracer()                     # None when off: do nothing more
    if tracer is not None:
        span, headers = tracing.start_send(tracer, "publish", subject, headers)
        with tracing.ending(span):
            send(subject, data, headers)          # headers now carry W3C traceparent

Spans follow OpenTelemetry's messaging conventions: ``messaging.system`` "nats",
``messaging.destination.name`` (the subject), ``messaging.operation.type`` (send, process,
settle) and ``.name`` (publish, request, process, ack, nak, term), ``messaging.message.id``
(Nats-Msg-Id), ``messaging.consumer.group.name`` (the durable consumer or queue group).
The conventions name no NATS attributes, so the JetStream ones are agentlab's, in the
system's namespace: ``messaging.nats.stream``, ``messaging.nats.delivery_count``. What is
agentlab's own (role, instance, task id) is prefixed ``agentlab.``. A process span's parent
is the message's creation context (the publish span that sent it), which the conventions
allow for single messages, so one goal is one trace; it also links to that context.

When tracing is off, and how that is known cheaply: ``tracer()`` is on every publish, so it
compares the API's global tracer provider (``opentelemetry.trace._TRACER_PROVIDER``, a
module attribute read: tens of nanoseconds) with the one its cached answer was made for,
and only when it changed decides again. So an SDK provider set at any time, even after
agentlab was imported, takes effect at the next publish, and without one (the API's
default) every call site does a read, a compare and a ``None`` test (~60 ns a call on the
benchmark machine; a delegation asks about six times: benchmarks/tracing.py). Off means: no SDK
provider set (or a no-op one), ``AGENTLAB_TRACING=off`` in the environment (it beats
everything; read when the decision is made, so after changing it call ``reset()``), or
``disable()``. ``enable(provider)`` traces with a provider of your own without making it
global (tests, benchmarks). Should the API ever drop that attribute, the public
``get_tracer_provider()`` is compared instead (slower, same answers).

Inside ``untraced()`` (agentlab's own chatter: heartbeats, health ticks, pull requests)
nothing is traced, so it does not bury the goals' traces under thousands of tiny ones.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import (
    Link,
    NoOpTracer,
    NoOpTracerProvider,
    ProxyTracer,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)

__all__ = ["annotate", "ending", "enable", "disable", "fail", "internal", "processing",
           "record_error", "record_failure", "reset", "settle", "start_send", "tracer",
           "tracing_enabled", "untraced"]

OFF_VALUES = frozenset({"off", "0", "false", "no"})
SYSTEM = "nats"
AttributeValue = str | bool | int | float

_UNSEEN: Any = object()
_seen: Any = _UNSEEN          # the global provider the cached answer was made for
_tracer: Tracer | None = None  # the cached answer
_mode = "auto"                 # "auto": follow the global provider; "on": _provider; "off"
_provider: TracerProvider | None = None
_lock = threading.Lock()
_quiet: contextvars.ContextVar[bool] = contextvars.ContextVar("agentlab_untraced",
                                                              default=False)


# -- on or off -------------------------------------------------------------------------------
if hasattr(trace, "_TRACER_PROVIDER"):
    def tracer() -> Tracer | None:
        """agentlab's tracer, or None when tracing is off (see the module docstring)."""
        found = _tracer if trace._TRACER_PROVIDER is _seen else _refresh()
        if found is None or not _quiet.get():
            return found
        return None

    def _global() -> object:
        return trace._TRACER_PROVIDER
else:  # pragma: no cover - an API without the attribute: the public, slower comparison
    def tracer() -> Tracer | None:
        """agentlab's tracer, or None when tracing is off (see the module docstring)."""
        found = _tracer if trace.get_tracer_provider() is _seen else _refresh()
        if found is None or not _quiet.get():
            return found
        return None

    def _global() -> object:
        return trace.get_tracer_provider()


def _refresh() -> Tracer | None:
    """Decide again: the global provider changed, or enable/disable/reset was called."""
    global _seen, _tracer
    with _lock:
        if _mode == "auto" and OTEL_PYTHON_TRACER_PROVIDER in os.environ:
            trace.get_tracer_provider()  # the API loads the provider that variable names
        seen = _global()
        provider: Any = None
        if os.environ.get("AGENTLAB_TRACING", "").strip().lower() in OFF_VALUES:
            provider = None
        elif _mode == "on":
            provider = _provider
        elif _mode == "auto" and seen is not None and not isinstance(
                seen, (ProxyTracerProvider, NoOpTracerProvider)):
            provider = seen
        found = provider.get_tracer("agentlab", _version()) if provider is not None else None
        if isinstance(found, (NoOpTracer, ProxyTracer)):  # e.g. OTEL_SDK_DISABLED=true
            found = None
        _tracer, _seen = found, seen
        return found


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentlab-nats")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


def tracing_enabled() -> bool:
    """True when agentlab makes spans now (here, outside ``untraced()``)."""
    return tracer() is not None


def enable(provider: TracerProvider | None = None) -> None:
    """Trace with ``provider`` (not made global: for tests and benchmarks), or with None go
    back to following the global provider. ``AGENTLAB_TRACING=off`` still wins."""
    _set("on" if provider is not None else "auto", provider)


def disable() -> None:
    """No spans and no traceparent headers, whatever provider is set, until enable/reset."""
    _set("off", None)


def reset() -> None:
    """Follow the global provider and ``AGENTLAB_TRACING`` again (read now)."""
    _set("auto", None)


def _set(mode: str, provider: TracerProvider | None) -> None:
    global _mode, _provider, _seen
    with _lock:
        _mode, _provider, _seen = mode, provider, _UNSEEN


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """Nothing inside is traced; tasks and subscriptions started inside inherit it."""
    token = _quiet.set(True)
    try:
        yield
    finally:
        _quiet.reset(token)


# -- making spans ------------------------------------------------------------------------------
def _common(operation_type: str, operation: str, subject: str) -> dict[str, AttributeValue]:
    return {"messaging.system": SYSTEM, "messaging.operation.type": operation_type,
            "messaging.operation.name": operation, "messaging.destination.name": subject}


def start_send(tracer: Tracer, operation: str, subject: str,
               headers: Mapping[str, str] | None, *, kind: SpanKind = SpanKind.PRODUCER,
               message_id: str | None = None, template: str | None = None,
               attributes: Mapping[str, AttributeValue] | None = None
               ) -> tuple[Span, dict[str, str]]:
    """A started (not current) span for sending to ``subject``, and a copy of ``headers``
    carrying its context (``traceparent``, ``tracestate``): the message's creation context.
    ``template`` names a subject with ids in it by its shape (span names stay few)."""
    attrs = _common("send", operation, subject)
    message_id = message_id or (headers.get("Nats-Msg-Id") if headers else None)
    if message_id:
        attrs["messaging.message.id"] = message_id
    if template:
        attrs["messaging.destination.template"] = template
    if attributes:
        attrs.update(attributes)
    span = tracer.start_span(f"{operation} {template or subject}", kind=kind, attributes=attrs)
    out = dict(headers) if headers else {}
    propagate.inject(out, context=trace.set_span_in_context(span))
    return span, out


class Ending:
    """``with ending(span):`` ends ``span`` after the block and records an exception that
    leaves it (error status). A class, not a generator: it is on every traced publish."""

    __slots__ = ("span", "_current", "_token")

    def __init__(self, span: Span, current: bool) -> None:
        self.span, self._current = span, current
        self._token: contextvars.Token[otel_context.Context] | None = None

    def __enter__(self) -> Span:
        if self._current:
            self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: object) -> None:
        if isinstance(error, Exception):  # not a cancellation or an interrupt
            fail(self.span, error)
        if self._token is not None:
            otel_context.detach(self._token)
        self.span.end()


def ending(span: Span, *, current: bool = False) -> Ending:
    """End ``span`` after the block; an exception is recorded on it. With ``current``, what
    the block does (a request, a handler's publishes) is the span's child."""
    return Ending(span, current)


def processing(tracer: Tracer, subject: str, headers: Mapping[str, str] | None, *,
               operation: str = "process", consumer: str | None = None,
               stream: str | None = None, deliveries: int | None = None,
               message_id: str | None = None, name: str | None = None,
               attributes: Mapping[str, AttributeValue] | None = None) -> Ending:
    """The current span while a received message is processed (CONSUMER): a child of the
    message's creation context (from its headers), else the root of a trace of its own."""
    creation = propagate.extract(headers) if headers else otel_context.Context()
    sent_by = trace.get_current_span(creation).get_span_context()
    attrs = _common("process", operation, subject)
    message_id = message_id or (headers.get("Nats-Msg-Id") if headers else None)
    if message_id:
        attrs["messaging.message.id"] = message_id
    if consumer:
        attrs["messaging.consumer.group.name"] = consumer
    if stream:
        attrs["messaging.nats.stream"] = stream
    if deliveries is not None:
        attrs["messaging.nats.delivery_count"] = deliveries
    if attributes:
        attrs.update(attributes)
    span = tracer.start_span(name or f"{operation} {subject}", context=creation,
                             kind=SpanKind.CONSUMER, attributes=attrs,
                             links=[Link(sent_by)] if sent_by.is_valid else None)
    return Ending(span, True)


def internal(tracer: Tracer, name: str, attributes: Mapping[str, AttributeValue] | None = None,
             *, kind: SpanKind = SpanKind.INTERNAL) -> Ending:
    """The current span for a step of agentlab's own (a handler run, a tool call, a saga
    step); an exception leaving it is recorded."""
    return Ending(tracer.start_span(name, kind=kind, attributes=attributes), True)


def settle(tracer: Tracer, verb: str, subject: str, *, consumer: str | None,
           deliveries: int | None, stream: str | None = None,
           message_id: str | None = None) -> Span:
    """A started span for an ack, nak or term of a message received on ``subject``."""
    attrs = _common("settle", verb, subject)
    if consumer:
        attrs["messaging.consumer.group.name"] = consumer
    if stream:
        attrs["messaging.nats.stream"] = stream
    if deliveries is not None:
        attrs["messaging.nats.delivery_count"] = deliveries
    if message_id:
        attrs["messaging.message.id"] = message_id
    return tracer.start_span(f"{verb} {subject}", kind=SpanKind.CLIENT, attributes=attrs)


def fail(span: Span, error: BaseException, *, record: bool = True) -> None:
    """Mark ``span`` failed by ``error`` (its type in ``error.type``, as the conventions say)."""
    if record:
        span.record_exception(error)
    span.set_attribute("error.type", type(error).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def record_error(error: BaseException, *, record: bool = True) -> None:
    """Mark the current span failed (a handler error caught and reported, not raised)."""
    if tracer() is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        fail(span, error, record=record)


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Add ``attributes`` to the current span (what is known only once work has begun)."""
    if tracer() is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def record_failure(error_type: str, message: str) -> None:
    """Mark the current span failed by a failure that is not an exception here (a tool's
    error result, a saga step's error reply)."""
    if tracer() is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, f"{error_type}: {message}"))
