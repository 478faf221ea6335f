"""Lesson 10, Bring your own agent: a model-backed CFO that checks its model's answers.

    lesson10.check(org, cfo_by_model)

The check gives the running organisation's CFO a budget task of its own, with a title no
prompt has had before (so the offline stand-in's first answer to it is the sloppy one), and
waits for the task to end on the live server. In the TASK_LEDGER, the result must carry
`approved` as true or false and `amount` as a number; a dead letter, or a result that still
has the amount as text, says what the learner's handler let through or kept refusing.
"""

from __future__ import annotations

import uuid
from numbers import Real
from typing import Any

from ..org import Organisation, cfo_handler
from .check import CheckResult, Exercise, not_given
from .outcomes import task_outcome

EXERCISE = Exercise("10", "A model-backed CFO")
WAIT = 45.0  # seconds for the budget task to end: a model call or two, a back-off between


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@EXERCISE.check
def check(org: Any, cfo_by_model: Any) -> CheckResult:
    """Does the CFO role answer a new budget task with a checked approved and amount?"""
    if not_given(cfo_by_model):
        return EXERCISE.not_done(
            "there is no `cfo_by_model` handler yet (the cell still says `cfo_by_model = ...`)",
            "write `cfo_prompt(task)` and a handler `cfo_by_model(task, ctx)` that checks the "
            "model's answer, then `put_in_role(\"cfo\", patient(cfo_by_model))`")
    if not isinstance(org, Organisation):
        return EXERCISE.failed(f"the first argument is a {type(org).__name__}, not the "
                               "organisation", "pass the notebook's `org`")
    if not callable(cfo_by_model):
        return EXERCISE.failed(
            f"`cfo_by_model` is a {type(cfo_by_model).__name__}, not a handler",
            "a handler is a function `cfo_by_model(task, ctx)` that returns a dict")
    if org.roles.get("cfo") is cfo_handler:
        return EXERCISE.failed(
            "the CFO role still runs the reference `cfo_handler`, not yours",
            "`put_in_role(\"cfo\", patient(cfo_by_model))` puts your handler in the role")
    running = [agent.instance for agent in org.agents.get("cfo", []) if agent.is_running]
    if not running:
        return EXERCISE.failed(
            "no CFO agent is running: nobody takes the tasks on "
            f"`{org.subjects.tasks('cfo')}`",
            "`put_in_role(\"cfo\", ...)` starts one with your handler")
    title = f"Budget: a stand at the trade fair (check {uuid.uuid4().hex[:6]})"
    task = org.assign(title, to="cfo", requested_by="ceo", details={"amount": 4_000})
    outcome = task_outcome(org.lab, org.org, task.id, timeout=WAIT, subjects=org.subjects)
    if outcome.state == "dead":
        letter = outcome.letter
        assert letter is not None
        return EXERCISE.failed(
            f"the check's budget task {title!r} is a dead letter after {letter.deliveries} "
            f"deliveries: your handler raised on every one, last with {letter.error!r}",
            "raise `UnusableAnswer` only when the answer is unusable (`approved` not true or "
            "false, `amount` not a number), and return the answer otherwise")
    if outcome.state == "pending":
        return EXERCISE.failed(
            f"the check's budget task {title!r} is neither done nor a dead letter after "
            f"{WAIT:.0f} s (the CFO {', '.join(running)} has it, or it waits in AGENT_TASKS)",
            "does your handler return? Call the model once per delivery and return a dict")
    record = outcome.record or {}
    result, deliveries = record.get("result") or {}, record.get("deliveries", 1)
    said = f"the CFO answered {result} on delivery {deliveries}"
    if not isinstance(result.get("approved"), bool):
        return EXERCISE.failed(
            f"{said}: `approved` is {result.get('approved')!r}, not true or false",
            "return `answer[\"approved\"]` once you have checked it is a bool "
            "(`isinstance(answer[\"approved\"], bool)`), else raise `UnusableAnswer`")
    if not _number(result.get("amount")):
        return EXERCISE.failed(
            f"{said}: `amount` is {result.get('amount')!r}, not a number: your handler let "
            "the model's sloppy answer through",
            "check the answer before you return it: raise `UnusableAnswer` when `amount` is "
            "not an int or a float, so that the agent asks again")
    return EXERCISE.passed(
        f"{said}: `approved` is {result['approved']} and `amount` is {result['amount']}, "
        "both checked",
        f"task {title!r}, done by {record.get('instance')}")
