"""TASK_LEDGER: one record per task's effect, which the server itself announces.

    ledger = TaskLedger.declare(client)            # the agents declare it too; copies: the tasks'
    ledger.get("acme", task_id)                    # the task's TaskCompleted record, or None

An agent records a task's result here before it acks the task, so a redelivered task is
acked, not run again. Three settings on the bucket's stream make the record also the
completion announcement, made once:

* **append-only**: one message per key, and a second one for the same key is refused
  (``discard: new`` per subject), as are deletes and purges. The first record of a task wins;
  no later put, create, delete or purge can change it.
* **republish**: the moment a record is stored, the server publishes it on
  ``{root}.org.{org}.tasks.completed``. So the completion goes out if and only if the effect
  is recorded, with no second publish from the agent (a transactional outbox, done by the
  server), and the CEO sees it one round trip sooner.
* keys are ``{org}.{task_id}``: the republish rule takes the org from the key. Both must
  be single subject tokens, so a task id may not contain '.'.

The records are :class:`~agentlab.org.models.TaskCompleted` events. AGENT_EVENTS stores
the republished copies, as it stores any completion. One account holds one ledger, so
every agent in it must use the same subject root.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from nats.js.api import DiscardPolicy, RePublish

from ..core.jetstream import PubAck
from ..core.stores import KeyValueBucket
from ..core.subjects import Subjects, validate_token
from ..errors import AgentlabError, BadSubject, JetStreamError
from ..telemetry import tracing
from ..wire.messages import to_bytes
from .models import TaskCompleted, task_id_problem
from .streams import LEDGER_BUCKET, TASK_STREAM

if TYPE_CHECKING:
    from ..core.client import Client

# The stream refuses a second message for a key: "maximum messages per subject exceeded".
_ALREADY_RECORDED = 10077


class LedgerRootConflict(AgentlabError):
    """The account's ledger already announces its records under another subject root."""

    def __init__(self, bucket: str, announces_on: str, wanted: str):
        self.bucket, self.announces_on, self.wanted = bucket, announces_on, wanted
        super().__init__(
            f"Ledger bucket '{bucket}' already announces completions on '{announces_on}', "
            f"but this agent's subject root wants '{wanted}'. One account holds one ledger, "
            "so its agents must share a root: use the same Subjects root, or give each root "
            "its own account (agentlab.Tenants, accounts model).")


def ledger_key_problem(org: str, task_id: str) -> str | None:
    """Why (org, task_id) cannot key a ledger record, or None if it can."""
    try:
        validate_token(org, "org")
    except AgentlabError as error:
        return str(error)
    # The rule lives beside the Task model, which refuses such an id when it is decoded.
    return task_id_problem(task_id)


def completion_msg_id(org: str, task_id: str) -> str:
    """The Nats-Msg-Id of a task's record and of any repeat of its announcement: AGENT_EVENTS
    keeps one of them (within its duplicate window). The org is part of it, as of the key:
    two orgs may use the same task id."""
    return f"{org}.{task_id}.completed"


def announcement_subject(subjects: Subjects) -> str:
    """The republish destination: {root}.org.<the key's first token>.tasks.completed."""
    return subjects.tasks_completed("*").replace(".*.", ".{{wildcard(1)}}.", 1)


class TaskLedger:
    """The TASK_LEDGER bucket, keyed by org and task id (see the module docstring)."""

    def __init__(self, client: Client, bucket: KeyValueBucket):
        self._client, self.bucket = client, bucket
        self.name = bucket.name

    @classmethod
    def declare(cls, client: Client, subjects: Subjects | None = None, *,
                replicas: int | None = None) -> TaskLedger:
        """Open the ledger (creating it first if needed) and make sure it announces.

        ``replicas`` (for a new ledger) defaults to the task stream's: a record must survive
        what the tasks it records survive. On a cluster, a one-copy ledger on a lost node
        stops every completion until the node is back, however many copies the tasks have.
        """
        return client._bridge.run(cls.adeclare(client, subjects, replicas=replicas),
                                  operation="declare the task ledger")

    @classmethod
    async def adeclare(cls, client: Client, subjects: Subjects | None = None, *,
                       replicas: int | None = None) -> TaskLedger:
        async def copies() -> int:  # asked only when the bucket is made
            if replicas is not None:
                return replicas
            return await stream_replicas(client, TASK_STREAM)

        bucket = await KeyValueBucket.adeclare(
            client, LEDGER_BUCKET, history=1, replicas=copies,
            description="Each task's effect, once; republished as its completion.")
        await client._bridge.arun(_make_announcing(client, subjects or Subjects()))
        return cls(client, bucket)

    @staticmethod
    def key(org: str, task_id: str) -> str:
        return f"{org}.{task_id}"

    def subject(self, org: str, task_id: str) -> str:
        problem = ledger_key_problem(org, task_id)
        if problem is not None:
            raise BadSubject(problem)
        return f"$KV.{self.name}.{self.key(org, task_id)}"

    def get(self, org: str, task_id: str) -> dict[str, Any] | None:
        """The task's record (a TaskCompleted, as JSON data), or None if it has none."""
        return self.bucket.get(self.key(org, task_id))

    async def aget(self, org: str, task_id: str) -> dict[str, Any] | None:
        return await self.bucket.aget(self.key(org, task_id))

    def record(self, event: TaskCompleted) -> bool:
        return self._client._bridge.run(self.arecord(event), operation="record a task")

    async def arecord(self, event: TaskCompleted, data: bytes | None = None) -> bool:
        """Store ``event`` (``data``: its JSON, if already encoded) as its task's record;
        the server then announces it.

        True if this call recorded it; False if the task had a record already (a replica,
        or an earlier run, got there first: that record stands, and was announced then).
        """
        subject, msg_id = self.subject(event.org, event.task_id), \
            completion_msg_id(event.org, event.task_id)
        tracer = tracing.tracer()
        if tracer is None:
            return await self._store(self._client.js.apublish(
                subject, event if data is None else data, msg_id=msg_id))
        # The record's publish is the ledger's span (one, not a record span around a publish
        # span), named by the subject's shape: there is a subject per task.
        span, headers = tracing.start_send(
            tracer, "publish", subject, {"Nats-Msg-Id": msg_id},
            template=f"$KV.{self.name}.{{org}}.{{task_id}}",
            attributes={"agentlab.ledger.bucket": self.name})  # the rest is on its parent
        with tracing.ending(span):
            recorded = await self._store(self._client.js._apublish(
                subject, to_bytes(event) if data is None else data, headers, 2.0))
            span.set_attribute("agentlab.ledger.recorded", recorded)
            return recorded

    @staticmethod
    async def _store(publish: Awaitable[PubAck]) -> bool:
        try:
            receipt = await publish
        except JetStreamError as error:
            if getattr(error, "err_code", None) == _ALREADY_RECORDED:
                return False
            raise
        return not receipt.duplicate

    def __repr__(self) -> str:
        return f"<TaskLedger {self.name}>"


async def stream_replicas(client: Client, stream: str) -> int:
    """How many copies ``stream`` keeps (1 if it does not exist yet)."""
    try:
        info = await client.js.astream_info(stream)
    except JetStreamError:
        return 1
    return info.config.num_replicas or 1


async def _make_announcing(client: Client, subjects: Subjects) -> None:
    """Give the ledger's stream the settings above; idempotent, and safe to race."""
    info = await client.js.astream_info(f"KV_{LEDGER_BUCKET}")
    config, wanted = info.config, announcement_subject(subjects)
    current = config.republish
    if current is not None and current.dest != wanted:
        raise LedgerRootConflict(LEDGER_BUCKET, current.dest or "?", wanted)
    if (current is not None and config.discard == DiscardPolicy.NEW
            and config.discard_new_per_subject and not config.allow_rollup_hdrs
            and config.deny_delete):
        return
    config.discard, config.discard_new_per_subject = DiscardPolicy.NEW, True
    config.allow_rollup_hdrs, config.deny_delete = False, True
    config.republish = RePublish(src=f"$KV.{LEDGER_BUCKET}.*.*", dest=wanted)
    await client.js.aupdate_stream(config)
