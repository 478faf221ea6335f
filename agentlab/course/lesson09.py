"""Lesson 09, Observability: how long each role's tasks took, from the audit log alone.

    lesson09.check(lab, took, since=notebook_started)

The check replays the organisation's audit log (AGENT_EVENTS, from `since`) itself, pairs each
`task.created` record with its task's `task.completed` record, and compares the learner's
`took` (role -> a list of `(seconds, title)` pairs) with it, role by role and task by task:
the same tasks, the same seconds (the stored records' timestamps, to the millisecond), and the
same task taking longest.
"""

from __future__ import annotations

import statistics
from datetime import datetime
from numbers import Real
from typing import Any

from ..core.client import Client
from ..org import replay
from .check import CheckResult, Exercise, listing, not_given

EXERCISE = Exercise("09", "Created → completed, from the audit log")
TOLERANCE = 0.005  # seconds: the records' own timestamps, rounded as a learner may round them


def durations(client: Client, org: str,
              since: datetime | None) -> dict[str, list[tuple[float, str]]]:
    """role -> [(seconds from created to completed, title)], from the audit log."""
    records = replay(client, org, since=since)
    created = {r.event.id: r for r in records if r.kind == "task.created"}
    took: dict[str, list[tuple[float, str]]] = {}
    for record in records:
        if record.kind == "task.completed" and record.event.task_id in created:
            seconds = (record.time - created[record.event.task_id].time).total_seconds()
            took.setdefault(record.event.role, []).append((seconds, record.event.title))
    return took


def _pairs(entries: Any) -> list[tuple[float, str]] | None:
    """The learner's (seconds, title) pairs, in either order; None if they are not pairs."""
    pairs = []
    for entry in entries:
        if not isinstance(entry, (tuple, list)) or len(entry) != 2:
            return None
        first, second = entry
        if isinstance(first, Real) and isinstance(second, str):
            pairs.append((float(first), second))
        elif isinstance(second, Real) and isinstance(first, str):
            pairs.append((float(second), first))
        else:
            return None
    return pairs


def _summary(role: str, times: list[tuple[float, str]]) -> str:
    longest = max(times)
    return (f"{role}: {len(times)} tasks, median {statistics.median(t for t, _ in times):.3f} s, "
            f"max {longest[0]:.3f} s ({longest[1]!r})")


@EXERCISE.check
def check(client: Client, took: Any, *, since: datetime | None = None,
          org: str = "acme") -> CheckResult:
    """Do `took`'s durations match the audit log's created → completed times, per role?"""
    if not_given(took):
        return EXERCISE.not_done(
            "there is no `took` yet (the cell still says `took = ...`)",
            "replay the audit log, pair each task.created with its task.completed, and keep "
            "`took[role]`: a list of `(seconds, title)`")
    if not isinstance(took, dict):
        return EXERCISE.failed(
            f"`took` is a {type(took).__name__}, not a dict from role to (seconds, title) pairs",
            "`took.setdefault(record.event.role, []).append((seconds, record.event.title))`")
    truth = durations(client, org, since)
    theirs: dict[str, list[tuple[float, str]]] = {}
    for role, entries in took.items():
        pairs = _pairs(entries) if isinstance(entries, (list, tuple)) else None
        if pairs is None:
            return EXERCISE.failed(
                f"`took[{role!r}]` is not a list of (seconds, title) pairs: {entries!r:.120}",
                "append one `(seconds, title)` tuple per completed task")
        theirs[str(role)] = pairs
    facts = [_summary(role, times) for role, times in sorted(truth.items())]
    missing, extra = sorted(set(truth) - set(theirs)), sorted(set(theirs) - set(truth))
    if missing or extra:
        return EXERCISE.failed(
            f"your roles are {listing(sorted(theirs))}; the audit log since the notebook "
            f"started has completed tasks of {listing(sorted(truth))}",
            "the role of a completed task is `record.event.role`; keep every role that has "
            "one", *facts)
    for role in sorted(truth):
        want, got = sorted(truth[role]), sorted(theirs[role])
        if len(want) != len(got):
            return EXERCISE.failed(
                f"for `{role}` you have {len(got)} tasks; the audit log has {len(want)} "
                "created and completed since the notebook started",
                "pair each task.completed record (`record.event.task_id`) with the "
                "task.created record of the same task (`record.event.id`), and keep them all",
                *facts)
    # The role whose times are furthest off: where the mistake shows most.
    def furthest(role: str) -> float:
        pairs = zip(sorted(truth[role]), sorted(theirs[role]), strict=True)
        return max(abs(want[0] - got[0]) for want, got in pairs)

    off, role = max((furthest(role), role) for role in truth)
    if off > TOLERANCE:
        want, got = sorted(truth[role]), sorted(theirs[role])
        return EXERCISE.failed(
            f"for `{role}` your longest task took {got[-1][0]:.3f} s ({got[-1][1]!r}); "
            f"from created to completed it took {want[-1][0]:.3f} s ({want[-1][1]!r})",
            "created → completed counts the time a task waited in AGENT_TASKS too: "
            "subtract the created record's `record.time` from the completed record's, "
            "rather than using the handler's own `duration_ms`", *facts)
    seconds, title = max(entry for times in truth.values() for entry in times)
    return EXERCISE.passed(
        f"every role's times match the audit log; the longest of all, {title!r}, took "
        f"{seconds:.2f} s from created to completed", *facts)
