"""A message as it reaches you: data, headers, reply subject, and for JetStream its ack verbs.

    msg = sub.next(timeout=1)
    print(msg.subject, msg.json())
    msg.ack()        # JetStream only: done, remove it from a work queue
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from ..telemetry import tracing
from ..wire.messages import AgentMessage, decode_json, decode_model, to_bytes

if TYPE_CHECKING:
    from .client import Client

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class DeliveryInfo:
    """Where a JetStream message came from, parsed from its ``$JS.ACK`` reply subject."""

    stream: str
    consumer: str
    num_delivered: int
    stream_seq: int
    consumer_seq: int
    timestamp: datetime
    num_pending: int

    @property
    def redelivered(self) -> bool:
        return self.num_delivered > 1


class Message:
    """One received message. Cheap to create: decoding happens when you ask for it."""

    __slots__ = ("subject", "data", "headers", "reply", "_client", "_acked", "_info")

    def __init__(self, subject: str, data: bytes, headers: dict[str, str] | None,
                 reply: str, client: Client):
        self.subject = subject
        self.data = data
        self.headers = headers or {}
        self.reply = reply
        self._client = client
        self._acked = False
        self._info: DeliveryInfo | None = None

    @classmethod
    def from_nats(cls, msg: Any, client: Client) -> Message:
        return cls(msg.subject, msg.data, msg.headers, msg.reply, client)

    # -- reading ---------------------------------------------------------------------
    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def json(self) -> Any:
        """The payload parsed as JSON; a clear MessageDecodeError (naming the subject) if not."""
        return decode_json(self.data, self.subject)

    def decode(self, model: type[M]) -> M:
        """The payload validated as a pydantic model."""
        return decode_model(self.data, model, self.subject)

    def agent_message(self) -> AgentMessage:
        return AgentMessage.from_bytes(self.data, self.subject)

    # -- replying (core request/reply) -------------------------------------------------
    def respond(self, data: Any = b"", headers: dict[str, str] | None = None) -> None:
        """Answer a request. Does not wait; safe from handlers on any thread."""
        if not self.reply:
            raise ValueError(
                f"The message on '{self.subject}' has no reply subject: it was published, "
                "not requested, so there is nobody to respond to."
            )
        self._client.reply(self.reply, data, headers=headers)

    # -- JetStream acknowledgements ------------------------------------------------------
    @property
    def info(self) -> DeliveryInfo:
        if self._info is None:
            self._info = parse_ack_subject(self.reply, self.subject)
        return self._info

    @property
    def is_jetstream(self) -> bool:
        return self.reply.startswith("$JS.ACK.")

    def ack(self) -> None:
        """Processing finished: the stream may forget it (work queue) and it is never
        redelivered."""
        self._ack_with(b"+ACK")

    def nak(self, delay: float | None = None) -> None:
        """Processing failed: redeliver, now or after ``delay`` seconds."""
        if delay is None:
            self._ack_with(b"-NAK")
        else:
            self._ack_with(b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode())

    def in_progress(self) -> None:
        """Still working: restart the ack-wait clock. Can be sent many times."""
        self._ack_with(b"+WPI", final=False)

    def term(self, reason: str = "") -> None:
        """Never redeliver (poison input). The reason shows up in the server's advisory."""
        self._ack_with(b"+TERM" + (b" " + reason.encode() if reason else b""))

    def _ack_with(self, verb: bytes, final: bool = True) -> None:
        if not self.is_jetstream:
            raise ValueError(
                f"The message on '{self.subject}' did not come from a JetStream consumer, "
                "so there is nothing to acknowledge. Use client.js.pull(...) to consume a stream."
            )
        if self._acked:
            raise ValueError(
                f"Message {self.info.stream}#{self.info.stream_seq} was already acknowledged; "
                "each message takes one ack, nak or term."
            )
        self._acked = final
        tracer = tracing.tracer() if final else None
        if tracer is None:
            self._client._ack_reply(self.reply, verb)
            return
        try:
            info: DeliveryInfo | None = self.info
        except ValueError:  # an ack subject of a shape we do not know: settle it all the same
            info = None
        # The stream and the message id are on the span of its processing, the parent.
        span = tracing.settle(tracer, _SETTLE_NAMES.get(verb[:4], "settle"), self.subject,
                              consumer=info.consumer if info else None,
                              deliveries=info.num_delivered if info else None)
        with tracing.ending(span):
            self._client._ack_reply(self.reply, verb)

    def __repr__(self) -> str:
        preview = self.data[:60]
        return f"<Message {self.subject} {len(self.data)}B {preview!r}>"


# The settle spans' operation names: JetStream's own verbs (the conventions' examples are
# "ack" and "nack"; a redelivery request is called a nak in NATS).
_SETTLE_NAMES = {b"+ACK": "ack", b"-NAK": "nak", b"+TER": "term"}


def nak_unless_settled(msg: Message, delay: float) -> None:
    """nak ``msg`` unless it was acked or termed already (then there is nothing to undo)."""
    try:
        msg.nak(delay=delay)
    except ValueError:
        pass


def parse_ack_subject(reply: str, subject: str = "") -> DeliveryInfo:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>, or the v2 form
    # with <domain>.<account hash> in front and a random token at the end.
    tokens = reply.split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        raise ValueError(f"The message on '{subject}' has no JetStream metadata (reply {reply!r}).")
    if len(tokens) >= 12:
        tokens = tokens[:2] + tokens[4:]
    stream, consumer = tokens[2], tokens[3]
    delivered, sseq, cseq, ts, pending = (int(t) for t in tokens[4:9])
    return DeliveryInfo(stream, consumer, delivered, sseq, cseq,
                        datetime.fromtimestamp(ts / 1e9, tz=timezone.utc), pending)


__all__ = ["Message", "DeliveryInfo", "parse_ack_subject", "to_bytes"]
