"""Helpers shared by the benchmarks (foundation.py, delegation.py): rounds, percentiles,
machine info and the results table.

A result row is a dict: ``raw_rounds`` and ``agentlab_rounds`` (one figure per round),
``lower_is_better``, and optionally ``target`` (a bound on the ratio agentlab ÷ raw),
``absolute`` (a bound on agentlab's own figure, in ``unit``) and ``target_text``. A row
with both bounds passes only if it meets both; a row with neither is shown as "(info)".
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
from importlib.metadata import version

import nats
from rich.console import Console
from rich.table import Table

import agentlab
from agentlab import find_nats_server

console = Console(width=max(Console().width, 124))  # the tables need ~120 columns


def raw_login(url: str) -> dict:
    """``user=``/``password=`` for a raw nats-py connection to a server agentlab runs (closed:
    it admits only its own login), from this process or $AGENTLAB_NATS_CREDENTIALS."""
    from agentlab.core.credentials import login_for

    found = login_for(url)
    return found.kwargs() if found else {}


def run_raw(url: str, fn, *args):
    """One raw round on a fresh asyncio loop and connection (set-up is not timed)."""
    async def session():
        nc = await nats.connect(url, name="bench-raw", **raw_login(url))
        try:
            return await fn(nc, *args)
        finally:
            await nc.close()
    return asyncio.run(session())


def interleaved(rounds: int, raw, al) -> tuple[list, list]:
    """Alternate which side goes first (ABBA...), so neither always runs in the warmer slot."""
    raws, als = [], []
    for r in range(rounds):
        for side in ((raw, al) if r % 2 == 0 else (al, raw)):
            gc.collect()
            (raws if side is raw else als).append(side())
    return raws, als


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict:
    server = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True,
                            check=False)
    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("model name")), cpu)
    return {"cpus": os.cpu_count(), "cpu": cpu,
            "python": platform.python_version(), "nats-py": version("nats-py"),
            "nats-server": server.stdout.split()[-1], "agentlab": agentlab.__version__}


def spread(values: list[float]) -> str:
    """(max - min) / median of the round figures: how much the machine's noise moved them."""
    if len(values) < 2:
        return "—"
    return f"{(max(values) - min(values)) / statistics.median(values) * 100:.0f}%"


def _verdict(r: dict, al: float, ratio: float | None) -> tuple[str, bool | None]:
    lower = r.get("lower_is_better", False)
    texts, oks = [], []
    if r.get("absolute") is not None:
        bound = r["absolute"]
        texts.append(f"{'<' if lower else '≥'} {bound:g} {r.get('unit', 's')}")
        oks.append(al < bound if lower else al >= bound)
    if r.get("target") is not None:
        texts.append(f"{'≤' if lower else '≥'} {r['target']:.2f}")
        oks.append(ratio is not None and (ratio <= r["target"] if lower else ratio >= r["target"]))
    if not oks:
        return "(info)", None
    return r.get("target_text") or ", ".join(texts), all(oks)


def report(results: dict, info: dict, title: str, caption: str,
           al_label: str = "agentlab sync", raw_label: str = "raw nats-py") -> list[str]:
    """Fill in medians, ratios and verdicts; print the table; return the failed rows.
    ``raw_label`` names the baseline column (benchmarks/tracing.py's is agentlab itself)."""
    table = Table(title=title, caption=caption)
    for col in ("benchmark", raw_label, al_label, "ratio (al÷raw)", "target",
                "result", "spread raw/al"):
        table.add_column(col, justify="left" if col == "benchmark" else "right", no_wrap=True)
    failed = []
    for name, r in results.items():
        raw = statistics.median(r["raw_rounds"]) if r["raw_rounds"] else None
        al = statistics.median(r["agentlab_rounds"])
        ratio = al / raw if raw else None
        target, ok = _verdict(r, al, ratio)
        r.update(raw=raw, agentlab=al, ratio=ratio, passed=ok)
        if ok is False:
            failed.append(name)
        fmt = (lambda v: f"{v:,.3f}") if "(s)" in name else (lambda v: f"{v:,.0f}")
        verdict = {True: "[green]PASS", False: "[bold red]FAIL", None: "—"}[ok]
        table.add_row(name, fmt(raw) if raw else "—", fmt(al),
                      f"{ratio:.2f}" if ratio else "—", target, verdict,
                      f"{spread(r['raw_rounds'])}/{spread(r['agentlab_rounds'])}")
    console.print(table)
    console.print("[dim]" + "  ".join(f"{k}: {v}" for k, v in info.items()))
    return failed


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per side (default 3)")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return p


def main(doc: str, run, title: str, caption: str, al_label: str = "agentlab sync",
         interrupted: str = "interrupted: server stopped",
         raw_label: str = "raw nats-py") -> int:
    """Parse the options, ``run(args, results)``, print the table and the summary."""
    args = parser(doc).parse_args()
    os.environ.pop("AGENTLAB_NATS_URL", None)  # start() must embed its own server

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C

    info = machine()
    info["load before"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results: dict = {}
    try:
        run(args, results)
    except KeyboardInterrupt:
        console.print(f"[yellow]{interrupted}")
        return 130
    info["load after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    failed = report(results, info, title, caption, al_label, raw_label)
    total = sum(1 for r in results.values() if r["passed"] is not None)
    if failed:
        console.print(f"[bold red]SUMMARY: {total - len(failed)}/{total} targets met; "
                      f"FAILED: {'; '.join(failed)}")
    else:
        console.print(f"[bold green]SUMMARY: all {total} targets met")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "quick": args.quick, "results": results}, f, indent=2)
    return 0
