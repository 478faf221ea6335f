"""Dead letters the NATS way (DESIGN.md decision 6), and how to list, inspect and redrive them.

    office = DeadLetterOffice(lab).start()     # listens for max-deliveries advisories
    for seq, letter in office.list():
        print(seq, letter.reason, letter.error)
    office.redrive(seq)                        # back to its original subject, fresh msg id

When a consumer gives up on a message after ``max_deliver`` attempts, the server emits
``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`` but leaves the message in
the work queue. The office copies it (by stream sequence) into DEAD_LETTERS with the last
error the agent recorded, then deletes the original. Poison input skips the retries.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import logging
import time
import weakref
from typing import Any, Literal, TypedDict

from nats.js.api import ConsumerInfo, RetentionPolicy

from ..core.client import Client
from ..core.jetstream import PubAck
from ..core.lifecycle import Service
from ..core.received import Message
from ..core.stores import KeyValueBucket
from ..core.subjects import Subjects
from ..errors import AgentlabError, MessageNotFound, StreamNotFound
from ..telemetry import tracing
from ..wire.messages import new_id
from .models import DeadLetter, FailureRecord
from .streams import DLQ_STREAM, FAILURES_BUCKET, WORK_STREAMS

log = logging.getLogger("agentlab")

ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
SWEEP_RETRY_FOR = 30.0    # after a reconnect, how long to retry a sweep JetStream refuses


class _PayloadFields(TypedDict):
    payload: str
    encoding: Literal["utf-8", "base64"]


def _payload_fields(data: bytes) -> _PayloadFields:
    try:
        return {"payload": data.decode("utf-8"), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(data).decode(), "encoding": "base64"}


def _original_bytes(letter: DeadLetter) -> bytes:
    if letter.encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode()


# One bucket handle per connection: opening it is an API round trip, and failures come in
# bursts (a flaky dependency fails every task at once).
_failure_buckets: weakref.WeakKeyDictionary[Client, KeyValueBucket] = weakref.WeakKeyDictionary()


async def aremember_failure(client: Client, msg: Message, error: str) -> None:
    """Keep the latest error per stream message, for the dead letter if it comes to that."""
    bucket = _failure_buckets.get(client)
    if bucket is None:
        bucket = await KeyValueBucket.adeclare(client, FAILURES_BUCKET, ttl=7 * 86400)
        _failure_buckets[client] = bucket
    info = msg.info
    await bucket.aput(f"{info.stream}.{info.stream_seq}",
                      FailureRecord(error=error, deliveries=info.num_delivered))


async def adead_letter_now(client: Client, subjects: Subjects, msg: Message, reason: str, *,
                           kind: Literal["poison", "given_up"] = "poison") -> None:
    """No retry can fix it (poison input, or its worker gave up), so it goes to the DLQ at
    once (then term it)."""
    info = msg.info
    letter = DeadLetter(reason=kind, error=reason, original_subject=msg.subject,
                        headers=dict(msg.headers), stream=info.stream,
                        stream_seq=info.stream_seq, consumer=info.consumer,
                        deliveries=info.num_delivered, **_payload_fields(msg.data))
    await client.js.apublish(subjects.dlq(info.stream, info.consumer), letter,
                             msg_id=f"{info.stream}.{info.stream_seq}")


class DeadLetterNotFound(AgentlabError, LookupError):
    """No dead letter at that sequence of DEAD_LETTERS (never was, or redriven already)."""

    def __init__(self, seq: int):
        self.seq = seq
        super().__init__(
            f"No dead letter with seq {seq} in stream '{DLQ_STREAM}': it never existed or was "
            "redriven (or purged) already. List the ones there with `agentlab dlq list` or "
            "DeadLetterOffice(client).list().")


class DeadLetterOffice(Service):
    """Turns max-delivery advisories into dead letters; lists, shows and redrives them.

    Advisories are core NATS messages: while no office is subscribed, or while its
    connection is down, they are lost, and a message that ran out of deliveries then stays
    in its work queue, never delivered again. ``start()`` therefore first runs ``sweep()``,
    which finds such messages from the consumers' state and buries them too, and a started
    office sweeps again after every reconnect of its connection (a server restart, a
    network blip), retrying while JetStream is still recovering or electing leaders, and
    every ``sweep_every`` seconds besides (None: never).
    """

    def __init__(self, client: Client, subjects: Subjects | None = None,
                 streams: tuple[str, ...] = WORK_STREAMS,
                 sweep_every: float | None = 30.0):
        self.client = client
        # A safety net under the advisories and the reconnect sweeps: a server that restarts
        # may not announce again a message that ran out of deliveries before it went down.
        self.sweep_every = sweep_every
        self.subjects = subjects or Subjects()
        self.streams = streams
        self.handled = 0
        self.swept = 0  # of those, found by a sweep: their advisory went unheard
        self._sub: Any = None
        self._watcher: asyncio.Future | None = None
        self._failures: KeyValueBucket | None = None
        self._bridge = client._bridge

    def start(self, sweep: bool = True) -> DeadLetterOffice:
        """Listen for advisories (and first bury what was missed while nobody listened)."""
        return self._bridge.run(self._start_service(sweep), operation="start")

    async def astart(self, sweep: bool = True) -> DeadLetterOffice:
        return await self._bridge.arun(self._start_service(sweep))

    async def _astart_service(self, sweep: bool = True) -> None:
        # Subscribe before sweeping: an advisory during the sweep is not missed.
        self._sub = await self.client.asubscribe(f"{ADVISORY}.>", self._on_advisory)
        if sweep:
            await self.asweep()
        self._watcher = asyncio.ensure_future(self._sweep_after_reconnects())

    async def _astop_service(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.aunsubscribe()

    async def _sweep_after_reconnects(self) -> None:
        while not self.client.is_closed:
            try:
                await asyncio.wait_for(self.client.anext_reconnect(), self.sweep_every)
            except asyncio.TimeoutError:  # sweep_every passed without a reconnect
                pass
            deadline = time.monotonic() + SWEEP_RETRY_FOR
            while not self.client.is_closed:
                try:
                    buried = await self.asweep()
                except Exception as error:  # streams still recovering, a leader election
                    if time.monotonic() > deadline:
                        log.warning("dead-letter office: no sweep for %r succeeded within "
                                    "%g s (%s); the next one tries again", self.client.name,
                                    SWEEP_RETRY_FOR, error)
                        break
                    await asyncio.sleep(0.25)
                    continue
                if buried:
                    log.warning("dead-letter office: %d dead letter(s) whose advisory %r "
                                "never heard", buried, self.client.name)
                break

    async def _on_advisory(self, msg: Message) -> None:
        advisory = msg.json()
        stream, seq = advisory["stream"], advisory["stream_seq"]
        if stream not in self.streams:
            return
        await self.abury(stream, seq, advisory["consumer"], advisory.get("deliveries", 0))

    def sweep(self) -> int:
        """Bury messages whose max-deliveries advisory went unheard. Returns how many."""
        return self.client._bridge.run(self.asweep(), operation="sweep")

    async def asweep(self) -> int:
        async def sweep() -> int:
            buried = 0
            for stream in self.streams:
                try:
                    info = await self.client.js.astream_info(stream)
                    consumers = await self.client.js.aconsumers(stream)
                except StreamNotFound:
                    continue
                if info.config.retention != RetentionPolicy.WORK_QUEUE:
                    continue  # acked messages stay in other streams: no way to tell them apart
                for consumer in consumers:
                    buried += await self._sweep_consumer(stream, consumer)
            return buried
        return await self.client._bridge.arun(sweep())

    async def _sweep_consumer(self, stream: str, consumer: ConsumerInfo) -> int:
        config = consumer.config
        if not config.max_deliver or config.max_deliver < 1:
            return 0
        # In a work queue an acked message is deleted, so a message still stored at or below
        # the ack floor was given up. With nothing awaiting an ack (a nak'ed message waiting
        # for its retry counts as awaiting), all delivered ones are settled.
        floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
        if not consumer.num_ack_pending and consumer.delivered:
            floor = max(floor, consumer.delivered.stream_seq or 0)
        filters = config.filter_subjects or [config.filter_subject or ">"]
        buried = 0
        for subject in filters:
            seq = 1
            while seq <= floor:
                try:
                    raw = await self.client.js.aget_message(stream, seq, subject=subject)
                except (MessageNotFound, StreamNotFound):
                    break
                if raw.seq > floor:
                    break
                if await self.abury(stream, raw.seq, consumer.name, config.max_deliver):
                    buried += 1
                    self.swept += 1
                seq = raw.seq + 1
        return buried

    async def abury(self, stream: str, seq: int, consumer: str, deliveries: int) -> bool:
        """Copy ``stream#seq`` into DEAD_LETTERS, then delete it. False if it is gone."""
        try:
            original = await self.client.js.aget_message(stream, seq)
        except Exception as error:  # already gone (acked late, or buried by another office)
            log.info("dead letter %s#%d: original not found (%s)", stream, seq, error)
            return False
        if self._failures is None:
            self._failures = await KeyValueBucket.adeclare(self.client, FAILURES_BUCKET,
                                                           ttl=7 * 86400)
        failure = await self._failures.aget(f"{stream}.{seq}") or {}
        headers = {k: v for k, v in original.headers.items() if isinstance(v, str)}
        letter = DeadLetter(reason="max_deliveries",
                            error=failure.get("error", "no error recorded (handler hung?)"),
                            original_subject=original.subject, headers=headers,
                            stream=stream, stream_seq=seq, consumer=consumer,
                            deliveries=deliveries, **_payload_fields(original.data))
        # Publish first, delete second: a crash in between leaves a copy, never a loss
        # (and the msg id makes a second copy within the duplicate window a no-op).
        tracer = tracing.tracer()
        if tracer is None:
            await self.client.js.apublish(self.subjects.dlq(stream, consumer), letter,
                                          msg_id=f"{stream}.{seq}")
        else:  # in the trace of the task given up on (its traceparent), not the advisory's
            with tracing.processing(tracer, original.subject, original.headers,
                                    operation="dead_letter", consumer=consumer, stream=stream,
                                    deliveries=deliveries):
                await self.client.js.apublish(self.subjects.dlq(stream, consumer), letter,
                                              msg_id=f"{stream}.{seq}")
        try:
            await self.client.js.adelete_message(stream, seq)
        except (MessageNotFound, StreamNotFound):
            return False  # another office buried it at the same time
        self.handled += 1
        log.warning("dead letter: %s#%d on '%s' after %d deliveries: %s", stream, seq,
                    letter.original_subject, deliveries, letter.error)
        return True

    # -- reading and redriving ---------------------------------------------------------
    def list(self, limit: int = 100) -> list[tuple[int, DeadLetter]]:
        """``(dlq_seq, letter)`` pairs, oldest first."""
        return self.client._bridge.run(self.alist(limit), operation="list")

    # ``list`` in this class body is the method above; the annotation needs the builtin.
    async def alist(self, limit: int = 100) -> builtins.list[tuple[int, DeadLetter]]:
        async def read() -> list[tuple[int, DeadLetter]]:
            await self.client.js.astream_info(DLQ_STREAM)  # StreamNotFound, clearly, if absent
            out: list[tuple[int, DeadLetter]] = []
            seq = 0
            while len(out) < limit:
                try:
                    raw = await self.client.js.aget_message(
                        DLQ_STREAM, seq + 1, subject=self.subjects.dlq_all(), direct=True)
                except MessageNotFound:
                    break  # no more
                seq = raw.seq
                out.append((seq, DeadLetter.model_validate_json(raw.data or b"{}")))
            return out
        return await self.client._bridge.arun(read())

    def show(self, seq: int) -> DeadLetter:
        """The dead letter at ``seq`` of DEAD_LETTERS; DeadLetterNotFound if there is none."""
        return self.client._bridge.run(self.ashow(seq), operation="show")

    async def ashow(self, seq: int) -> DeadLetter:
        async def read() -> DeadLetter:
            try:
                raw = await self.client.js.aget_message(DLQ_STREAM, seq)
            except MessageNotFound:  # (without a DLQ at all, StreamNotFound says so)
                raise DeadLetterNotFound(seq) from None
            return DeadLetter.model_validate_json(raw.data or b"{}")
        if seq < 1:
            raise DeadLetterNotFound(seq)
        return await self.client._bridge.arun(read())

    def redrive(self, seq: int) -> PubAck:
        """Republish a dead letter to its original subject and remove it from the DLQ."""
        return self.client._bridge.run(self.aredrive(seq), operation="redrive")

    async def aredrive(self, seq: int) -> PubAck:
        letter = await self.ashow(seq)
        headers = {k: v for k, v in letter.headers.items() if not k.startswith("Nats-")}
        headers["Agentlab-Redriven-From"] = f"{DLQ_STREAM}#{seq}"
        # A fresh Nats-Msg-Id: the original id may still be inside the duplicate window.
        ack = await self.client.js.apublish(
            letter.original_subject, _original_bytes(letter), headers=headers,
            msg_id=f"redrive-{letter.stream}.{letter.stream_seq}-{new_id()[:8]}")
        await self.client.js.adelete_message(DLQ_STREAM, seq)
        return ack


def letter_summary(seq: int, letter: DeadLetter) -> dict[str, Any]:
    return {"seq": seq, "reason": letter.reason, "subject": letter.original_subject,
            "stream": f"{letter.stream}#{letter.stream_seq}", "consumer": letter.consumer,
            "deliveries": letter.deliveries, "error": letter.error,
            "dead_at": letter.dead_at.isoformat(timespec="seconds")}


__all__ = ["DeadLetterOffice", "DeadLetterNotFound", "adead_letter_now", "aremember_failure",
           "letter_summary"]
