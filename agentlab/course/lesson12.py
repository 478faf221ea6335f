"""Lesson 12, An LLM joins the organisation: give a task up, through MCP, with a reason.

    lesson12.check(org, budget, reason)

The learner, playing the LLM in an MCP session, takes the CFO's budget task (`next_task`)
and gives it up (`fail_task(..., retry=False)`). The check looks on the live server for
where that task ended: a dead letter in DEAD_LETTERS, `given_up`, whose error holds the
learner's reason, is right; a record in the TASK_LEDGER means it was completed instead; and
neither means it still waits in the CFO's queue (or is held by a hub), so the exercise is
not done yet.
"""

from __future__ import annotations

from typing import Any

from ..org import Organisation, Task
from .check import CheckResult, Exercise, not_given
from .outcomes import task_outcome

EXERCISE = Exercise("12", "Give the budget up, with a reason")
SETTLE = 2.0  # seconds for a dead letter being filed as the check starts


@EXERCISE.check
def check(org: Organisation, budget: Task, reason: Any) -> CheckResult:
    """Is `budget` a dead letter, given up with `reason`? Says what is missing if not."""
    if not_given(reason) or (isinstance(reason, str) and not reason.strip()):
        return EXERCISE.not_done(
            "there is no `reason` yet (the cell still says `reason = ...`)",
            "write it first, e.g. `reason = \"far above the quarter's budget\"`, then take the "
            "task with next_task and give it up with fail_task")
    if not isinstance(reason, str):
        return EXERCISE.failed(f"`reason` is a {type(reason).__name__}, not a sentence",
                               "a reason is a string a person reading the dead letters "
                               "understands")
    outcome = task_outcome(org.lab, org.org, budget.id, timeout=SETTLE, subjects=org.subjects)
    if outcome.state == "completed":
        return EXERCISE.failed(
            f"{budget.title!r} was completed (the TASK_LEDGER holds its record), not given up",
            "run the exercise's first cell again for a new task, then call `fail_task`, not "
            "`complete_task`")
    if outcome.state == "pending":
        return EXERCISE.not_done(
            f"{budget.title!r} is not in DEAD_LETTERS: it is still in the CFO's queue on "
            f"`{org.subjects.tasks('cfo')}` (or held by a hub)",
            "in one session, `held = next_task(role=\"cfo\")`, then `fail_task(id=held[\"id\"], "
            "error=reason, retry=False)`. With retry=True it goes back to the queue; a task "
            "taken and left comes back after its ack wait (30 s)")
    letter = outcome.letter
    assert letter is not None
    if letter.reason != "given_up":
        return EXERCISE.failed(
            f"{budget.title!r} is a dead letter, but because of {letter.reason!r}, not given up",
            "`fail_task(..., retry=False)` gives up at once")
    if reason not in letter.error:
        return EXERCISE.failed(
            f"the dead letter says {letter.error!r}, which does not contain your reason "
            f"{reason!r}",
            "pass `error=reason` to fail_task")
    return EXERCISE.passed(
        f"{budget.title!r} is a dead letter, given up on delivery {letter.deliveries}, with "
        f"the error {letter.error!r}",
        "an operator sees it with `agentlab dlq list` (or the hub's list_dead_letters), and "
        "could send it round again with redrive_dead_letter")
