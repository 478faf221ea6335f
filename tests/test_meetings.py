"""Meetings on the real server: invitations, chat order, decisions, late joiners, live follow.

Each test uses its own meeting ids and role names (from ``unique``), so the module's
MEETINGS stream can be shared without one test reading another's transcript.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agentlab import BadSubject, StreamNotFound, Subjects
from agentlab.org.meetings import (
    Meeting,
    MeetingEntry,
    MeetingInvitation,
    acknowledge,
    attend_meetings,
)


def wait_for(check, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_each_invitee_receives_its_invitation(org_lab, connect, unique):
    roles = [f"{unique}a", f"{unique}b", f"{unique}c"]
    inboxes = {role: connect(role).subscribe(Subjects().meetings(role)) for role in roles}
    meeting = Meeting.create(org_lab, "Q3 roadmap", invitees=roles + roles[:1], organizer="ceo")
    for role, sub in inboxes.items():
        invitation = sub.next(timeout=2).decode(MeetingInvitation)
        assert (invitation.meeting_id, invitation.topic) == (meeting.id, "Q3 roadmap")
        assert (invitation.invitee, invitation.organizer) == (role, "ceo")
        assert invitation.invitees == roles  # duplicates dropped, order kept
        assert invitation.messages_subject == f"genbrain.meetings.{meeting.id}.messages"
        assert sub.messages(timeout=0.2) == []  # exactly one each, despite the duplicate


def test_a_role_invited_later_gets_the_same_meeting(org_lab, connect, unique):
    late = f"{unique}late"
    inbox = connect(late).subscribe(Subjects().meetings(late))
    meeting = Meeting.create(org_lab, "hiring", invitees=[f"{unique}early"], organizer="ceo")
    meeting.say("ceo", "before the late one was asked")
    meeting.invite(late, organizer="ceo")
    invitation = inbox.next(timeout=2).decode(MeetingInvitation)
    assert (invitation.meeting_id, invitation.topic, invitation.invitee) == \
        (meeting.id, "hiring", late)
    joined = Meeting.join(connect(f"{late}-reader"), invitation.meeting_id)
    assert [e.text for e in joined.transcript()] == ["before the late one was asked"]
    with pytest.raises(BadSubject):
        meeting.invite("bad role", organizer="ceo")


def test_chat_order_and_decisions_are_recorded(org_lab, connect, unique):
    meeting = Meeting.create(org_lab, "pricing", invitees=["cfo"], organizer="ceo",
                             meeting_id=f"{unique}-pricing")
    cfo = Meeting.join(connect("cfo"), meeting.id)
    for i in range(6):  # two speakers on two connections, taking turns
        (meeting if i % 2 == 0 else cfo).say("ceo" if i % 2 == 0 else "cfo", f"line {i}")
    decision = cfo.decide("cfo", "raise prices 5%", effective="2025-01-01")
    said = meeting.say("ceo", "agreed")
    entries = meeting.transcript()
    assert [e.text for e in entries] == [f"line {i}" for i in range(6)] + ["raise prices 5%",
                                                                          "agreed"]
    assert [e.kind for e in entries][-2:] == ["decision", "message"]
    assert entries[-1] == said and entries[-2] == decision
    assert entries[-2].data == {"effective": "2025-01-01"}
    assert [d.text for d in meeting.decisions()] == ["raise prices 5%"]


def test_late_joiner_replays_exactly_what_was_said(org_lab, connect, unique):
    meeting = Meeting.create(org_lab, "launch", organizer="ceo", meeting_id=f"{unique}-launch")
    said = [meeting.say("ceo", f"point {i}", n=i) for i in range(3)]
    said.append(meeting.decide("ceo", "launch on Monday"))
    said += [meeting.say("cto", f"note {i}") for i in range(2)]
    late = Meeting.join(connect("late"), meeting.id)  # a new connection, after the fact
    entries = late.transcript()
    assert entries == said
    assert [(e.kind, e.sender) for e in entries] == [("message", "ceo")] * 3 + [
        ("decision", "ceo"), ("message", "cto"), ("message", "cto")]
    assert late.decisions() == [said[3]]
    # The throwaway consumers are gone: a replay leaves nothing behind on the stream.
    assert not [c for c in org_lab.js.consumers("MEETINGS")
                if c.config.filter_subject and meeting.id in c.config.filter_subject]


def test_two_meetings_do_not_mix(org_lab, unique):
    one = Meeting.create(org_lab, "one", organizer="ceo", meeting_id=f"{unique}-one")
    two = Meeting.create(org_lab, "two", organizer="ceo", meeting_id=f"{unique}-two")
    # A prefix of the other's id: a careless filter ('...{id}*') would mix them.
    three = Meeting.create(org_lab, "three", organizer="ceo", meeting_id=f"{unique}-one-b")
    for i in range(3):
        one.say("ceo", f"one {i}")
        two.say("ceo", f"two {i}")
        three.say("ceo", f"three {i}")
    two.decide("ceo", "two decided")
    assert [e.text for e in one.transcript()] == ["one 0", "one 1", "one 2"]
    assert [e.text for e in two.transcript()] == ["two 0", "two 1", "two 2", "two decided"]
    assert one.decisions() == [] and {e.meeting_id for e in three.transcript()} == {three.id}


@pytest.mark.parametrize("bad", ["has.dot", "has space", "", "*", ">", "a*"])
def test_meeting_ids_are_validated(org_lab, bad):
    with pytest.raises(BadSubject):
        Meeting.create(org_lab, "bad", invitees=["cto"], organizer="ceo", meeting_id=bad)
    with pytest.raises(BadSubject):
        Meeting.join(org_lab, bad)


def test_bad_invitee_sends_no_invitation_at_all(org_lab, connect, unique):
    sub = connect("ok").subscribe(Subjects().meetings(f"{unique}ok"))
    with pytest.raises(BadSubject, match="role"):
        Meeting.create(org_lab, "t", invitees=[f"{unique}ok", "not.a.role"], organizer="ceo")
    assert sub.messages(timeout=0.2) == []


def test_empty_meeting_has_an_empty_transcript(org_lab, unique):
    assert Meeting.join(org_lab, f"{unique}-nobody").transcript() == []


def test_follow_delivers_new_entries_live_in_order(org_lab, connect, unique):
    meeting = Meeting.create(org_lab, "live", organizer="ceo", meeting_id=f"{unique}-live")
    meeting.say("ceo", "before")
    watcher = Meeting.join(connect("watcher"), meeting.id)
    live: list[MeetingEntry] = []
    replayed: list[MeetingEntry] = []
    feed = watcher.follow(live.append)
    full = watcher.follow(replayed.append, replay=True)
    try:
        for i in range(5):
            meeting.say("ceo", f"live {i}")
        meeting.decide("ceo", "done")
        assert wait_for(lambda: len(live) == 6 and len(replayed) == 7)
        assert [e.text for e in live] == [f"live {i}" for i in range(5)] + ["done"]
        assert [e.text for e in replayed] == ["before"] + [e.text for e in live]
    finally:
        feed.stop()
        full.stop()
    meeting.say("ceo", "after stop")
    time.sleep(0.1)
    assert len(live) == 6


def test_attend_meetings_joins_reads_and_answers(org_lab, connect, unique):
    cto, cmo = f"{unique}cto", f"{unique}cmo"
    seen: list[int] = []
    lock = threading.Lock()

    def cmo_answer(invitation: MeetingInvitation, transcript: list[MeetingEntry]) -> str:
        with lock:
            seen.append(len(transcript))
        return f"cmo read {len(transcript)}"

    attend_meetings(connect("cto"), cto)                      # the reference behaviour
    attend_meetings(connect("cmo-1"), cmo, cmo_answer)        # two instances of one role:
    attend_meetings(connect("cmo-2"), cmo, cmo_answer)        # the role answers once
    meeting = Meeting.create(org_lab, "hiring", invitees=[cto, cmo], organizer="ceo",
                             meeting_id=f"{unique}-hiring")
    assert wait_for(lambda: len(meeting.transcript()) == 2)
    time.sleep(0.2)
    answers = {e.sender: e.text for e in meeting.transcript()}
    assert len(meeting.transcript()) == 2 and seen in ([0], [1])
    assert answers[cmo] == f"cmo read {seen[0]}"
    assert answers[cto] in (f"{cto} joined 'hiring' after reading {n} entries" for n in (0, 1))


def test_acknowledge_is_deterministic():
    invitation = MeetingInvitation(meeting_id="m1", topic="plan", organizer="ceo", invitee="cto",
                                   invitees=["cto"], messages_subject="x", decisions_subject="y")
    assert acknowledge(invitation, []) == "cto joined 'plan' after reading 0 entries"


def test_async_twins(org_lab, unique):
    async def scenario():
        meeting = await Meeting.acreate(org_lab, "async", organizer="ceo",
                                        meeting_id=f"{unique}-async")
        await meeting.asay("ceo", "hello")
        await meeting.adecide("ceo", "yes")
        return await meeting.atranscript(), await meeting.adecisions()

    transcript, decisions = asyncio.run(scenario())
    assert [e.text for e in transcript] == ["hello", "yes"]
    assert [e.text for e in decisions] == ["yes"]


def test_reading_without_the_stream_says_which_stream(org_lab, unique):
    class Elsewhere(Meeting):
        stream = f"NO_SUCH_{unique}"

    with pytest.raises(StreamNotFound, match=f"NO_SUCH_{unique}"):
        Elsewhere.join(org_lab, f"{unique}-x").transcript()
