"""Lesson 00, Start here: a goal of your own, and its three completions.

    lesson00.check(org, my_goal, mine)

The check asks the live server where each task ended: the goal and the two tasks the CEO
handed on must be done in the organisation's TASK_LEDGER, and `mine` must hold the three
completions of *this* goal (their `correlation_id` is the goal's id), one per role: the
CEO's, the CTO's and the CFO's.
"""

from __future__ import annotations

from typing import Any

from .check import CheckResult, Exercise, listing, not_given
from .outcomes import task_outcome

EXERCISE = Exercise("00", "A goal of your own")
ROLES = ("ceo", "cto", "cfo")
WAIT = 15.0  # seconds for a task to be found done: a loaded machine


@EXERCISE.check
def check(org: Any, my_goal: Any, mine: Any) -> CheckResult:
    """Are `mine` the three completions of `my_goal`, each done on the server?"""
    if not_given(my_goal, mine):
        return EXERCISE.not_done(
            "there is no `my_goal` or no `mine` yet (the cell still says `= ...`)",
            "`my_goal = org.assign(\"...\")`, then collect the events from `done` whose "
            "`correlation_id` is `my_goal.id` into a list `mine`")
    goal_id = getattr(my_goal, "id", None)
    if goal_id is None:
        return EXERCISE.failed(
            f"`my_goal` is a {type(my_goal).__name__}, not the task `org.assign()` returns",
            "keep what `org.assign(...)` returns: `my_goal = org.assign(\"Open an office\")`")
    if not isinstance(mine, list) or not all(isinstance(e, dict) for e in mine):
        return EXERCISE.failed(
            "`mine` should be a list of completion events (dicts, from `msg.json()`)",
            "append `done.next(timeout=10).json()` to `mine` for each completion of your goal")
    strangers = [e for e in mine if e.get("correlation_id") != goal_id]
    if strangers:
        return EXERCISE.failed(
            f"{len(strangers)} of the {len(mine)} events in `mine` belong to another goal, "
            f"not to yours (`{goal_id}`)",
            "keep an event only `if event[\"correlation_id\"] == my_goal.id`",
            *(f"{e.get('role')}: correlation_id `{e.get('correlation_id')}`"
              for e in strangers[:3]))
    roles = [str(e.get("role")) for e in mine]
    missing = [role for role in ROLES if role not in roles]
    if missing:
        return EXERCISE.failed(
            f"`mine` holds {len(mine)} of the 3 completions: the {listing(missing)} one(s) "
            "are missing",
            "the goal is done by three agents: keep reading `done` until you have one "
            "completion from each of the CEO, the CTO and the CFO (`while len(mine) < 3`)")
    if len(mine) != len(set(e.get("task_id") for e in mine)) or len(mine) > 3:
        return EXERCISE.failed(f"`mine` holds {len(mine)} events, some of them twice",
                               "collect each completion once: three in all")
    lab = org.lab
    for event in mine:
        outcome = task_outcome(lab, org.org, str(event.get("task_id")), timeout=WAIT,
                               subjects=org.subjects)
        if outcome.state != "completed":
            return EXERCISE.failed(
                f"the server's task ledger has the {event.get('role')}'s task "
                f"`{event.get('task_id')}` as {outcome.state}, not done",
                "take the events from `done`, the subject where agents announce what they "
                "finished, rather than writing them yourself")
    cto = next(e for e in mine if e.get("role") == "cto")
    decision = (cto.get("result") or {}).get("decision", "")
    return EXERCISE.passed(
        f"your goal `{goal_id}` was done by the CEO, the CTO and the CFO, and the server's "
        "ledger holds all three tasks as done",
        *(f"{e['role']}: {e.get('title')!r}" for e in mine),
        f"the CTO decided: {decision!r}")
