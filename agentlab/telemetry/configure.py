"""Exporting spans without code: the standard ``OTEL_*`` variables (and a file for tests).

    OTEL_TRACES_EXPORTER=otlp OTEL_SERVICE_NAME=cto python -m agentlab.programs.worker ...
    OTEL_TRACES_EXPORTER=console agentlab demo
    AGENTLAB_TRACE_FILE=/tmp/spans.jsonl python -m agentlab.programs.worker ...

``configure_from_env()`` installs an OpenTelemetry SDK tracer provider (the ``otel`` extra:
``pip install 'agentlab-nats[otel]'``) as the global one, but only if none is set yet and
the environment asks for one: ``OTEL_TRACES_EXPORTER`` (comma-separated exporter names, as
the SDK's own auto-configuration reads them: ``console`` comes with the SDK, ``otlp`` with
``opentelemetry-exporter-otlp``, which agentlab does not install; ``none`` exports nothing)
or ``AGENTLAB_TRACE_FILE`` (one JSON span per line, written as each span ends, so that a
process killed later loses none: what the cross-process test reads). The SDK itself reads
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and each
exporter its ``OTEL_EXPORTER_*`` settings. Every agentlab connection calls it once per
process (``configure_from_env_once``), so ``agentlab.worker``, ``agentlab demo``, ``agentlab
mcp`` and a notebook's ``agentlab.start()`` export with no code. ``AGENTLAB_TRACING=off``
disables it. A provider you set yourself is never replaced.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import trace

from . import tracing

log = logging.getLogger("agentlab")

EXPORTER_GROUP = "opentelemetry_traces_exporter"  # where exporter packages register names
_once = threading.Lock()
_configured_once = False


def configure_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Install an SDK provider exporting where the environment says; True if it did.

    Nothing happens (False) when the environment asks for no exporter, tracing is forced
    off, a provider other than the API's default is set already, or the SDK is missing
    (then a warning says how to install it).
    """
    env = os.environ if environ is None else environ
    if env.get("AGENTLAB_TRACING", "").strip().lower() in tracing.OFF_VALUES:
        return False
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n and n != "none"]
    path = env.get("AGENTLAB_TRACE_FILE", "").strip()
    if not names and not path:
        return False
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return False  # the application configured tracing itself: it stays as it is
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER/AGENTLAB_TRACE_FILE is set but the OpenTelemetry "
                    "SDK is not installed, so no spans are exported: pip install "
                    "'agentlab-nats[otel]'")
        return False
    provider = TracerProvider(resource=Resource.create())
    for name in names:
        exporter = _exporter(name)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    if path:
        # Simple, not batched: each span is on disk when it ends, whatever kills us later.
        provider.add_span_processor(SimpleSpanProcessor(json_lines_exporter(path)))
    trace.set_tracer_provider(provider)
    tracing.reset()
    return True


def configure_from_env_once() -> None:
    """configure_from_env() the first time a process asks; a flag test after that."""
    global _configured_once
    if _configured_once:
        return
    with _once:
        if not _configured_once:
            _configured_once = True
            try:
                configure_from_env()
            except Exception as error:  # a broken exporter must not stop a connection
                log.warning("tracing not configured from the environment: %s: %s",
                            type(error).__name__, error)


def _exporter(name: str) -> Any:
    """The exporter registered under ``name`` (the SDK's own lookup), or None with a warning."""
    found = [ep for ep in entry_points(group=EXPORTER_GROUP) if ep.name == name]
    if not found:
        hint = (" (pip install opentelemetry-exporter-otlp: agentlab does not install it)"
                if name.startswith("otlp") else "")
        log.warning("OTEL_TRACES_EXPORTER names %r, which no installed package provides%s; "
                    "those spans are not exported", name, hint)
        return None
    return found[0].load()()


def json_lines_exporter(path: str) -> Any:
    """An SDK span exporter appending one JSON object per span (``ReadableSpan.to_json``)
    to ``path``; the file is opened per batch, so several processes may share it."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    lock = threading.Lock()

    class JsonLinesSpanExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            lines = "".join(span.to_json(indent=None) + "\n" for span in spans)
            with lock, open(path, "a", encoding="utf-8") as out:
                out.write(lines)  # one write per batch: whole lines, even with O_APPEND peers
            return SpanExportResult.SUCCESS

    return JsonLinesSpanExporter()
