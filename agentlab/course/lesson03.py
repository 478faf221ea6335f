"""Lesson 03, Durable tasks: a flaky handler that fails once and succeeds on the retry.

    lesson03.check(lab, flaky_handler)

The check runs the learner's handler as an agent of a role of its own (`qa`, its own durable
consumer on AGENT_TASKS), delegates one task to it and waits for the task to end on the
live server: done on its second delivery, as the exercise asks. Then it stops the agent and
deletes its consumer.
"""

from __future__ import annotations

import time
from typing import Any

from ..core.subjects import Subjects
from ..org import Agent
from .check import CheckResult, Exercise, not_given
from .outcomes import task_outcome

EXERCISE = Exercise("03", "A flaky handler")
ROLE = "qa"
WAIT = 20.0  # seconds for the task to end: two attempts and the back-off between them


@EXERCISE.check
def check(lab: Any, flaky_handler: Any) -> CheckResult:
    """Does `flaky_handler` fail on the first delivery and succeed on the second?"""
    if not_given(flaky_handler):
        return EXERCISE.not_done(
            "there is no `flaky_handler` yet (the cell still says `flaky_handler = ...`)",
            "write `def flaky_handler(task, ctx):` that raises when `ctx.deliveries == 1` "
            "and returns a dict otherwise")
    if not callable(flaky_handler):
        return EXERCISE.failed(f"`flaky_handler` is a {type(flaky_handler).__name__}, not a "
                               "function", "define it with `def flaky_handler(task, ctx):`")
    subjects = Subjects()
    worker = Agent(lab.connect("course-check-03"), ROLE, "acme", flaky_handler, ack_wait=2,
                   max_deliver=4, instance="qa-check").start()
    try:
        boss = Agent(lab.connect("course-check-03-ceo"), "ceo", "acme")
        task = boss.delegate(ROLE, f"Check the flaky handler {time.strftime('%H:%M:%S')}")
        outcome = task_outcome(lab, "acme", task.id, timeout=WAIT, subjects=subjects)
    finally:
        worker.stop()
        try:
            lab.js.delete_consumer("AGENT_TASKS", ROLE)
        except Exception:  # already gone: what was wanted
            pass
    if outcome.state == "dead":
        return EXERCISE.failed(
            "your handler failed on every delivery: the task was given up on and is in "
            "DEAD_LETTERS", "raise only `if ctx.deliveries == 1`; return a dict after that",
            f"last error: {outcome.letter.error if outcome.letter else '?'}")
    if outcome.state != "completed" or outcome.record is None:
        return EXERCISE.failed(
            f"the task `{task.id}` was not done within {WAIT:.0f} s",
            "return a dict on the second delivery (`ctx.deliveries == 2`)")
    deliveries = int(outcome.record.get("deliveries") or 0)
    if deliveries == 1:
        return EXERCISE.failed(
            "your handler succeeded on the first delivery: the task never came back",
            "raise an exception when `ctx.deliveries == 1`: the agent then naks the task and "
            "JetStream delivers it again")
    if deliveries != 2:
        return EXERCISE.failed(
            f"the task was done on delivery {deliveries}, not on the second",
            "fail on the first delivery only: `if ctx.deliveries == 1: raise ...`")
    return EXERCISE.passed(
        "your handler failed on the first delivery and the task was done on the second, as "
        "the server's task ledger records", f"result: {outcome.record.get('result')!r}")
