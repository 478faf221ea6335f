"""Lesson 01, Subjects and wildcards: the observer's pattern, tried on the live server.

    lesson01.check(lab, observer_pattern)

The check subscribes to the learner's pattern on a connection of its own and publishes the
eight subjects of the exercise, then compares what the server delivered with what an
observer of every organisation's task activity must receive. So that no stream stores its
test messages, it moves the pattern and the subjects under a root of its own (the first
token, `genbrain`, replaced): the server's matching is the same.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..core.subjects import Subjects, check_subscribe_subject
from ..errors import BadSubject
from .check import CheckResult, Exercise, not_given, wait_until

EXERCISE = Exercise("01", "An observer of every organisation's tasks")
WAIT = 2.0  # seconds for the server to deliver what it will


def subjects(s: Subjects | None = None) -> tuple[list[str], list[str]]:
    """The subjects the observer should receive, and those it should not."""
    s = s or Subjects()
    see = [s.tasks_created("acme"), s.tasks_completed("acme"), s.tasks_created("globex"),
           s.tasks_completed("initech")]
    avoid = [s.org_events("acme"), s.org_metrics("globex"), s.tasks("cto"), s.system_health()]
    return see, avoid


def _moved(subject: str, root: str, private: str) -> str:
    head, _, rest = subject.partition(".")
    return f"{private}.{rest}" if head == root and rest else subject


@EXERCISE.check
def check(lab: Any, observer_pattern: Any) -> CheckResult:
    """Does a subscription to `observer_pattern` get exactly the task activity?"""
    if not_given(observer_pattern):
        return EXERCISE.not_done(
            "there is no `observer_pattern` yet (the cell still says `observer_pattern = ...`)",
            "write a pattern that starts `genbrain.org.` and has a wildcard where `{org}` goes")
    if not isinstance(observer_pattern, str):
        return EXERCISE.failed(f"`observer_pattern` is a {type(observer_pattern).__name__}, "
                               "not a string", "write the pattern in quotes")
    try:
        check_subscribe_subject(observer_pattern)
    except BadSubject as error:
        return EXERCISE.failed(f"the server would refuse `{observer_pattern}`: {error}",
                               "tokens are separated by single dots; `*` stands for one "
                               "whole token, `>` only at the end")
    s = Subjects()
    see, avoid = subjects(s)
    private = f"check01{uuid.uuid4().hex[:8]}"
    pattern = _moved(observer_pattern, s.root, private)
    if pattern == observer_pattern and observer_pattern.split(".")[0] not in ("*", ">"):
        return EXERCISE.failed(
            f"`{observer_pattern}` does not start with `{s.root}`: it can match none of the "
            "organisation's subjects", f"start the pattern with `{s.root}.org.`")
    client = lab.connect("course-check-01")
    try:
        sub = client.subscribe(pattern)
        client.flush()
        for subject in see + avoid:
            client.publish(_moved(subject, s.root, private), {"check": subject})
        client.flush()
        expected = len([x for x in see])
        wait_until(lambda: sub.received >= expected, WAIT)
        got = {m.json()["check"] for m in sub.messages(timeout=0.3)
               if m.subject.startswith(f"{private}.")}
    finally:
        client.close()
    missed = [x for x in see if x not in got]
    extra = [x for x in avoid if x in got]
    if missed:
        return EXERCISE.failed(
            f"your subscription received {len(see) - len(missed)} of the {len(see)} messages: "
            + "; ".join(f"`{x}` is not matched by `{observer_pattern}`" for x in missed),
            "an observer of *every* organisation needs `*` where the org id goes "
            "(`genbrain.org.*...`), and the tasks' last token (created, completed) must be "
            "matched too",
            *(f"received: `{x}`" for x in see if x in got))
    if extra:
        return EXERCISE.failed(
            f"your subscription received all {len(see)} task messages, but also "
            f"{len(extra)} it should not: "
            + ", ".join(f"`{x}`" for x in extra),
            "keep `tasks` in the pattern: `genbrain.org.*.tasks...` matches the task activity "
            "and nothing else of an organisation")
    return EXERCISE.passed(
        f"a subscription to `{observer_pattern}` received all {len(see)} task messages and "
        f"none of the other {len(avoid)}, on the live server")
