"""Lesson 04, Meetings: a minute-taker that keeps exactly the meeting's decisions.

    lesson04.check(meeting, minutes)

The check reads the meeting's decisions from the MEETINGS stream (a consumer filtered on
`genbrain.meetings.<id>.decisions`, as `meeting.decisions()` does) and compares them with the
learner's `minutes`: the same entries, in the same order, nothing of the chat, and the last
two decisions made by the CEO and then the CFO, as the exercise asks.
"""

from __future__ import annotations

from typing import Any

from ..org import Meeting, MeetingEntry
from .check import CheckResult, Exercise, listing, not_given

EXERCISE = Exercise("04", "A minute-taker")


def _entry(entry: MeetingEntry) -> str:
    return f"{entry.text!r} ({entry.sender})"


@EXERCISE.check
def check(meeting: Meeting, minutes: Any) -> CheckResult:
    """Are `minutes` exactly the decisions of `meeting`, as the MEETINGS stream holds them?"""
    if not_given(minutes):
        return EXERCISE.not_done(
            "there is no `minutes` list yet (the cell still says `minutes = ...`)",
            "join as `secretary`, follow the meeting with `replay=True` and append each entry "
            "whose `kind` is `\"decision\"` to a list `minutes`")
    if not isinstance(minutes, list):
        return EXERCISE.failed(
            f"`minutes` is a {type(minutes).__name__}, not a list of meeting entries",
            "start with `minutes = []` and append entries to it in your follow handler")
    subject = meeting.decisions_subject
    decisions = meeting.decisions()
    strays = [m for m in minutes if not isinstance(m, MeetingEntry)]
    if strays:
        return EXERCISE.failed(
            f"{len(strays)} item(s) of `minutes` are not meeting entries: "
            f"{listing(type(m).__name__ for m in strays)}",
            "append the `entry` your follow handler is given, as it is")
    chat = [m for m in minutes if m.kind != "decision"]
    if chat:
        return EXERCISE.failed(
            f"your minutes hold {len(chat)} line(s) of the chat, which are not decisions",
            "keep an entry only `if entry.kind == \"decision\"`",
            *(f"not a decision: {_entry(m)}" for m in chat[:3]))
    said = [d.id for d in decisions]
    got = [m.id for m in minutes]
    missing = [d for d in decisions if d.id not in got]
    if len(set(got)) != len(got):
        return EXERCISE.failed(
            f"your minutes hold {len(got)} entries but only {len(set(got))} different ones: "
            "some decisions are in twice",
            "follow the meeting once, with one list: running the cell again appends to a list "
            "that a previous follow may still be filling (stop the old feed first)")
    if missing:
        early = all(d.id not in got for d in decisions[:len(missing)])
        hint = ("the decisions made before your secretary joined are in MEETINGS too: "
                "`follow(take_minutes, replay=True)` reads the meeting from its first entry"
                if early and got else
                "wait until the CFO's decision is in `minutes` before you stop following "
                "(e.g. `wait_until(lambda: any(e.id == last.id for e in minutes))`)")
        return EXERCISE.failed(
            f"your minutes hold {len(got)} of the {len(said)} decisions that "
            f"`{subject}` has in MEETINGS",
            hint, *(f"missing: {_entry(d)}" for d in missing[:4]))
    unknown = [m for m in minutes if m.id not in said]
    if unknown:
        return EXERCISE.failed(
            f"{len(unknown)} entries of your minutes are not decisions of meeting "
            f"`{meeting.id}`",
            "join the exercise's meeting: `Meeting.join(lab.connect(\"secretary\"), meeting.id)`",
            *(f"from meeting `{m.meeting_id}`: {_entry(m)}" for m in unknown[:3]))
    if got != said:
        return EXERCISE.failed(
            "your minutes hold every decision, but not in the order they were made",
            "append entries as the follow handler receives them: it delivers them in order")
    last_two = [d.sender for d in decisions[-2:]]
    if last_two != ["ceo", "cfo"]:
        return EXERCISE.failed(
            f"the meeting's last two decisions were made by {listing(last_two)}; the exercise "
            "has the CEO decide once more, and then the CFO",
            "`meeting.decide(\"ceo\", ...)`, then `cfo_seat.decide(\"cfo\", ...)`")
    return EXERCISE.passed(
        f"your minutes hold all {len(said)} decisions of `{meeting.id}`, in order, and "
        "nothing of the chat",
        *(f"{n}. {_entry(d)}" for n, d in enumerate(decisions, 1)))
