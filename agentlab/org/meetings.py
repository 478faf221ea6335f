"""Meetings: invite roles, chat and record decisions in the MEETINGS stream; join late, replay.

    meeting = Meeting.create(ceo, "Q3 roadmap", invitees=["cto", "cmo"], organizer="ceo")
    meeting.say("ceo", "Ship in May?")
    meeting.decide("ceo", "Ship in May", owner="cto")
    for entry in Meeting.join(cmo, meeting.id).transcript():   # a late joiner replays it all
        print(entry.kind, entry.sender, entry.text)

Invitations go to ``{root}.agents.{role}.meetings`` (core NATS: a role must be listening).
Chat goes to ``{root}.meetings.{id}.messages`` and decisions to ``...{id}.decisions``; the
MEETINGS stream stores both, so anyone can read the meeting from its first word, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import Field

from ..core.client import Client
from ..core.received import Message
from ..core.streamdata import OrderedSubscription
from ..core.subjects import Subjects, validate_token
from ..core.subscription import Subscription
from ..errors import BadSubject, MessageDecodeError
from ..telemetry import tracing
from ..wire.messages import (
    UtcDatetime,
    WireModel,
    new_id,
    register_wire_model,
    to_bytes,
    utc_now,
)
from .models import SubjectToken
from .streams import MEETINGS_STREAM

log = logging.getLogger("agentlab")



@register_wire_model
class MeetingInvitation(WireModel):
    """Sent to each invitee (``invitee``) on ``{root}.agents.{invitee}.meetings``."""

    id: str = Field(default_factory=new_id, min_length=1)
    meeting_id: SubjectToken = Field(min_length=1)
    topic: str
    organizer: SubjectToken = Field(min_length=1)
    invitee: SubjectToken = Field(min_length=1)
    invitees: list[SubjectToken]
    messages_subject: str
    decisions_subject: str
    invited_at: UtcDatetime = Field(default_factory=utc_now)


@register_wire_model
class MeetingEntry(WireModel):
    """One transcript line, said (``message``) or decided (``decision``); id = Nats-Msg-Id."""

    id: str = Field(default_factory=new_id, min_length=1)
    meeting_id: SubjectToken = Field(min_length=1)
    kind: Literal["message", "decision"]
    sender: SubjectToken = Field(min_length=1)
    text: str
    data: dict[str, Any] = Field(default_factory=dict)
    at: UtcDatetime = Field(default_factory=utc_now)


EntryHandler = Callable[[MeetingEntry], Any]


def _meeting_id(meeting_id: str | None) -> str:
    if meeting_id is None:
        return f"m{new_id()[:12]}"
    validate_token(meeting_id, "meeting_id")
    if meeting_id == "*":  # validate_token lets '*' through for patterns; an id is concrete
        raise BadSubject("meeting_id '*' is a wildcard; a meeting needs a concrete id "
                         "such as 'q3-plan'")
    return meeting_id


class Meeting:
    """A handle on one meeting: say, decide, read the transcript, follow it live."""

    stream = MEETINGS_STREAM  # the stream that captures {root}.meetings.*.<leaf>

    def __init__(self, client: Client, meeting_id: str, *, topic: str = "",
                 subjects: Subjects | None = None):
        self.client = client
        self.id = _meeting_id(meeting_id)
        self.topic = topic
        self.subjects = subjects or Subjects()
        self.messages_subject = self.subjects.meeting_messages(self.id)
        self.decisions_subject = self.subjects.meeting_decisions(self.id)

    def _run(self, coro: Any, operation: str) -> Any:
        # Sync methods run their async twin on the bridge loop: one implementation each.
        return self.client._bridge.run(coro, operation=operation)

    # -- opening and joining ------------------------------------------------------------
    @classmethod
    def create(cls, client: Client, topic: str, invitees: Iterable[str] = (), *,
               organizer: str, meeting_id: str | None = None,
               subjects: Subjects | None = None) -> Meeting:
        """Open a meeting (a fresh id unless given) and invite each role on its meetings subject."""
        return client._bridge.run(cls.acreate(client, topic, invitees, organizer=organizer,
                                              meeting_id=meeting_id, subjects=subjects),
                                  operation="create meeting")

    @classmethod
    async def acreate(cls, client: Client, topic: str, invitees: Iterable[str] = (), *,
                      organizer: str, meeting_id: str | None = None,
                      subjects: Subjects | None = None) -> Meeting:
        meeting = cls(client, _meeting_id(meeting_id), topic=topic, subjects=subjects)
        await meeting.ainvite(*invitees, organizer=organizer)
        return meeting

    def invite(self, *roles: str, organizer: str) -> None:
        """Invite more roles to this meeting; they can replay what was said before."""
        self._run(self.ainvite(*roles, organizer=organizer), "invite")

    async def ainvite(self, *roles: str, organizer: str) -> None:
        # Once each, in the order given; each one checked as the role it is (BadSubject),
        # before the invitation model sees the list.
        invitees = [validate_token(role, "role") for role in dict.fromkeys(roles)]
        validate_token(organizer, "organizer")
        # Build (and so validate) every subject before the first invitation leaves.
        invitations = [(self.subjects.meetings(role), MeetingInvitation(
            meeting_id=self.id, topic=self.topic, organizer=organizer, invitee=role,
            invitees=invitees, messages_subject=self.messages_subject,
            decisions_subject=self.decisions_subject)) for role in invitees]
        for subject, invitation in invitations:
            await self.client.apublish(subject, invitation)
        await self.client.aflush()  # the invitations are on the server when this returns

    @classmethod
    def join(cls, client: Client, meeting_id: str, *, topic: str = "",
             subjects: Subjects | None = None) -> Meeting:
        """A handle on an existing meeting, e.g. for a late joiner; reads nothing yet."""
        return cls(client, meeting_id, topic=topic, subjects=subjects)

    # -- speaking -----------------------------------------------------------------------
    async def _record(self, subject: str, kind: Literal["message", "decision"], sender: str,
                      text: str, data: dict[str, Any]) -> MeetingEntry:
        entry = MeetingEntry(meeting_id=self.id, kind=kind, text=text, data=data,
                             sender=validate_token(sender, "sender"))
        tracer = tracing.tracer()
        if tracer is None:
            await self.client.js.apublish(subject, entry, msg_id=entry.id)
            return entry
        # The entry's publish is the meeting message's span, named by the subject's shape
        # (a subject per meeting) and saying who spoke.
        span, headers = tracing.start_send(
            tracer, "publish", subject, {"Nats-Msg-Id": entry.id},
            template=subject.replace(f".{self.id}.", ".{meeting_id}.", 1),
            attributes={"agentlab.meeting.id": self.id, "agentlab.meeting.entry": kind,
                        "agentlab.sender": entry.sender})
        with tracing.ending(span):
            await self.client.js._apublish(subject, to_bytes(entry), headers, 2.0)
        return entry

    def say(self, sender: str, text: str, **data: Any) -> MeetingEntry:
        """Add a chat message; returns once the stream has stored it."""
        return self._run(self.asay(sender, text, **data), "say")

    async def asay(self, sender: str, text: str, **data: Any) -> MeetingEntry:
        return await self._record(self.messages_subject, "message", sender, text, data)

    def decide(self, by: str, decision: str, **data: Any) -> MeetingEntry:
        """Record a decision; returns once the stream has stored it."""
        return self._run(self.adecide(by, decision, **data), "decide")

    async def adecide(self, by: str, decision: str, **data: Any) -> MeetingEntry:
        return await self._record(self.decisions_subject, "decision", by, decision, data)

    # -- reading --------------------------------------------------------------------------
    def transcript(self, timeout: float = 5.0) -> list[MeetingEntry]:
        """Every message and decision stored so far, in the order the stream received them."""
        return self._run(self.atranscript(timeout), "transcript")

    async def atranscript(self, timeout: float = 5.0) -> list[MeetingEntry]:
        return await self._read(self.subjects.meeting_all(self.id), timeout)

    def decisions(self, timeout: float = 5.0) -> list[MeetingEntry]:
        """The decisions only, in order."""
        return self._run(self.adecisions(timeout), "decisions")

    async def adecisions(self, timeout: float = 5.0) -> list[MeetingEntry]:
        return await self._read(self.decisions_subject, timeout)

    async def _read(self, filter_subject: str, timeout: float) -> list[MeetingEntry]:
        # The stream's snapshot read: exactly what was stored when the read began.
        stored = await self.client.js.aread(self.stream, filter_subject, timeout=timeout)
        return [e for e in map(self._decode, stored) if e is not None]

    def _decode(self, msg: Message) -> MeetingEntry | None:
        try:
            return msg.decode(MeetingEntry)
        except MessageDecodeError as error:
            # One foreign or broken message must not make the whole meeting unreadable.
            log.warning("meeting %s: skipping an entry that is not a MeetingEntry: %s",
                        self.id, error)
            return None

    # -- following live -----------------------------------------------------------------
    def follow(self, handler: EntryHandler, *, replay: bool = False) -> MeetingFeed:
        """Call ``handler(entry)`` for each new entry, in order (old ones first if ``replay``)."""
        return self._run(self._follow(handler, replay), "follow")

    async def afollow(self, handler: EntryHandler, *, replay: bool = False) -> MeetingFeed:
        return await self.client._bridge.arun(self._follow(handler, replay))

    async def _follow(self, handler: EntryHandler, replay: bool) -> MeetingFeed:
        feed = MeetingFeed(self)

        async def on_entry(msg: Message) -> None:
            # Awaited once per message, so the handler sees stream order.
            entry = self._decode(msg)
            if entry is None:
                return
            try:
                await self.client._bridge.arun_handler(handler, entry)
                feed.handled += 1
            except Exception:
                feed.errors += 1
                log.exception("meeting %s: follow handler failed; the feed carries on", self.id)

        feed._sub = await self.client.js.asubscribe_ordered(
            self.stream, self.subjects.meeting_all(self.id), on_entry, replay=replay)
        return feed

    def __repr__(self) -> str:
        return f"<Meeting {self.id} {self.topic!r}>"


class MeetingFeed:
    """A live view of a meeting started by ``Meeting.follow``; ``stop()`` ends it."""

    def __init__(self, meeting: Meeting):
        self.meeting = meeting
        self.handled = 0
        self.errors = 0
        self._sub: OrderedSubscription | None = None

    def stop(self) -> None:
        self.meeting._run(self.astop(), "stop")

    async def astop(self) -> None:
        await self.meeting.client._bridge.arun(self._stop())

    async def _stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            await sub.aclose()
        except Exception:  # connection closed or consumer gone: the server cleans up
            pass


# -- a reference participant ------------------------------------------------------------
Responder = Callable[[MeetingInvitation, "list[MeetingEntry]"], "str | None"]


def acknowledge(invitation: MeetingInvitation, transcript: list[MeetingEntry]) -> str:
    """The reference (deterministic) answer: who joined, on what, having read how much."""
    return (f"{invitation.invitee} joined '{invitation.topic}' "
            f"after reading {len(transcript)} entries")


def _attending(client: Client, role: str, respond: Responder | None,
               subjects: Subjects | None) -> tuple[str, Callable[[Message], None]]:
    if role == "*":  # a participant speaks as its role, so the role must be concrete
        raise BadSubject("role '*' is a wildcard; attend meetings as a concrete role such as 'cto'")
    answer = respond or acknowledge

    def on_invitation(msg: Message) -> None:  # sync: runs in the bridge's pool, may block
        invitation = msg.decode(MeetingInvitation)
        meeting = Meeting.join(client, invitation.meeting_id, topic=invitation.topic,
                               subjects=subjects)
        text = answer(invitation, meeting.transcript())
        if text is not None:
            meeting.say(role, str(text))
    return (subjects or Subjects()).meetings(role), on_invitation


def attend_meetings(client: Client, role: str, respond: Responder | None = None, *,
                    subjects: Subjects | None = None) -> Subscription:
    """Answer every invitation to ``role``: join, read the transcript, say ``respond(...)``.

    ``respond(invitation, transcript)`` returns the text to say, or None to stay silent.
    Instances of one role share invitations (a queue group), so a role answers once.
    """
    subject, handler = _attending(client, role, respond, subjects)
    return client.subscribe(subject, handler, queue=role)


async def aattend_meetings(client: Client, role: str, respond: Responder | None = None, *,
                           subjects: Subjects | None = None) -> Subscription:
    subject, handler = _attending(client, role, respond, subjects)
    return await client.asubscribe(subject, handler, queue=role)


__all__ = ["MEETINGS_STREAM", "Meeting", "MeetingEntry", "MeetingFeed", "MeetingInvitation",
           "acknowledge", "attend_meetings", "aattend_meetings"]
