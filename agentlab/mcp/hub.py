"""The MCP agent hub's work: what each of its tools does, on one connection to the bus.

    hub = AgentHub(lab.connect("mcp-hub"), org="acme").start()
    status = hub.delegate("cto", "Pick a database", wait=10)   # the completion, or the id
    held = hub.next_task("cto")                                # an LLM working the CTO's queue
    hub.complete_task(held["id"], {"decision": "postgres"})

:mod:`agentlab.mcp.server` puts these behind MCP tools; everything here is plain agentlab
(a :class:`~agentlab.org.desk.TaskDesk`, the ledger, the dead-letter office, the reports),
so a notebook can use the hub without an MCP client. Every coroutine runs on the bridge loop
(``arun``), whatever loop calls it: the MCP server's own, in the hub process.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Callable
from typing import Any

from ..core.client import Client
from ..core.lifecycle import Service
from ..core.received import Message
from ..core.subjects import Subjects, validate_token
from ..errors import AgentlabError, MessageDecodeError, MessageNotFound, StreamNotFound
from ..org.deadletters import DeadLetterOffice, letter_summary
from ..org.delegation import apublish_task
from ..org.desk import TaskDesk
from ..org.ledger import TaskLedger
from ..org.meetings import Meeting
from ..org.models import Task, TaskCompleted, task_id_problem
from ..org.streams import TASK_STREAM
from ..org.tools import ToolClient
from ..protocol.services import aservice_report
from ..reports.report import aconsumer_report, astream_report
from ..wire.messages import decode_model

__all__ = ["AgentHub", "HubInputError"]

Progress = Callable[[str], None]
SCAN_LIMIT = 10_000  # queued tasks get_task looks through for an id it does not know


class HubInputError(AgentlabError, ValueError):
    """A tool was called with a value it cannot use: names the field and the fix."""

    def __init__(self, field: str, problem: str):
        self.field = field
        super().__init__(f"{field}: {problem}")


def _check(field: str, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except AgentlabError as error:
        raise HubInputError(field, str(error)) from None
    except ValueError as error:
        raise HubInputError(field, str(error)) from None


def _task_id(task_id: str) -> str:
    problem = task_id_problem(task_id)
    if problem:
        raise HubInputError("id", f"{problem} (use the id that delegate_task or next_task "
                                  "returned)")
    return task_id


def _completed(record: TaskCompleted | dict[str, Any]) -> dict[str, Any]:
    data = record.model_dump(mode="json") if isinstance(record, TaskCompleted) else record
    return {"id": data.get("task_id"), "state": "completed", "role": data.get("role"),
            "title": data.get("title"), "result": data.get("result", {}),
            "instance": data.get("instance"), "deliveries": data.get("deliveries"),
            "duration_ms": round(float(data.get("duration_ms") or 0.0), 1)}


class AgentHub(Service):
    """The hub of org ``org``: delegates as ``name``, works queues as ``name`` (the worker of
    its completions), holds taken tasks for ``hold`` seconds."""

    def __init__(self, client: Client, *, org: str = "acme", name: str = "mcp",
                 subjects: Subjects | None = None, hold: float = 600.0,
                 ack_wait: float = 30.0, max_deliver: int = 3):
        self.client = client
        self.org = validate_token(org, "org")
        self.name = validate_token(name, "name")
        self.subjects = subjects or Subjects()
        self.desk = TaskDesk(client, org=org, worker=name, subjects=self.subjects, hold=hold,
                             ack_wait=ack_wait, max_deliver=max_deliver)
        self.dead_letters = DeadLetterOffice(client, self.subjects)  # reads; never sweeps
        self.tools = ToolClient(client, f"{name}-hub", subjects=self.subjects)
        self._bridge = client._bridge
        self._ledger: TaskLedger | None = None
        self._completions: dict[str, asyncio.Future] = {}
        self._progress: dict[str, Progress] = {}
        self._subscriptions: list[Any] = []
        self._tools_started = False

    async def _astart_service(self) -> None:
        self._ledger = await TaskLedger.adeclare(self.client, self.subjects)
        await self.desk.astart()
        self._subscriptions = [
            await self.client.asubscribe(self.subjects.tasks_completed(self.org),
                                         self._on_completed),
            await self.client.asubscribe(self.subjects.inbox(self.name), self._on_note),
        ]

    async def _astop_service(self) -> None:
        for sub in self._subscriptions:
            await sub.aunsubscribe()
        self._subscriptions.clear()
        await self.desk.astop()
        if self._tools_started:
            await self.tools.astop()
            self._tools_started = False

    # async: run on the bridge loop, where the waiting futures live
    async def _on_completed(self, msg: Message) -> None:
        try:
            record = msg.json()
        except MessageDecodeError:
            return
        waiter = self._completions.get(str(record.get("task_id")))
        if waiter is not None and not waiter.done():
            waiter.set_result(record)

    async def _on_note(self, msg: Message) -> None:
        try:
            note = msg.agent_message()
        except MessageDecodeError:
            return
        report = self._progress.get(str(note.payload.get("task_id")))
        if report is not None and note.type == "task.progress":
            report(f"{note.sender}: {note.payload.get('text', '')}")

    def _run(self, coro: Any) -> Any:
        return self._bridge.run(coro, operation="MCP hub")

    # -- delegating -----------------------------------------------------------------------
    def delegate(self, role: str, title: str, details: dict[str, Any] | None = None,
                 wait: float = 30.0) -> dict[str, Any]:
        return self._run(self.adelegate(role, title, details, wait))

    async def adelegate(self, role: str, title: str, details: dict[str, Any] | None = None,
                        wait: float = 30.0, progress: Progress | None = None) -> dict[str, Any]:
        """Publish a durable task for ``role``; its completion if it comes within ``wait``
        seconds (0: do not wait), else its id and state, to poll with get_task."""
        _check("role", lambda: validate_token(role, "role"))
        if not title.strip():
            raise HubInputError("title", "say what the task is, e.g. 'Pick a database'")
        if not 0 <= wait <= 600:
            raise HubInputError("wait_s", f"{wait!r}: give 0 to 600 seconds (0: do not wait; "
                                          "poll with get_task)")
        task = _check("details", lambda: Task(org=self.org, role=role, title=title,
                                              details=details or {}, requested_by=self.name))
        return await self._bridge.arun(self._delegate(task, wait, progress))

    async def _delegate(self, task: Task, wait: float,
                        progress: Progress | None) -> dict[str, Any]:
        report = progress or (lambda text: None)
        done = asyncio.get_running_loop().create_future()
        self._completions[task.id], self._progress[task.id] = done, report
        try:
            receipt = await apublish_task(self.client, self.subjects, task)
            report(f"stored in {receipt.stream} as #{receipt.seq}, waiting for '{task.role}'")
            if wait > 0:
                try:
                    record = await asyncio.wait_for(asyncio.shield(done), wait)
                except asyncio.TimeoutError:
                    pass
                else:
                    report(f"completed by {record.get('instance')}")
                    return _completed(record)
            status = await self._status(task.id)
            status["hint"] = (f"not completed within {wait:g} s: call get_task('{task.id}') "
                              "later")
            return status
        finally:
            self._completions.pop(task.id, None)
            self._progress.pop(task.id, None)

    # -- looking tasks up -----------------------------------------------------------------
    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._run(self.aget_task(task_id))

    async def aget_task(self, task_id: str) -> dict[str, Any]:
        return await self._bridge.arun(self._status(_task_id(task_id)))

    async def _status(self, task_id: str) -> dict[str, Any]:
        held = self.desk.held.get(task_id)
        if held is not None:
            return {**held.summary(), "state": "in_progress", "held_by": self.name}
        assert self._ledger is not None
        record = await self._ledger.aget(self.org, task_id)
        if record is not None:
            return _completed(record)
        for seq, letter in await self._letters():
            if _letter_task_id(letter.payload) == task_id:
                return {"id": task_id, "state": "dead_lettered", "reason": letter.reason,
                        "error": letter.error, "dead_letter_seq": seq,
                        "deliveries": letter.deliveries,
                        "hint": f"redrive_dead_letter({seq}) puts it back in its queue"}
        found = await self._find_queued(task_id)
        if found is not None:
            return await self._queued(*found)
        raise HubInputError("id", f"no task '{task_id}' in org '{self.org}': it is not in "
                                  f"{TASK_STREAM}, TASK_LEDGER or DEAD_LETTERS (a task "
                                  "dropped by the stream's limits is gone)")

    async def _find_queued(self, task_id: str) -> tuple[Task, int] | None:
        # A work queue allows no second consumer on its subjects, so its tasks are read one
        # by one ("the next message on tasks.* from seq"), oldest first, up to SCAN_LIMIT.
        seq = 0
        for _ in range(SCAN_LIMIT):
            try:
                stored = await self.client.js.aget_message(
                    TASK_STREAM, seq + 1, subject=self.subjects.tasks("*"))
            except (MessageNotFound, StreamNotFound):
                return None
            seq = stored.seq
            try:
                task = decode_model(stored.data, Task, stored.subject)
            except MessageDecodeError:
                continue
            if task.id == task_id:
                return task, seq
        return None

    async def _queued(self, task: Task, seq: int) -> dict[str, Any]:
        state = "waiting"
        try:
            info = await self.client.js.aconsumer_info(TASK_STREAM, task.role)
        except AgentlabError:
            info = None
        delivered = info.delivered.stream_seq if info and info.delivered else None
        if delivered is not None and seq <= delivered:
            state = "in_progress"  # handed out, not acked (a work queue drops acked tasks)
        out = {"id": task.id, "state": state, "role": task.role, "title": task.title,
               "stream_seq": seq}
        if info is None:
            out["hint"] = f"no consumer for '{task.role}' yet: no worker has taken its queue"
        return out

    async def _letters(self) -> builtins.list[Any]:
        try:
            return await self.dead_letters.alist(limit=1000)
        except StreamNotFound:
            return []

    # -- working a queue ------------------------------------------------------------------
    async def anext_task(self, role: str, wait: float = 10.0,
                         hold: float | None = None) -> dict[str, Any] | None:
        held = await _acheck("role", self.desk.atake(role, wait=wait, hold=hold))
        return None if held is None else {**held.summary(), "state": "in_progress"}

    async def acomplete_task(self, task_id: str, result: dict[str, Any]) -> dict[str, Any]:
        record, recorded = await _acheck("id", self.desk.acomplete(_task_id(task_id), result))
        out = _completed(record)
        out["recorded_now"] = recorded
        return out

    async def afail_task(self, task_id: str, error: str, retry: bool) -> dict[str, Any]:
        if not error.strip():
            raise HubInputError("error", "say what went wrong: the dead letter keeps it")
        outcome = await _acheck("id", self.desk.afail(_task_id(task_id), error, retry=retry))
        return {"id": task_id, "state": "retrying" if "queue" in outcome else "failed",
                "outcome": outcome}

    # -- meetings, tools, dead letters, reports ----------------------------------------
    async def apost_to_meeting(self, meeting_id: str, text: str, sender: str | None,
                               decision: bool) -> dict[str, Any]:
        meeting = _check("meeting_id", lambda: Meeting.join(self.client, meeting_id,
                                                            subjects=self.subjects))
        who = _check("sender", lambda: validate_token(sender or self.name, "sender"))
        if not text.strip():
            raise HubInputError("text", "say something")
        say = meeting.adecide if decision else meeting.asay
        entry = await self._bridge.arun(say(who, text))
        return entry.model_dump(mode="json")

    async def aread_meeting(self, meeting_id: str) -> dict[str, Any]:
        meeting = _check("meeting_id", lambda: Meeting.join(self.client, meeting_id,
                                                            subjects=self.subjects))
        entries = await self._bridge.arun(meeting.atranscript())
        transcript = [e.model_dump(mode="json") for e in entries]
        return {"meeting_id": meeting.id, "transcript": transcript,
                "decisions": [e for e in transcript if e.get("kind") == "decision"]}

    async def acall_tool(self, tool: str, arguments: dict[str, Any],
                         wait: float) -> dict[str, Any]:
        if not 0 < wait <= 300:
            raise HubInputError("wait_s", f"{wait!r}: give 0 < wait_s <= 300 seconds")
        if not self._tools_started:
            await self.tools.astart()
            self._tools_started = True
        value = await _acheck("tool", self.tools.acall(tool, timeout=wait, **arguments))
        return {"tool": tool, "value": value}

    async def alist_dead_letters(self, limit: int) -> builtins.list[dict[str, Any]]:
        letters = await self._bridge.arun(self._letters())
        return [{**letter_summary(seq, letter), "task_id": _letter_task_id(letter.payload)}
                for seq, letter in letters[-limit:]]

    async def aredrive_dead_letter(self, seq: int) -> dict[str, Any]:
        receipt = await _acheck("seq", self.dead_letters.aredrive(seq))
        return {"seq": seq, "redriven_to": f"{receipt.stream}#{receipt.seq}"}

    async def alist_agents(self) -> dict[str, Any]:
        return await self._bridge.arun(self._agents())

    async def _agents(self) -> dict[str, Any]:
        services = (await aservice_report(self.client)).agents(org=self.org)
        try:
            consumers = await aconsumer_report(self.client, TASK_STREAM)
        except StreamNotFound:
            consumers = None
        roles: dict[str, dict[str, Any]] = {}
        for row in consumers.table_rows() if consumers is not None else ():
            roles[row.name] = {"role": row.name, "queued": row.unprocessed,
                               "in_progress": row.ack_pending, "redelivered": row.redelivered,
                               "instances": []}
        for service in services:
            entry = roles.setdefault(service.role, {"role": service.role, "queued": None,
                                                    "in_progress": None, "instances": []})
            entry["instances"].append({"instance": service.instance, "health": "up",
                                       "processed": service.processed,
                                       "in_flight": service.in_flight})
        for entry in roles.values():
            if not entry["instances"]:
                entry["health"] = "no instance running: its tasks wait in the queue"
            else:
                entry["health"] = f"{len(entry['instances'])} instance(s) up"
        return {"org": self.org, "roles": sorted(roles.values(), key=lambda r: r["role"])}

    async def astream_report(self) -> str:
        return str(await astream_report(self.client))

    async def aconsumer_report(self, stream: str) -> str:
        return str(await _acheck("stream", aconsumer_report(self.client, stream)))


async def _acheck(field: str, call: Any) -> Any:
    try:
        return await call
    except AgentlabError as error:
        if isinstance(error, HubInputError):
            raise
        raise HubInputError(field, str(error)) from None
    except (ValueError, TypeError) as error:
        raise HubInputError(field, str(error)) from None


def _letter_task_id(payload: str) -> str | None:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
