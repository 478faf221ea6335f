"""Lesson 14, Your browser as an agent: work the CTO's queue by hand, over WebSocket.

    await lesson14.check(org, task, answer, instance="learner")

The learner does from Python, with nats-py's WebSocket transport and the page's kind of
login, what the browser page does: take the CTO's tasks from its durable consumer, answer
them, record each answer in TASK_LEDGER (the server then announces it on
``tasks.completed``), and ack. The check reads the live server: `task` must be recorded
once, by the learner's `instance`, with `answer` as its result, announced once, and the
CTO's consumer must have nothing left to deliver and nothing taken but not acked. A task
acked without a record, a record not acked, or a completion announced by hand a second time
each get a hint that names the step.

The check is async, awaited on the notebook's loop: the learner's nats-py connection lives
on that loop, so an ack it has only buffered goes out while the check waits, as it would in
the learner's own program.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from ..errors import ConsumerNotFound
from ..org import EVENTS_STREAM, TASK_STREAM, Organisation, Task, TaskCompleted
from .check import CheckResult, Exercise, not_given
from .outcomes import task_outcome

EXERCISE = Exercise("14", "Work the CTO's queue over WebSocket")
SETTLE = 3.0  # seconds for an ack or an announcement still on its way as the check starts


async def _queue_left(org: Organisation, role: str) -> tuple[int, int]:
    """(tasks not delivered yet, tasks delivered and not acked) on ``role``'s consumer."""
    info = await org.lab.js.aconsumer_info(TASK_STREAM, role)
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)


async def _announcements(org: Organisation, task: Task) -> int:
    since = task.created_at - timedelta(seconds=1)
    stored = await org.lab.js.aread(EVENTS_STREAM, org.subjects.tasks_completed(org.org),
                                    since=since)
    return sum(1 for m in stored if m.json().get("task_id") == task.id)


async def _settle(condition: Callable[[], Awaitable[bool]], timeout: float = SETTLE) -> None:
    """Wait, letting the notebook's loop run, until ``condition()`` or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not await condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)


async def _emptied(org: Organisation, role: str) -> bool:
    return await _queue_left(org, role) == (0, 0)


async def _announced(org: Organisation, task: Task) -> bool:
    return await _announcements(org, task) >= 1


@EXERCISE.check
async def check(org: Organisation, task: Task, answer: Any,
                instance: str = "learner") -> CheckResult:
    """Is `task` completed by `instance` with `answer`, announced once, and the CTO's queue
    worked to the end? Says which step is missing if not."""
    if not_given(answer):
        return EXERCISE.not_done(
            "there is no `answer` yet (the cell still says `answer = ...`)",
            "write your answer as a dict, e.g. `answer = {\"decision\": \"prototype first\"}`, "
            "then fetch the CTO's tasks over the WebSocket, record each, and ack it")
    if not isinstance(org, Organisation) or not isinstance(task, Task):
        return EXERCISE.failed(
            f"check(org, task, answer) was given a {type(org).__name__} and a "
            f"{type(task).__name__}", "pass the notebook's `org` and `task`")
    if not isinstance(answer, dict):
        return EXERCISE.failed(f"`answer` is a {type(answer).__name__}, not a dict",
                               "a completion's result is a JSON object: a dict")
    role, ledger_subject = task.role, f"$KV.TASK_LEDGER.{org.org}.{task.id}"
    try:
        await org.lab.js.aconsumer_info(TASK_STREAM, role)
    except ConsumerNotFound:
        return EXERCISE.not_done(
            f"there is no consumer `{role}` on {TASK_STREAM} yet: nobody has worked the "
            f"{role}'s queue", "run the notebook's first cell: the widget makes the durable "
            "consumer that the page, and your `queue`, pull from")
    outcome = task_outcome(org.lab, org.org, task.id, subjects=org.subjects)
    if outcome.state == "dead":
        letter = outcome.letter
        assert letter is not None
        return EXERCISE.failed(
            f"{task.title!r} is a dead letter ({letter.reason}: {letter.error!r}), not "
            "completed", "record it and ack it; a nak or a term gives it back or up. Run "
            "the exercise's first cell again for a new task")
    if outcome.state == "pending":
        # An ack on its way, or a record still being written: look once more, briefly.
        await _settle(lambda: _emptied(org, role))
        outcome = task_outcome(org.lab, org.org, task.id, subjects=org.subjects)
    if outcome.state == "pending":
        waiting, held = await _queue_left(org, role)
        if waiting == 0 and held == 0:
            return EXERCISE.failed(
                f"{task.title!r} was acked but the ledger has no record: nobody will ever "
                "know its answer", f"publish the TaskCompleted to `{ledger_subject}` (with "
                f"the header `Nats-Msg-Id: {org.org}.{task.id}.completed`) before the ack. "
                "Run the exercise's first cell again for a new task")
        return EXERCISE.not_done(
            f"{task.title!r} has no record yet: the CTO's queue has {waiting} task(s) not "
            f"taken and {held} taken but not acked",
            "fetch the tasks with `queue.fetch(10, timeout=5)`; for each, publish its "
            f"record to `$KV.TASK_LEDGER.{org.org}.<id>`, then `await msg.ack()`. A task "
            "you hold in the widget counts as taken: complete it there, or close the widget")
    record = outcome.record or {}
    try:
        completed = TaskCompleted.model_validate(record)
    except ValueError as error:
        return EXERCISE.failed(
            f"the ledger's record of {task.title!r} is not a TaskCompleted: {error}",
            "give it task_id, org, role, instance, title and result, as the page does")
    if completed.instance != instance:
        return EXERCISE.failed(
            f"{task.title!r} was completed by the instance {completed.instance!r}, not by "
            f"yours, {instance!r}",
            f"put `\"instance\": \"{instance}\"` in your record (the page's records say "
            "\"browser\"). Run the exercise's first cell again for a new task")
    if completed.result != answer:
        return EXERCISE.failed(
            f"the ledger's record of {task.title!r} has the result {completed.result!r}, not "
            f"your answer {answer!r}", "record `\"result\": answer`")
    await _settle(lambda: _announced(org, task))
    announced = await _announcements(org, task)
    if announced != 1:
        return EXERCISE.failed(
            f"{task.title!r} was announced on `{org.subjects.tasks_completed(org.org)}` "
            f"{announced} times, not once",
            "the server announces each record itself (the ledger's republish): publish only "
            "the record, never a completion of your own")
    await _settle(lambda: _emptied(org, role))
    waiting, held = await _queue_left(org, role)
    if held:
        return EXERCISE.failed(
            f"{task.title!r} is recorded, but the CTO's consumer still has {held} task(s) "
            "taken and not acked: after its ack wait each is delivered again",
            "`await msg.ack()` after each record (a task you took in the widget: complete it "
            "there)")
    if waiting:
        return EXERCISE.failed(
            f"{task.title!r} is recorded, but {waiting} more task(s) wait in the CTO's queue",
            "work the queue to its end: fetch, record and ack every task it gives you")
    return EXERCISE.passed(
        f"{task.title!r} is recorded once, by {instance!r}, announced once on "
        f"`{org.subjects.tasks_completed(org.org)}`, and the CTO's queue is empty",
        "a participant is whoever speaks the protocol: the page and your Python code, over "
        "WebSocket, worked the same durable consumer as an agent over TCP")
