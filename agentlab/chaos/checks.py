"""After a run: read what the server kept and what the workers logged, and judge each task.

Every task must be completed exactly once in effect (in CHAOS_EFFECTS and TASK_LEDGER, one
winning attempt) or be a dead letter with a reason. Handler runs are judged as well, from
the workers' own logs (see :mod:`agentlab.chaos.effects`): for every task, the runs that
reached its side effect are put in order, and each run after the first is explained.

- It began after TASK_LEDGER stored the task: the agent ran a task it should have acked
  from the ledger. That is the double run a handler whose effect is not idempotent cannot
  survive, and it must never happen (``ran_after_record``).
- It began while an earlier run was still alive: that run had not ended (its ``ends``
  line is later, or missing) and its process had not been SIGKILLed yet. The server handed
  the task out again (its ack wait ran out, or a restarted server forgot that it had
  delivered it) and the agent ran it next to the first run instead of waiting for that
  run's lease. It must never happen either (``rerun_while_alive``).
- It began before the ledger had the task, after an earlier acting run's process had been
  SIGKILLed (after that run began and before the ledger had the task): the crash lost the
  only evidence that the effect happened, so at-least-once delivery must run it again, once
  the dead run's lease has expired (``rerun_after_death``: expected, counted).
- Otherwise the earlier runs ended, alive, without a record before this one began: their
  agent could not write it (``rerun_unrecorded``: counted).

"Began after" allows :data:`RECORD_RACE` seconds: a run's start is logged by its handler a
moment after its agent read the ledger, and a concurrent run's record can land in between;
that run is in flight, not ignored. A run the agent wrongly starts from a forgotten
delivery begins at least a server restart after the record (``server_down`` is 0.5 s),
and one from an ignored redelivery at least an ack wait after it (2 s), so the allowance
does not hide them. Worker logs and server timestamps share this machine's clock.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import ChaosReport

RECORD_RACE = 0.25


@dataclass
class HandlerRun:
    task_id: str
    attempt: str
    pid: int
    started: float
    deliveries: int
    acted: bool = False
    instance: str = ""
    ended: float | None = None  # None: it never returned (its process was SIGKILLed)

    def who(self) -> str:
        return f"{self.instance}, pid {self.pid}" if self.instance else f"pid {self.pid}"

    def alive_at(self, when: float, deaths: dict[int, float]) -> bool:
        """Was this run still working at ``when`` (it began before, and neither ended nor
        died before)?"""
        end = min(self.ended if self.ended is not None else float("inf"),
                  deaths.get(self.pid, float("inf")))
        return self.started <= when < end


def settled(operation: Any, timeout: float = 30.0) -> Any:
    """``operation()``, again until it works: after a fault the server may still be
    recovering its streams, or a cluster electing their leaders (503, timeouts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return operation()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_all(js: Any, stream: str) -> list[Any]:
    """Every message of ``stream`` (nothing may be written meanwhile); raises on a short read,
    which js.read() returns when a fetch times out, so that the caller tries again."""
    stored = js.stream_info(stream).state.messages
    messages = js.read(stream, timeout=5.0)
    if len(messages) < stored:
        raise RuntimeError(f"read {len(messages)} of the {stored} messages in {stream}")
    return messages


def read_kv(js: Any, bucket: str, stored_at: dict[str, float] | None = None, *,
            org: str | None = None) -> dict[str, Any]:
    """Every live key of a bucket and its JSON value, in one pass over its stream (and, in
    ``stored_at``, when the server stored each one). ``org``: the ledger's keys are
    "{org}.{task_id}"; read the task ids of that org."""
    out: dict[str, Any] = {}
    prefix = f"$KV.{bucket}." + (f"{org}." if org else "")
    for msg in read_all(js, f"KV_{bucket}"):
        key = msg.subject[len(prefix):]
        if msg.headers.get("KV-Operation") in ("DEL", "PURGE"):
            out.pop(key, None)
            continue
        out[key] = json.loads(msg.data)
        if stored_at is not None:
            stored_at[key] = msg.info.timestamp.timestamp()
    return out


class WorkerLogs:
    """The lines every worker process wrote (one file per pid), by task id."""

    def __init__(self, folder: Path):
        self.runs: dict[str, list[HandlerRun]] = defaultdict(list)
        self.applied: dict[str, set[str]] = defaultdict(set)
        self.suppressed = 0
        for path in folder.glob("worker-*.log"):
            pid = int(path.stem.split("-", 1)[1])
            by_attempt: dict[str, HandlerRun] = {}
            for line in path.read_text().splitlines():
                kind, task_id, attempt, *rest = line.split()
                if kind == "attempt":
                    run = HandlerRun(task_id, attempt, pid, float(rest[1]), int(rest[0]),
                                     instance=rest[2] if len(rest) > 2 else "")
                    by_attempt[attempt] = run
                    self.runs[task_id].append(run)
                elif kind == "ends":
                    by_attempt[attempt].ended = float(rest[0])
                elif kind == "acts":
                    by_attempt[attempt].acted = True
                elif kind == "applied":
                    self.applied[task_id].add(attempt)
                elif kind == "suppressed":
                    self.suppressed += 1

    @property
    def handler_runs(self) -> int:
        return sum(len(runs) for runs in self.runs.values())

    def forgotten_deliveries(self) -> int:
        """Tasks handed to a handler as a first delivery more than once."""
        firsts = Counter(run.task_id for runs in self.runs.values() for run in runs
                         if run.deliveries == 1)
        return sum(n - 1 for n in firsts.values() if n > 1)


def judge_runs(report: ChaosReport, logs: WorkerLogs, recorded: dict[str, float],
               deaths: dict[int, float]) -> None:
    """Explain every run that reached a task's effect after an earlier run had (see above)."""
    report.handler_runs = logs.handler_runs
    report.forgotten_deliveries = logs.forgotten_deliveries()
    for task_id, runs in logs.runs.items():
        acting = sorted((r for r in runs if r.acted), key=lambda r: r.started)
        report.acting_runs += len(acting)
        record = recorded.get(task_id, float("inf"))
        for n, run in enumerate(acting[1:], start=1):
            alive = [e for e in acting[:n] if e.alive_at(run.started, deaths)]
            if run.started > record + RECORD_RACE:
                report.ran_after_record.append(
                    f"{task_id}: run {run.attempt} (pid {run.pid}, delivery "
                    f"{run.deliveries}) began {run.started - record:.2f} s after the ledger "
                    "had the task")
            elif alive:
                first = alive[0]
                report.rerun_while_alive.append(
                    f"{task_id}: run {run.attempt} ({run.who()}, delivery {run.deliveries}) "
                    f"began {run.started - first.started:.2f} s into run {first.attempt} "
                    f"({first.who()}, delivery {first.deliveries}), which was still alive")
            elif any(e.started < deaths.get(e.pid, float("inf")) < min(record, run.started)
                     for e in acting[:n]):
                report.rerun_after_death += 1
            else:
                report.rerun_unrecorded += 1


def check(run: Any) -> None:
    """Fill ``run.report`` from the server's streams and buckets and the workers' logs."""
    from ..org.agent import LEDGER_BUCKET, TASK_STREAM
    from ..org.deadletters import DLQ_STREAM
    from ..org.models import DeadLetter
    from .effects import EFFECTS_BUCKET, ORG, STATS_BUCKET

    report, js, config = run.report, run.admin.js, run.config
    try:
        settled(run.office.sweep)  # anything whose advisory was missed
    except Exception as error:
        report.problems.append(f"final sweep failed: {type(error).__name__}: {error}")
    effects = settled(lambda: read_kv(js, EFFECTS_BUCKET))
    recorded: dict[str, float] = {}  # task id -> when the ledger stored it: completed
    ledger = settled(lambda: read_kv(js, LEDGER_BUCKET, recorded, org=ORG))
    stats = settled(lambda: read_kv(js, STATS_BUCKET))
    letters: dict[str, list[Any]] = defaultdict(list)
    for msg in settled(lambda: read_all(js, DLQ_STREAM)):
        letter = DeadLetter.model_validate_json(msg.data)
        try:
            task_id = json.loads(letter.payload)["id"]
        except (ValueError, KeyError, TypeError):
            report.problems.append(f"a dead letter that is not a chaos task: {letter!r}")
            continue
        letters[task_id].append(letter)
        report.letter_reasons[letter.reason] += 1
    leftover = settled(lambda: js.stream_info(TASK_STREAM)).state.messages
    if leftover:
        report.problems.append(f"{leftover} tasks still in {TASK_STREAM}")

    logs = WorkerLogs(run.logs)
    judge_runs(report, logs, recorded, run.deaths)
    report.suppressed_by_effect_store = logs.suppressed
    report.suppressed_by_ledger = sum(int(v.get("acked_from_ledger", 0))
                                      for v in stats.values())
    report.lease_waits = sum(int(v.get("lease_waits", 0)) for v in stats.values())
    report.leases_lost = sum(int(v.get("leases_lost", 0)) for v in stats.values())
    report.lease_naks = sum(int(v.get("lease_naks", 0)) for v in stats.values())

    published = set(run.published)
    report.tasks = len(published)
    must_fail = {f"chaos-{i:06d}" for i in range(config.tasks)
                 if config.fail_every and i % config.fail_every == config.fail_every - 1}
    for task_id in sorted(published):
        winners = set(logs.applied.get(task_id, ()))
        if task_id in effects:
            winners.add(effects[task_id].get("attempt"))
        if len(winners) > 1:
            report.applied_twice.append(task_id)
        if task_id in effects and task_id in letters:
            # Applied once, then dead-lettered all the same: its ack or its ledger entry
            # did not get through within max_deliver attempts (a long leader election).
            # A redrive finds the effect (or the ledger entry) and does not repeat it.
            report.dead_lettered_after_effect += 1
            letter = letters[task_id][0]
            report.after_effect.append(
                f"{task_id}: {letter.reason} after {letter.deliveries} deliveries: "
                f"{letter.error}; {'in' if task_id in ledger else 'not in'} the ledger")
        if task_id in effects and task_id in ledger:
            report.completed += 1
            if ledger[task_id].get("result", {}).get("attempt") not in winners:
                report.problems.append(f"{task_id}: the ledger names another attempt "
                                       "than the effect")
        elif task_id in letters:
            report.dead_lettered += 1
            if any(not (letter.reason and letter.error) for letter in letters[task_id]):
                report.problems.append(f"{task_id}: dead letter without a reason")
        else:
            report.lost.append(task_id)
            if task_id in effects or task_id in ledger:
                report.problems.append(f"{task_id}: effect {task_id in effects}, ledger "
                                       f"{task_id in ledger}, but not completed")
        if task_id in must_fail and task_id not in letters:
            report.problems.append(f"{task_id} should have failed into the DLQ")
    strays = (set(effects) | set(ledger) | set(letters)) - published
    if strays:
        report.problems.append(f"{len(strays)} ids nobody published, e.g. {min(strays)}")
    if len(run.published) != len(published):
        report.problems.append("the publisher recorded a task twice")
    if len(published) != config.tasks:
        report.problems.append(f"only {len(published)} of {config.tasks} tasks were published")

    for role in config.roles:
        info = settled(lambda role=role: js.consumer_info(TASK_STREAM, role))
        role_tasks = sum(1 for t in published if int(t[6:]) % len(config.roles)
                         == config.roles.index(role))
        report.redeliveries += max(0, info.delivered.consumer_seq - role_tasks)
    _timings(report, recorded)


def _timings(report: ChaosReport, recorded: dict[str, float]) -> None:
    finished = sorted(recorded.values())
    for restart in report.restarts:
        later = next((t for t in finished if t >= restart.restart_called), None)
        restart.recovery = None if later is None else later - restart.restart_called
        if restart.recovery is None:
            report.problems.append(f"nothing completed after server restart {restart.number}")
    if len(finished) > 1:
        gap, at = max((b - a, a) for a, b in itertools.pairwise(finished))
        report.longest_gap, report.longest_gap_at = gap, at - report.started
