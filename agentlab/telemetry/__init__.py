"""Traces across agents: OpenTelemetry spans for publishes, deliveries and handlers.

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider                 # the `otel` extra
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)        # from now on agentlab traces, nothing else to do
    org.assign("Launch the product")           # one trace: board, CEO, CTO and CFO

Or with no code: ``OTEL_TRACES_EXPORTER=console`` (or ``otlp``, with its exporter package
installed) and ``OTEL_SERVICE_NAME`` in the environment of any agentlab process; see
``configure.py``. Without an SDK provider nothing is traced and nothing is added to any
message; ``AGENTLAB_TRACING=off`` forces that.

What is traced: publish, JetStream publish and request (each injects W3C ``traceparent``
into the message's headers); each task delivery, whose span is its handler run's too (a
child of the publish that delegated it, in whichever process); ack, nak and term; the
ledger record; a delegation; tool calls and their execution; saga runs and steps; meeting
messages; subscription handlers; a dead letter (in the trace of the task given up on).
Not traced: heartbeats, health ticks and pull requests (``untraced()``), replies, the
mailbox reads of a subscription without a handler, ``gather()``, key-value puts.

The package knows the OpenTelemetry API, never a NATS client (an import-linter contract):

* ``tracing``    when tracing is on, and every span agentlab makes (``tracer()`` et al.)
* ``configure``  the SDK set up from ``OTEL_*`` variables and ``AGENTLAB_TRACE_FILE``
"""

from .configure import configure_from_env, json_lines_exporter
from .tracing import disable, enable, reset, tracing_enabled, untraced

__all__ = ["configure_from_env", "disable", "enable", "json_lines_exporter", "reset",
           "tracing_enabled", "untraced"]
