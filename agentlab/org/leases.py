"""TASK_LEASES: the run of a task that is alive now, so that no handler runs twice meanwhile.

    leases = await TaskLeases.adeclare(client)           # the agents declare it (the ledger's
                                                         # replicas: R3 in a cluster)
    got = await leases.aclaim("acme", task_id, instance="cto-1", runner=token, ttl=30)
    if isinstance(got, Lease):   # ours: run the handler, renewing every ttl/3 meanwhile
        await leases.arenew(got)
    else:                        # a LeaseHolder: another run of this task is alive; wait
        print(got.instance, got.remaining())

Why the ledger alone is not enough: the ledger says a task's effect *happened*. While the
first run still works there is no record yet, and the server can hand the task out again:
a SIGKILLed server that comes back without its record of the delivery (delivery count 1
again), a cluster whose new leader had not heard of it, an ack wait that ran out during
an outage. Without a lease the second delivery runs the handler a second time, next to the
first: an LLM asked twice, a side effect done twice.

How a lease works, and why it holds under restarts and leader changes:

* **One key per task**, ``{org}.{task_id}`` like the ledger. The value names the run: the
  instance, a token per TaskRunner (two processes may give an instance the same name) and
  a token per run.
* **Claimed by a create**: the write carries ``Nats-Expected-Last-Subject-Sequence`` 0 (or
  the sequence of a released lease's marker), so of two instances exactly one gets it. It
  counts once the stream acknowledges it: on disk, or on a majority of a cluster's replicas.
* **Expired by the server**: every write carries a per-message TTL (``Nats-TTL``, NATS
  2.11), stored with the message, so the server drops a lease nobody renewed within its TTL
  after a restart too, and every replica of a cluster does. No client's clock decides that
  an instance is dead: a SIGKILLed instance stops renewing, and its lease expires.
* **Renewed** by the running instance with the lease's last sequence as the expected one: a
  renewal that finds another run's lease knows it lost it (it was silent for a whole TTL).
  Each renewal says how long the run has been quiet (no return, no ``in_progress()``): a
  delivery that finds a live instance's run quiet for longer than the ack wait (hung, by
  the ack wait's contract) is nak'ed rather than kept waiting, so a hung handler still
  ends as a dead letter after ``max_deliver`` attempts, run once.
* **Released** (a delete marker that expires after a second) only after a failed run, so
  that its retry may run at once. A completed run's lease is left to expire: the ledger
  record answers for the task, and whoever finds a lease reads the ledger first.

The bucket is a plain key-value bucket (``nats kv ls TASK_LEASES`` lists who runs what)
whose stream also allows message TTLs.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core.stores import KeyValueBucket
from ..errors import AgentlabError, JetStreamError, MessageNotFound
from ..wire.messages import decode_json, new_id, to_bytes
from .ledger import stream_replicas
from .streams import LEASE_BUCKET, LEDGER_BUCKET, TASK_STREAM

if TYPE_CHECKING:
    from ..core.client import Client

# The stream refused a write whose expected last sequence was not the subject's last.
_WRONG_LAST_SEQUENCE = 10071
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_RELEASED = ("DEL", "PURGE")  # KV-Operation of a released (deleted) key
# How long a release marker stays: the shortest message TTL the server accepts.
_MARKER_TTL = 1
# A lease write waits this long for its receipt (the ledger's record waits 2 s as well).
WRITE_TIMEOUT = 2.0


class LeasesUnavailable(AgentlabError):
    """The lease bucket cannot expire leases on this server (no per-message TTLs)."""

    def __init__(self, bucket: str, why: str):
        self.bucket = bucket
        super().__init__(
            f"Task leases need the '{bucket}' bucket's stream to allow per-message TTLs "
            f"(NATS 2.11 or later), and the server refused: {why}. Upgrade the server, or "
            "start the agents with lease=False (a task the server hands out again while its "
            "first run still works then runs twice).")


def default_lease_ttl(ack_wait: float) -> int:
    """A lease as long as the consumer's ack wait (whole seconds, at least 1): an instance
    silent that long loses its task to the next delivery, as a silent delivery does."""
    return max(1, math.ceil(ack_wait))


def check_lease_ttl(ttl: float) -> int:
    """``ttl`` as the whole seconds a message TTL counts; ValueError saying what to pass."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl != int(ttl) \
            or ttl < 1:
        raise ValueError(
            f"lease_ttl={ttl!r}: a lease expires through the server's per-message TTL, which "
            "counts whole seconds; pass a whole number of seconds, at least 1 (longer than "
            "the longest time a live instance may be cut off from the server).")
    return int(ttl)


@dataclass
class Lease:
    """A run's hold on its task. ``revision``: the lease's last write (renewals move it)."""

    org: str
    task_id: str
    instance: str
    runner: str
    ttl: int
    revision: int
    run: str = field(default_factory=new_id)
    renewed_at: float = field(default_factory=time.monotonic)
    # When the run last showed it is working (began, or called in_progress()): monotonic.
    active_at: float = field(default_factory=time.monotonic)
    # Claimed over nothing: no lease of the task was stored (an expired one leaves nothing,
    # a released or taken-over one does, and says that another run came first).
    fresh: bool = True

    @property
    def renew_every(self) -> float:
        """Renewed every third of its TTL: two renewals may be lost before it expires."""
        return self.ttl / 3

    def value(self) -> dict[str, Any]:
        return {"instance": self.instance, "runner": self.runner, "run": self.run,
                "ttl": self.ttl, "quiet_s": round(time.monotonic() - self.active_at, 3)}


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a task's lease: the run in the way of a claim."""

    org: str
    task_id: str
    instance: str
    runner: str
    run: str
    ttl: int
    revision: int
    stored_at: datetime | None  # the server's time of the lease's last write
    # How long its run had been quiet (no return, no in_progress()) when its instance last
    # renewed it. Only a live instance renews, so a dead one's lease does not look hung.
    quiet_s: float = 0.0

    def remaining(self) -> float:
        """Seconds until it expires unless renewed (by this machine's clock: an estimate)."""
        if self.stored_at is None:
            return float(self.ttl)
        return max(0.0, self.stored_at.timestamp() + self.ttl - time.time())


class TaskLeases:
    """The TASK_LEASES bucket, keyed by org and task id (see the module docstring)."""

    def __init__(self, client: Client, bucket: KeyValueBucket):
        self._client, self.bucket = client, bucket
        self.name = bucket.name
        self.stream = f"KV_{bucket.name}"

    @classmethod
    def declare(cls, client: Client, *, replicas: int | None = None) -> TaskLeases:
        return client._bridge.run(cls.adeclare(client, replicas=replicas),
                                  operation="declare the task leases")

    @classmethod
    async def adeclare(cls, client: Client, *, replicas: int | None = None) -> TaskLeases:
        """Open the bucket (creating it first if needed) and let its stream expire leases.

        ``replicas`` defaults to the ledger's, or the task stream's if it keeps more: a lease
        must survive what the ledger and the deliveries it guards survive (on a cluster, a
        one-copy lease bucket on a lost node would stop every task).
        """
        async def copies() -> int:  # asked only when the bucket is made
            if replicas is not None:
                return replicas
            return max([await stream_replicas(client, f"KV_{LEDGER_BUCKET}"),
                        await stream_replicas(client, TASK_STREAM)])

        bucket = await KeyValueBucket.adeclare(
            client, LEASE_BUCKET, history=1, replicas=copies,
            description="Which run of each task is alive now; expires unless renewed.")
        info = await client.js.astream_info(f"KV_{LEASE_BUCKET}")
        if not info.config.allow_msg_ttl:
            info.config.allow_msg_ttl = True
            try:
                await client.js.aupdate_stream(info.config)
            except JetStreamError as error:
                raise LeasesUnavailable(LEASE_BUCKET, str(error)) from None
        return cls(client, bucket)

    def subject(self, org: str, task_id: str) -> str:
        return f"$KV.{self.name}.{org}.{task_id}"

    # -- the verbs (sync twins for scripts and notebooks; the agents use the async ones) --
    def claim(self, org: str, task_id: str, *, instance: str, runner: str,
              ttl: int) -> Lease | LeaseHolder:
        return self._run(self.aclaim(org, task_id, instance=instance, runner=runner, ttl=ttl),
                         "claim a lease")

    def renew(self, lease: Lease) -> bool:
        return self._run(self.arenew(lease), "renew a lease")

    def release(self, lease: Lease) -> None:
        self._run(self.arelease(lease), "release a lease")

    def _run(self, coro: Any, operation: str) -> Any:
        return self._client._bridge.run(coro, operation=operation)

    async def aclaim(self, org: str, task_id: str, *, instance: str, runner: str, ttl: int,
                     stale_run: Any = None, run: str | None = None) -> Lease | LeaseHolder:
        """The task's lease for a new run, or the holder of the lease in the way.

        ``stale_run(holder)``: True for a lease this runner knows is no run of its own any
        more (its earlier claim's receipt was lost, and the run ended); it is taken over.
        ``run``: the run's token, to claim again after a claim whose receipt did not come
        (a claim that was stored is then found to be this run's own).
        """
        lease = Lease(org, task_id, instance, runner, check_lease_ttl(ttl), revision=0)
        if run:
            lease.run = run
        expected = 0
        for _ in range(3):  # a lease can expire or be released between two tries
            try:
                lease.revision = await self._write(lease, expected)
                return lease
            except JetStreamError as error:
                if error.err_code != _WRONG_LAST_SEQUENCE:
                    raise
            lease.fresh = False
            holder, expected = await self._current(org, task_id)
            if holder is None:
                continue  # expired or released meanwhile: claim over what is there now
            if holder.run == lease.run:  # our own write landed; its receipt was lost
                lease.revision = holder.revision
                return lease
            if stale_run is not None and stale_run(holder):
                continue
            return holder
        raise JetStreamError(f"Could not claim the lease of task {task_id} ({org}) in "
                             f"'{self.name}': it changed hands three times in a row.")

    async def arenew(self, lease: Lease) -> bool:
        """Write the lease again (a fresh TTL). False if it is no longer this run's."""
        try:
            lease.revision = await self._write(lease, lease.revision)
        except JetStreamError as error:
            if error.err_code != _WRONG_LAST_SEQUENCE:
                raise
            holder, _ = await self._current(lease.org, lease.task_id)
            if holder is None or holder.run != lease.run:
                return False
            # An earlier renewal landed and its receipt was lost: renew from there.
            lease.revision = await self._write(lease, holder.revision)
        lease.renewed_at = time.monotonic()
        return True

    async def arelease(self, lease: Lease) -> None:
        """Give the task up (after a failed run): the next delivery may run it at once.
        A lease that is no longer this run's is left alone."""
        revision = lease.revision
        for _ in range(2):
            try:
                await self._client.js._apublish(
                    self.subject(lease.org, lease.task_id), b"",
                    {_EXPECTED_LAST: str(revision), "KV-Operation": "DEL",
                     "Nats-TTL": str(_MARKER_TTL)}, WRITE_TIMEOUT)
                return
            except JetStreamError as error:
                if error.err_code != _WRONG_LAST_SEQUENCE:
                    raise
            # A renewal landed whose receipt was lost: still this run's, release it from there.
            holder, _ = await self._current(lease.org, lease.task_id)
            if holder is None or holder.run != lease.run:
                return
            revision = holder.revision

    def holder(self, org: str, task_id: str) -> LeaseHolder | None:
        """Who holds the task's lease now, or None."""
        return self._run(self.aholder(org, task_id), "read a lease")

    async def aholder(self, org: str, task_id: str) -> LeaseHolder | None:
        return (await self._current(org, task_id))[0]

    # -- on the wire -------------------------------------------------------------------
    async def _write(self, lease: Lease, expected: int) -> int:
        # The private publish: no span of its own (the delivery's span says what happened).
        receipt = await self._client.js._apublish(
            self.subject(lease.org, lease.task_id), to_bytes(lease.value()),
            {_EXPECTED_LAST: str(expected), "Nats-TTL": str(lease.ttl)}, WRITE_TIMEOUT)
        return receipt.seq

    async def _current(self, org: str, task_id: str) -> tuple[LeaseHolder | None, int]:
        """The live lease (or None) and the sequence a claim must expect (0: none stored)."""
        subject = self.subject(org, task_id)
        try:
            # history=1: the first message on the subject is its only one. From the leader:
            # a replica's copy may be behind.
            stored = await self._client.js.aget_message(self.stream, 1, subject=subject)
        except MessageNotFound:
            return None, 0
        if stored.headers.get("KV-Operation") in _RELEASED:
            return None, stored.seq
        try:
            value = decode_json(stored.data, subject)
        except ValueError:
            value = {}
        if not isinstance(value, dict):
            value = {}
        return LeaseHolder(org, task_id, str(value.get("instance", "?")),
                           str(value.get("runner", "")), str(value.get("run", "")),
                           int(value.get("ttl") or stored.headers.get("Nats-TTL") or 1),
                           stored.seq, stored.time, float(value.get("quiet_s") or 0.0)), \
            stored.seq

    def __repr__(self) -> str:
        return f"<TaskLeases {self.name}>"


async def keep_renewed(leases: TaskLeases, lease: Lease, on_lost: Any,
                       active_at: Any = None) -> None:
    """Renew ``lease`` every third of its TTL until cancelled (the run's end); a renewal
    the server did not answer is tried again soon, and ``on_lost(lease)`` is called once if
    the lease turns out to be another run's. ``active_at()``: when the run last showed it
    is working (monotonic), written with each renewal."""
    delay = lease.renew_every
    while True:
        await asyncio.sleep(delay)
        if active_at is not None:
            lease.active_at = active_at()
        try:
            kept = await leases.arenew(lease)
        except Exception:  # the server is away (restarting, electing): again, soon
            delay = min(0.5, lease.renew_every)
            continue
        if not kept:
            on_lost(lease)
            return
        delay = lease.renew_every
