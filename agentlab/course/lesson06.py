"""Lesson 06, Retries and dead letters: enough attempts to outlast an outage, and no more.

    lesson06.check(treasury, payment)

The check computes the right answer from the agent's own back-off (`retry_delay`): attempt
`n` comes `retry_delay(1) + ... + retry_delay(n - 1)` seconds after the first, so the smallest
`max_deliver` whose last attempt falls after the outage. Then it waits for the learner's
payment task to end on the live server, in the TASK_LEDGER (done, on which delivery) or in
DEAD_LETTERS (given up, with its error), and compares.
"""

from __future__ import annotations

from typing import Any

from ..org import Agent, Task, retry_delay
from .check import CheckResult, Exercise, not_given
from .outcomes import task_outcome

EXERCISE = Exercise("06", "Attempts that outlast an outage")
OUTAGE = 2.5  # seconds, as the exercise says
WAIT = 30.0   # seconds for the payment to end: every attempt, and an ack wait to spare


def last_attempt(max_deliver: int) -> float:
    """Seconds from the first attempt to the last, with the agent's back-off."""
    return sum(retry_delay(k) for k in range(1, max_deliver))


def attempts_needed(outage: float = OUTAGE) -> int:
    """The smallest max_deliver whose last attempt comes after `outage` seconds."""
    return next(n for n in range(1, 100) if last_attempt(n) > outage)


@EXERCISE.check
def check(treasury: Any, payment: Any, outage: float = OUTAGE) -> CheckResult:
    """Did the payment complete on its last attempt, with the smallest max_deliver that can?"""
    if not_given(treasury, payment):
        return EXERCISE.not_done(
            "there is no `treasury` agent or `payment` task yet (the cell still says `...`)",
            "start `treasury = Agent(lab.connect(\"treasurer-1\"), \"treasurer\", \"acme\", "
            "treasurer, max_deliver=..., ack_wait=5).start()`, set `outage_ends`, then "
            "`payment = cfo.delegate(\"treasurer\", ...)`")
    if not isinstance(treasury, Agent):
        return EXERCISE.failed(f"`treasury` is a {type(treasury).__name__}, not an Agent",
                               "`Agent(...).start()` returns the agent")
    if not isinstance(payment, Task):
        return EXERCISE.failed(
            f"`payment` is a {type(payment).__name__}, not the Task `cfo.delegate()` returns",
            "`payment = cfo.delegate(\"treasurer\", \"Pay the Tokyo supplier\", {...})`")
    if treasury.role != "treasurer" or payment.role != "treasurer":
        return EXERCISE.failed(
            f"the agent works the role `{treasury.role}` and the payment went to "
            f"`{payment.role}`; the exercise's role is `treasurer` for both",
            "`Agent(..., \"treasurer\", ...)` and `cfo.delegate(\"treasurer\", ...)`")
    needed, chosen = attempts_needed(outage), treasury.max_deliver
    timing = (f"max_deliver={chosen}: last attempt at +{last_attempt(chosen):.1f} s; "
              f"max_deliver={needed}: at +{last_attempt(needed):.1f} s")
    outcome = task_outcome(treasury.client, payment.org, payment.id, timeout=WAIT,
                           subjects=treasury.subjects)
    if outcome.state == "dead":
        letter = outcome.letter
        assert letter is not None
        return EXERCISE.failed(
            f"{payment.title!r} is a dead letter in DEAD_LETTERS ({letter.reason}, after "
            f"{letter.deliveries} deliveries, last error {letter.error!r}): with "
            f"max_deliver={chosen} the last attempt comes at +{last_attempt(chosen):.1f} s, "
            f"inside the {outage} s outage",
            f"the last attempt must come after the outage: max_deliver={needed}, whose last "
            f"attempt is at +{last_attempt(needed):.1f} s", timing)
    if outcome.state == "pending":
        return EXERCISE.failed(
            f"{payment.title!r} is neither done (TASK_LEDGER) nor a dead letter after "
            f"{WAIT:.0f} s: it is still in AGENT_TASKS, for the consumer `{treasury.role}`",
            f"is your treasurer running (`treasury.is_running` is {treasury.is_running})? "
            "Start it before you delegate")
    record = outcome.record or {}
    deliveries = int(record.get("deliveries", 0))
    if chosen > needed:
        return EXERCISE.failed(
            f"{payment.title!r} was done on delivery {deliveries}, with max_deliver={chosen}; "
            f"{needed} attempts are enough, and a task that always fails would be retried "
            f"for {last_attempt(chosen):.1f} s instead of {last_attempt(needed):.1f} s",
            "pick the smallest max_deliver whose last attempt comes after the outage", timing)
    if deliveries < needed:
        return EXERCISE.failed(
            f"{payment.title!r} was done on delivery {deliveries}: your treasurer did not "
            f"fail for the {outage} s of the outage",
            "set `outage_ends = time.monotonic() + 2.5` just before you delegate, and raise "
            "in the handler while `time.monotonic() < outage_ends`", timing)
    return EXERCISE.passed(
        f"{payment.title!r} was done on delivery {deliveries} of {chosen}, after the "
        f"{outage} s outage, and is not in DEAD_LETTERS: max_deliver={needed} is the "
        "smallest that outlasts it",
        f"result: {record.get('result')}", timing)
