"""The handler every chaos worker runs: one side effect per task, and a log of every run.

The effect is a KV ``create`` of ``CHAOS_EFFECTS[task_id]``, atomic on the server: the first
create stores the key, every later one is refused. Each run also writes lines to a log file
of its own process, outside the server (a SIGKILL does not lose what was written)::

    attempt <task> <attempt> <deliveries> <started> <instance>   the handler began
    acts <task> <attempt>                              it reached the effect
    applied|suppressed <task> <attempt>                its create won, or found another's
    ends <task> <attempt> <ended>                      the handler returned (or raised)

``acts`` marks where a handler whose effect is *not* idempotent (an e-mail, a payment
without an idempotency key) would act: the checker counts those per task id, so a handler
that the agent runs twice shows up even though the create keeps the effect single. The
start and end times (and the pid in the file's name, which the suite's ``deaths`` know)
tell whether an earlier run was still alive when a repeat began.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

EFFECTS_BUCKET = "CHAOS_EFFECTS"
STATS_BUCKET = "CHAOS_STATS"
LOG_DIR_ENV = "AGENTLAB_CHAOS_LOG"
HANDLER = "agentlab.chaos.effects:effect_handler"
ORG = "chaos"


class ChaosFailure(RuntimeError):
    """The error of the tasks that are meant to fail (they must end as dead letters)."""


_effects: dict[int, Any] = {}
_log_fd: list[int] = []


def log_line(line: str) -> None:
    """One line in this process's own log, outside the server: survives SIGKILL."""
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return
    if not _log_fd:
        _log_fd.append(os.open(Path(folder) / f"worker-{os.getpid()}.log",
                               os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    os.write(_log_fd[0], (line + "\n").encode())  # one write of one line: atomic with O_APPEND


async def _persist(operation: Any, ctx: Any, limit: float = 30.0, each: float = 2.0) -> Any:
    """Repeat ``operation()`` until the server answers: it may be restarting. Each try is
    given up after ``each`` seconds (a request caught in a reconnect can wait for good),
    so that the run keeps saying it is working instead of looking hung to its lease."""
    deadline = time.monotonic() + limit
    while True:
        try:
            return await asyncio.wait_for(operation(), each)
        except Exception:
            if time.monotonic() > deadline or ctx.cancelled:
                raise
            ctx.in_progress()  # buffered while the server is away; harmless
            await asyncio.sleep(0.1)


async def effect_handler(task: Any, ctx: Any) -> dict[str, Any]:
    """Apply this task's one side effect: create ``CHAOS_EFFECTS[task.id]`` (atomic)."""
    from ..wire.messages import new_id

    attempt = new_id()
    log_line(f"attempt {task.id} {attempt} {ctx.deliveries} {time.time():.6f} "
             f"{ctx.agent.instance}")
    try:
        return await _apply(task, ctx, attempt)
    finally:  # a SIGKILL writes no end: the run lived until its process died
        log_line(f"ends {task.id} {attempt} {time.time():.6f}")


async def _apply(task: Any, ctx: Any, attempt: str) -> dict[str, Any]:
    from ..core.stores import KeyValueBucket

    if task.details.get("always_fail"):
        raise ChaosFailure(f"task {task.id} is meant to fail")
    client = ctx.agent.client
    effects = _effects.get(id(client))
    if effects is None:
        effects = await _persist(lambda: KeyValueBucket.adeclare(client, EFFECTS_BUCKET), ctx)
        _effects[id(client)] = effects
    # Some work before and after the effect, so that a SIGKILL can land on either side.
    work = float(task.details.get("work", 0.0)) / 2
    await asyncio.sleep(work)

    def value() -> dict[str, Any]:
        return {"attempt": attempt, "instance": ctx.agent.instance, "pid": os.getpid(),
                "deliveries": ctx.deliveries, "at": time.time()}

    log_line(f"acts {task.id} {attempt}")
    created = await _persist(lambda: effects.acreate(task.id, value()), ctx)
    if created:
        winner = {"attempt": attempt, "instance": ctx.agent.instance}
    else:
        winner = await _persist(lambda: effects.aget(task.id), ctx) or {}
    applied = winner.get("attempt") == attempt  # True too if our own create's reply was lost
    log_line(f"{'applied' if applied else 'suppressed'} {task.id} {attempt}")
    await asyncio.sleep(work)
    return {"attempt": winner.get("attempt"), "by": winner.get("instance"),
            "finished_at": time.time()}
