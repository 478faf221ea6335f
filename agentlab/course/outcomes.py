"""Where a task ended, read from the live server: the ledger, the dead letters, or neither yet.

    outcome = task_outcome(lab, "acme", task.id, timeout=15)
    outcome.state          # "completed", "dead" or "pending"
    outcome.record         # the ledger record (a TaskCompleted's fields), when completed
    outcome.letter         # the DeadLetter, when dead

The lessons whose exercises hand a task to the learner's agent (06, 10, 12) judge it by where
it ended, the way an operator would: the TASK_LEDGER bucket holds its result once it is done,
DEAD_LETTERS holds it once it was given up on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from ..core.client import Client
from ..core.subjects import Subjects
from ..org import DeadLetter, DeadLetterOffice, TaskLedger


@dataclass(frozen=True)
class TaskOutcome:
    """A task's end as the server knows it (`record` or `letter` set, or neither: pending)."""

    task_id: str
    state: Literal["completed", "dead", "pending"]
    record: dict[str, Any] | None = None
    letter: DeadLetter | None = None


def letter_task_id(letter: DeadLetter) -> str | None:
    """The id of the task a dead letter holds: its Nats-Msg-Id, else the payload's `id`."""
    if letter.headers.get("Nats-Msg-Id"):
        return letter.headers["Nats-Msg-Id"]
    try:
        task_id = json.loads(letter.payload).get("id")
    except (ValueError, AttributeError):
        return None
    return task_id if isinstance(task_id, str) else None


def dead_letters_of(client: Client, task_id: str,
                    subjects: Subjects | None = None) -> list[DeadLetter]:
    """Every dead letter on the server that holds the task `task_id`, oldest first."""
    office = DeadLetterOffice(client, subjects)
    return [letter for _, letter in office.list(limit=100_000)
            if letter_task_id(letter) == task_id]


def task_outcome(client: Client, org: str, task_id: str, *, timeout: float = 0.0,
                 subjects: Subjects | None = None, interval: float = 0.25) -> TaskOutcome:
    """Where task `task_id` of `org` ended; waits up to `timeout` s while it is pending."""
    ledger = TaskLedger.declare(client, subjects)
    deadline = time.monotonic() + timeout
    while True:
        record = ledger.get(org, task_id)
        if record is not None:
            return TaskOutcome(task_id, "completed", record=record)
        letters = dead_letters_of(client, task_id, subjects)
        if letters:
            return TaskOutcome(task_id, "dead", letter=letters[-1])
        if time.monotonic() >= deadline:
            return TaskOutcome(task_id, "pending")
        time.sleep(interval)
