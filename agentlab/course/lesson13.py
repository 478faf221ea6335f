"""Lesson 13, A hundred agents at flat cost: a role that costs nothing until work arrives.

    lesson13.check(audit, backlog)

``audit`` is the learner's autoscaler of the ``audit`` role, ``backlog`` the tasks they gave
it. The check reads the autoscaler's settings (at zero while at most 5 tasks wait, one
replica per 10 waiting, at most 3, back to zero 2 s after the queue was last active), its
decision history (the backlog met with the replicas KEDA's rule gives, back at zero after
the cooldown) and, on the live server, where each task of the backlog ended
(the task ledger).
"""

from __future__ import annotations

import math
from typing import Any

from ..org import Autoscaler
from .check import CheckResult, Exercise, listing, not_given
from .outcomes import task_outcome

EXERCISE = Exercise("13", "A role at zero until work arrives")
ROLE = "audit"
WANTED = {"activation_lag": 5, "lag_threshold": 10, "max_replicas": 3, "cooldown": 2.0}
WAIT = 10.0  # seconds for the backlog's last tasks to reach the ledger


@EXERCISE.check
def check(audit: Any, backlog: Any) -> CheckResult:
    """Did `audit` wake the role for the backlog, do the work, and go back to zero?"""
    if not_given(audit, backlog):
        return EXERCISE.not_done(
            "there is no `audit` autoscaler or no `backlog` yet (the cell still says `= ...`)",
            "`audit = org.autoscale('audit', ...)`, then `backlog = [org.assign(..., "
            "to='audit') for n in range(25)]`, then `wait_until_zero(audit)`")
    if not isinstance(audit, Autoscaler):
        return EXERCISE.failed(f"`audit` is a {type(audit).__name__}, not an Autoscaler",
                               "`org.autoscale('audit', ...)` returns one")
    if audit.role != ROLE:
        return EXERCISE.failed(f"`audit` scales the role `{audit.role}`, not `{ROLE}`",
                               f"`org.autoscale('{ROLE}', ...)`")
    wrong = [f"{name} is {getattr(audit, name)!r}, the exercise asks for {value!r}"
             for name, value in WANTED.items() if getattr(audit, name) != value]
    if wrong:
        return EXERCISE.failed(f"{len(wrong)} setting(s) differ from the exercise's",
                               "pass them to `org.autoscale`: " + ", ".join(
                                   f"{k}={v!r}" for k, v in WANTED.items()), *wrong)
    tasks = list(backlog) if isinstance(backlog, (list, tuple)) else []
    if len(tasks) <= audit.activation_lag:
        return EXERCISE.failed(
            f"`backlog` holds {len(tasks)} task(s): at most {audit.activation_lag} waiting "
            "leave the role at zero", "give it more than 5 tasks, e.g. 25")
    history = audit.history
    # The first tick that saw the backlog: from zero that is an `activate`; a role that an
    # earlier autoscaler had left running is scaled from where it was.
    woken = next((d for d in history if d.lag is not None and d.lag > audit.activation_lag),
                 None)
    if woken is None:
        return EXERCISE.not_done(
            f"your autoscaler has not seen more than {audit.activation_lag} tasks waiting yet",
            "assign the backlog to `audit`, then `wait_until_zero(audit)`")
    expected = min(audit.max_replicas, math.ceil((woken.lag or 0) / audit.lag_threshold))
    if woken.wanted != expected:
        return EXERCISE.failed(f"{woken.wanted} replica(s) wanted for a lag of {woken.lag}; "
                               f"KEDA's rule gives {expected}",
                               "this should not happen: read `audit.history`")
    later = history[history.index(woken):]
    zero = next((d for d in later if d.action == "scale_to_zero"), None)
    if zero is None or audit.replicas() != 0:
        return EXERCISE.not_done(
            f"the role runs {audit.replicas()} replica(s): not back at zero yet",
            "`wait_until_zero(audit)` waits out the cooldown (2 s after the queue was last "
            "active)")
    client = audit.client
    org = getattr(tasks[0], "org", "acme")
    pending = [t.id for t in tasks
               if task_outcome(client, org, t.id, timeout=WAIT).state != "completed"]
    if pending:
        return EXERCISE.failed(f"{len(pending)} task(s) of the backlog are not in the ledger",
                               "every task must be done before the role goes back to zero: "
                               "did the role have a handler?", listing(pending))
    top = max(d.wanted for d in later)
    start = "woken from zero" if woken.running == 0 else f"scaled from {woken.running}"
    return EXERCISE.passed(
        f"{start} by a lag of {woken.lag} to {woken.wanted} replica(s) (at most {top}), all "
        f"{len(tasks)} tasks done, and back to zero after the cooldown",
        f"decisions: {', '.join(f'{d.action} {d.running}→{d.wanted}' for d in audit.decisions)}")
