"""What tracing costs a delegation: off, the default (no SDK configured) and on, one process.

    make bench                                   # foundation, delegation, this, dashboard
    python -m benchmarks.tracing --quick         # smoke test
    python -m benchmarks.tracing --json out.json

The flow is benchmarks/delegation.py's latency flow (one task in flight, a default Agent,
from building the task to seeing its completion) in four modes, switched in this process
between rounds (agentlab.telemetry decides again at the next publish):

* plain: ``AGENTLAB_TRACING=off``, the baseline column of every row;
* off again: the same mode measured a second time, so its ratio is the noise floor;
* the default: the OpenTelemetry API installed and no SDK provider set (what a user who
  never heard of tracing runs; the same code path as "off", so its ratio is noise too);
* on: an SDK TracerProvider with a BatchSpanProcessor and an exporter that drops the
  spans, given to agentlab with ``telemetry.enable(provider)``.

Each round runs every mode, in an order rotated from round to round (as common.interleaved
alternates two sides), so a burst of load on this shared machine is not charged to one
mode. Two figures that do not depend on the noise: how many times a delegation asks
``tracing.tracer()`` and what one call costs with tracing off; their product is what the
default adds to a delegation, and the spans per delegation with tracing on.
"""

from __future__ import annotations

import gc
import os
import sys
import timeit
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import agentlab
from agentlab import telemetry
from agentlab.org import TaskLedger, declare_reference_streams
from agentlab.telemetry import tracing

from .common import console, main, pct
from .delegation import COMPLETED, al_latency

TITLE = "Tracing's cost: delegation latency (benchmarks/delegation.py) off, not configured, on"
CAPTION = ("ratio = mode ÷ plain (AGENTLAB_TRACING=off too, measured separately, same "
           "process): the 'tracing off' row is the noise floor. LOWER is better.\n"
           "Figures are medians of per-round p50s; spread = (max - min) / median of the "
           "rounds.")
MODES = ("plain", "off", "default", "on")


class Discard(SpanExporter):
    """Drops every span (counting them): the SDK's work without an exporter's I/O."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def use(mode: str, provider: TracerProvider) -> None:
    if mode in ("plain", "off"):
        os.environ["AGENTLAB_TRACING"] = "off"
        telemetry.reset()
    else:
        os.environ.pop("AGENTLAB_TRACING", None)
        telemetry.enable(provider if mode == "on" else None)
    assert telemetry.tracing_enabled() == (mode == "on")


def checks_per_delegation(ceo, worker, completions) -> float:
    """How many times one delegation asks tracer() (a counting stand-in, tracing off)."""
    calls, real = [0], tracing.tracer

    def counting():
        calls[0] += 1
        return real()
    tracing.tracer = counting  # every call site looks it up on the module at call time
    try:
        al_latency(ceo, worker, completions, 20, 0)
    finally:
        tracing.tracer = real
    return calls[0] / 20


def run(args, results: dict) -> None:
    quick, rounds = args.quick, args.rounds or (1 if args.quick else 3)
    n_lat, warm = (300, 50) if quick else (2_000, 200)
    exporter = Discard()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    server = agentlab.EmbeddedServer(max_memory="1GB").start()
    clients: list[agentlab.Client] = []
    try:
        ceo = agentlab.Client.open(server.url, name="bench-ceo")
        worker = agentlab.Client.open(server.url, name="bench-cto")
        clients += [ceo, worker]
        declare_reference_streams(ceo)
        TaskLedger.declare(ceo)
        completions = ceo.subscribe(COMPLETED.format("bench-al"))

        console.print(f"[dim]delegation latency: {rounds} round(s) × {n_lat} tasks per mode "
                      f"({', '.join(MODES)}), rotated…")
        p50s: dict[str, list[float]] = {mode: [] for mode in MODES}
        delegations_on = 0
        for r in range(rounds):
            for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
                use(mode, provider)
                gc.collect()
                p50s[mode].append(pct(al_latency(ceo, worker, completions, n_lat, warm), 0.5))
                delegations_on += (warm + n_lat) if mode == "on" else 0
        provider.force_flush()

        use("default", provider)
        per_delegation = checks_per_delegation(ceo, worker, completions)
        # One check with tracing off (the default): the module attribute read and compare.
        check_ns = min(timeit.repeat(tracing.tracer, number=200_000, repeat=5)) / 200_000 * 1e9
        plain = p50s["plain"]
        rows = (("p50, tracing off (AGENTLAB_TRACING=off) (µs)", "off", {}),
                ("p50, SDK not configured (the default) (µs)", "default", {"target": 1.02}),
                ("p50, tracing on (SDK, batch, discard) (µs)", "on", {"target": 1.15}))
        for name, mode, extra in rows:
            results[name] = {"lower_is_better": True, **extra, "raw_rounds": plain,
                             "agentlab_rounds": p50s[mode]}
        results["  tracer() calls per delegation"] = {
            "raw_rounds": [], "agentlab_rounds": [per_delegation]}
        results["  one check, tracing off (ns)"] = {
            "raw_rounds": [], "agentlab_rounds": [check_ns]}
        results["  their share of a plain p50 (ppm)"] = {
            "raw_rounds": [], "agentlab_rounds": [
                per_delegation * check_ns / 1e3 / min(plain) * 1e6]}
        results["  spans per delegation, on"] = {
            "raw_rounds": [], "agentlab_rounds": [exporter.spans / max(1, delegations_on)]}
    finally:
        os.environ.pop("AGENTLAB_TRACING", None)
        telemetry.reset()
        for client in clients:
            client.close()
        server.stop()
        provider.shutdown()


if __name__ == "__main__":
    sys.exit(main(__doc__, run, TITLE, CAPTION, "mode", raw_label="plain (off)"))
