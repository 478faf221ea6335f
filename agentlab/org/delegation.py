"""Handing a task to a role: the one path every delegation takes (an agent's, the board's).

    task = Task(org="acme", role="cto", title="Design the API", requested_by="ceo")
    publish_task(lab, Subjects(), task)     # stored once per id; "created" recorded once

The task is stored in AGENT_TASKS with ``Nats-Msg-Id`` = its id, so a resend within the
stream's duplicate window is dropped by the stream itself; its "created" event carries
``{id}.created`` for the same reason in AGENT_EVENTS. A caller that is unsure whether a
publish arrived (a timeout, a reconnect) resends the same Task and nothing doubles.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry.trace import Tracer

from ..core.client import Client
from ..core.jetstream import PubAck
from ..core.subjects import Subjects
from ..telemetry import tracing
from .models import Task

__all__ = ["apublish_task", "publish_task"]


def _created_headers(task: Task) -> dict[str, str]:
    return {"Nats-Msg-Id": f"{task.id}.created"}


def _span(tracer: Tracer | None, client: Client, task: Task) -> AbstractContextManager[Any]:
    """The delegation's span, over the task's publish and its "created" event: without it
    a delegation from outside any trace (the board's) would start two traces, not one."""
    if tracer is None:
        return nullcontext()
    return tracing.internal(tracer, f"delegate {task.role}", {
        "agentlab.org": task.org, "agentlab.role": task.role, "agentlab.task.id": task.id,
        "agentlab.task.title": task.title, "agentlab.task.requested_by": task.requested_by,
        "messaging.client.id": client.name,
        "messaging.message.conversation_id": task.correlation_id or task.id})


def publish_task(client: Client, subjects: Subjects, task: Task) -> PubAck:
    """Store ``task`` for its role and announce it on the org's ``tasks.created``."""
    with _span(tracing.tracer(), client, task):
        receipt = client.js.publish(subjects.tasks(task.role), task, msg_id=task.id)
        client.publish(subjects.tasks_created(task.org), task, headers=_created_headers(task))
    return receipt


async def apublish_task(client: Client, subjects: Subjects, task: Task) -> PubAck:
    with _span(tracing.tracer(), client, task):
        receipt = await client.js.apublish(subjects.tasks(task.role), task, msg_id=task.id)
        await client.apublish(subjects.tasks_created(task.org), task,
                              headers=_created_headers(task))
    return receipt
