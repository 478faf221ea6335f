"""The bad input catalogue: one test per row, each asserting the exact error a user sees,
and that one agent, the *sentinel*, keeps working through every row.

| row                                       | what the user sees                                 |
|-------------------------------------------|----------------------------------------------------|
| malformed JSON                            | dead letter "poison": "not a valid Task: ..."      |
| valid JSON failing the task schema        | dead letter "poison", naming each bad field        |
| task id that cannot key the ledger ('.')  | dead letter "poison", naming the id and the rule   |
| a field that becomes a subject token with | dead letter "poison" at the first delivery, naming |
|   a space ("requested_by": "node client") |   the field and the rule; the handler never runs   |
| a task timestamp without an offset        | read as UTC: done at the first delivery            |
| payload over the max message size         | PayloadTooLarge naming the limit in bytes          |
| invalid subject tokens (space, empty, *)  | BadSubject naming the problem and a fix            |
| unknown stream or consumer                | StreamNotFound / ConsumerNotFound naming them      |
| wrong credentials                         | AuthenticationFailed: the user, not the secret     |
| permission violation                      | PermissionDenied at the call: user and subject     |
| server not running at start               | ServerUnreachable naming the URL (worker: exit 2)  |
| server going away mid-run                 | nothing: publishes are buffered, none lost         |
| handler raising                           | a warning naming task and delivery; retried        |
| handler hanging past ack wait             | dead letter "no error recorded (handler hung?)"    |
| poison message until max deliver          | dead letter "max_deliveries" with the last error   |
| duplicate publish in the dedup window     | PubAck(duplicate=True); handled once               |
| TTL-expired intent                        | never delivered; a fractional TTL is a ValueError  |
| overlapping filter on a work-queue stream | JetStreamError 10100 "non-overlapping ..."         |

All rows share one server (auth on, ``sync_interval: always`` so the server-kill row can
SIGKILL and restart it on its store) and run in file order. The rows' deeper checks of the
same mechanisms live next to them: test_client.py (subjects, sizes), test_permissions.py,
test_jetstream.py (unknown names, overlaps, TTL), test_deadletters.py (letter fields,
redrive), test_agent.py (exactly-once, redelivery), test_intents.py.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from agentlab import (
    AuthenticationFailed,
    BadSubject,
    Client,
    ConsumerNotFound,
    ConsumerSpec,
    EmbeddedServer,
    JetStreamError,
    MessageDecodeError,
    PayloadTooLarge,
    PermissionDenied,
    ServerUnreachable,
    StreamNotFound,
    Subjects,
)
from agentlab.core._natspy import encode_headers
from agentlab.org import (
    TASK_STREAM,
    Agent,
    DeadLetter,
    DeadLetterOffice,
    IntentQueue,
    Task,
    TaskCompleted,
    TaskLedger,
    declare_reference_streams,
    publish_intent,
)
from agentlab.wire import decode_model
from helpers import stored, wait_for

S = Subjects()
ROLE, ORG = "sentinel", "catalogue"
TASKS = S.tasks(ROLE)
pytestmark = pytest.mark.timeout(60)

AUTH = """
authorization {
  users = [
    {user: admin, password: admin-pw},
    {user: alice, password: alice-pw, permissions: {
        publish: {allow: ["alice.>"]},
        subscribe: {allow: ["alice.>", "_INBOX.>"]}
    }}
  ]
}
"""


def admin_client(server: EmbeddedServer, name: str) -> Client:
    return Client.open(server.url, name=name, user="admin", password="admin-pw")


class Sentinel:
    """The agent every row must leave working, and the handler the rows steer by details:
    ``fail_times``/``error`` (raise that often), ``always_raise``, ``hang``, ``echo``."""

    def __init__(self, lab: Client, agent_client: Client):
        self.lab = lab
        self.calls: list[tuple[str, int]] = []
        self.release = threading.Event()  # lets hanging handlers go at the end
        self.agent = Agent(agent_client, ROLE, ORG, self.handle, ack_wait=1.0, max_deliver=3,
                           heartbeat_interval=0.2, lease=True)

    def handle(self, task: Task, ctx: Any) -> dict:
        self.calls.append((task.id, ctx.deliveries))
        details = task.details
        if details.get("hang"):
            self.release.wait(30)
            raise TimeoutError("released by the test")
        if ctx.deliveries <= details.get("fail_times", 0):
            raise ConnectionError(details["error"])
        if "always_raise" in details:
            raise ValueError(details["always_raise"])
        return {"echo": details.get("echo")}

    def task(self, title: str, **details: Any) -> Task:
        return Task(org=ORG, role=ROLE, title=title, requested_by="catalogue", details=details)

    def publish(self, task: Task):
        return self.lab.js.publish(TASKS, task, msg_id=task.id)

    def calls_for(self, task: Task) -> list[int]:
        return [deliveries for task_id, deliveries in self.calls if task_id == task.id]

    def still_works(self, timeout: float = 5.0) -> TaskCompleted:
        """A normal task, start to finish: the agent is alive and nothing is stuck."""
        assert self.agent.running
        done = self.lab.subscribe(S.tasks_completed(ORG))
        try:
            token = uuid.uuid4().hex
            task = self.task("a normal task", echo=token)
            self.publish(task)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for msg in done.messages(timeout=0.1):
                    event = msg.decode(TaskCompleted)
                    if event.task_id == task.id:
                        assert event.result == {"echo": token}
                        return event
            raise AssertionError(f"the sentinel did not complete a normal task in {timeout} s")
        finally:
            done.unsubscribe()


@pytest.fixture(scope="module")
def server():
    # sync_interval: always: every write is fsynced before the server acknowledges it, so
    # the server-kill row tests "acknowledged means stored" (see agentlab/chaos/targets.py).
    with EmbeddedServer(name="bad-input", sync_always=True, extra_config=AUTH) as server:
        yield server


@pytest.fixture(scope="module")
def lab(server):
    client = admin_client(server, "catalogue")
    declare_reference_streams(client)
    yield client
    client.close()


@pytest.fixture(scope="module")
def office(server, lab):
    office = DeadLetterOffice(admin_client(server, "catalogue-dlq")).start()
    yield office
    office.stop()
    office.client.close()


@pytest.fixture(scope="module")
def sentinel(server, lab, office):
    agent_client = admin_client(server, "sentinel")
    sentinel = Sentinel(lab, agent_client)
    sentinel.agent.start()
    sentinel.still_works()
    yield sentinel
    sentinel.release.set()
    sentinel.agent.stop(timeout=2)
    agent_client.close()


def letter_for(office: DeadLetterOffice, seq: int, timeout: float = 8.0) -> DeadLetter:
    """The dead letter of AGENT_TASKS#seq, once the office has made it."""
    def find() -> DeadLetter | None:
        return next((letter for _, letter in office.list(limit=1000)
                     if letter.stream == TASK_STREAM and letter.stream_seq == seq), None)
    return wait_for(find, timeout, f"the dead letter of {TASK_STREAM}#{seq}", interval=0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the rows --------------------------------------------------------------------------------
def test_malformed_json(sentinel, lab):
    raw = b'{"title": "oops"'
    receipt = lab.js.publish(TASKS, raw, msg_id=f"malformed-{uuid.uuid4().hex}")
    # What a consumer of the subject sees when it decodes the bytes itself:
    with pytest.raises(MessageDecodeError) as caught:
        decode_model(raw, Task, TASKS)
    assert str(caught.value).startswith(
        f"Could not decode the message received on subject '{TASKS}': invalid JSON: "
        "EOF while parsing an object at line 1 column 16. First bytes: '{\"title\": \"oops\"'.")
    # What the agent does with it: a poison dead letter at once, then term().
    letter = letter_for(DeadLetterOffice(lab), receipt.seq)
    assert letter.reason == "poison" and letter.deliveries == 1
    assert letter.error == ("not a valid Task: invalid JSON: EOF while parsing an object at "
                            "line 1 column 16")
    assert letter.payload == raw.decode()
    wait_for(lambda: stored(lab, TASK_STREAM, TASKS) == 0, what="the term")
    sentinel.still_works()


def test_valid_json_failing_the_task_schema(sentinel, lab):
    bad = {"id": f"schema-{uuid.uuid4().hex}", "org": ORG, "role": ROLE, "title": 5}
    receipt = lab.js.publish(TASKS, bad, msg_id=bad["id"])
    letter = letter_for(DeadLetterOffice(lab), receipt.seq)
    assert letter.reason == "poison"
    assert letter.error == ("not a valid Task: field 'title': input should be a valid string; "
                            "field 'requested_by' is required")
    assert json.loads(letter.payload) == bad
    assert bad["id"] not in [task_id for task_id, _ in sentinel.calls]  # never handled
    sentinel.still_works()


def test_task_id_that_cannot_key_the_ledger(sentinel, lab):
    """The ledger key is {org}.{task_id} and the server announces the record by its org
    token, so an id with a '.' would be recorded but never announced: poison, at once.
    The Task model says so (and so does its schema's pattern), in Python too."""
    bad_id = f"invoice.{uuid.uuid4().hex[:8]}"
    rule = (f"task id {bad_id!r} cannot key the ledger: use letters, digits and '-', '_', "
            "'=', '/' only (no '.', no spaces), e.g. a uuid4 hex")
    with pytest.raises(ValueError, match="cannot key the ledger"):
        Task(id=bad_id, org=ORG, role=ROLE, title="dotted id", requested_by="ceo")
    bad = {"id": bad_id, "org": ORG, "role": ROLE, "title": "dotted id", "requested_by": "ceo"}
    receipt = lab.js.publish(TASKS, bad, msg_id=bad_id)
    letter = letter_for(DeadLetterOffice(lab), receipt.seq)
    assert (letter.reason, letter.deliveries) == ("poison", 1)
    assert letter.error == f"not a valid Task: field 'id': {rule}"
    assert bad_id not in [task_id for task_id, _ in sentinel.calls]  # never handled
    sentinel.still_works()


def test_a_field_that_becomes_a_subject_token_is_checked_by_the_model(sentinel, lab):
    """requested_by names the inbox that progress notes go to. With a space in it, the task
    used to pass validation, fail on the progress note (BadSubject) at every delivery and end
    as max_deliveries, while a bad org was poison at once. Every field the agent puts into a
    subject is now the model's business: poison at the first delivery, naming field and rule."""
    bad = {"id": f"node-{uuid.uuid4().hex}", "org": ORG, "role": ROLE, "title": "from Node.js",
           "requested_by": "node client"}
    receipt = lab.js.publish(TASKS, bad, msg_id=bad["id"])
    letter = letter_for(DeadLetterOffice(lab), receipt.seq)
    assert (letter.reason, letter.deliveries) == ("poison", 1)
    assert letter.error == (
        "not a valid Task: field 'requested_by': requested_by 'node client' contains a space; "
        "NATS subject tokens cannot contain whitespace or '.'; use a name such as "
        "'node-client' or 'node_client'")
    assert bad["id"] not in [task_id for task_id, _ in sentinel.calls]  # never handled
    # The same for the org ('system' is the platform's) and a wildcard role.
    for field, value, phrase in (("org", "system", "org 'system' is reserved"),
                                 ("role", "*", "role '*' is the one-token wildcard")):
        odd = {**bad, "id": f"odd-{uuid.uuid4().hex}", field: value}
        letter = letter_for(DeadLetterOffice(lab), lab.js.publish(TASKS, odd, msg_id=odd["id"]).seq)
        assert (letter.reason, letter.deliveries) == ("poison", 1)
        assert letter.error.startswith(f"not a valid Task: field '{field}': {phrase}")
    sentinel.still_works()


def test_a_task_timestamp_without_an_offset_is_utc(sentinel, lab):
    """"created_at": "2025-06-01T10:00:00" (no offset) used to make the agent raise TypeError
    (naive minus aware) before the handler ran, and the task came back. It is UTC, as the
    schema says, and the task is done at its first delivery."""
    errors = sentinel.agent.stats["errors"]
    naive = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat()
    for created_at in (naive, "2025-06-01T10:00:00"):  # fresh, and older than the dedup window
        raw = {**sentinel.task("naive time", echo=created_at).model_dump(mode="json"),
               "created_at": created_at}
        assert decode_model(json.dumps(raw).encode(), Task).created_at.tzinfo is timezone.utc
        done = lab.subscribe(S.tasks_completed(ORG))
        try:
            lab.js.publish(TASKS, raw, msg_id=raw["id"])
            event = wait_for(lambda done=done, raw=raw: next(
                                 (e for e in (m.decode(TaskCompleted) for m in
                                              done.messages(timeout=0.1))
                                  if e.task_id == raw["id"]), None),
                             timeout=5, what="the completion")
        finally:
            done.unsubscribe()
        assert event.deliveries == 1 and event.result == {"echo": created_at}
        assert sentinel.calls_for(Task.model_validate(raw)) == [1]
    assert sentinel.agent.stats["errors"] == errors  # nothing failed on the way
    sentinel.still_works()


def test_payload_over_the_max_message_size(sentinel, lab):
    limit = lab.max_payload
    with pytest.raises(PayloadTooLarge) as caught:
        lab.js.publish(TASKS, b"x" * (limit + 1), msg_id="too-big")
    size = limit + 1 + len(encode_headers({"Nats-Msg-Id": "too-big"}))
    assert str(caught.value).startswith(
        f"Payload of {size:,} bytes for subject '{TASKS}' is over the server's "
        f"max_payload (headers included) of {limit:,} bytes.")
    # Under the limit alone, over it with the Nats-Msg-Id header: the server would close the
    # connection (and refuse it again on every reconnect). Refused here instead.
    with pytest.raises(PayloadTooLarge, match="headers included"):
        lab.js.publish(TASKS, b"x" * (limit - 10), msg_id="too-big-with-headers")
    with pytest.raises(PayloadTooLarge, match=f"over the server's max_payload of {limit:,}"):
        lab.publish(TASKS, b"x" * (limit + 1))
    assert lab.nc.is_connected
    assert stored(lab, TASK_STREAM, TASKS) == 0
    sentinel.still_works()


def test_invalid_subject_tokens(sentinel, lab):
    cases = {
        "genbrain.agents.sen tinel.tasks": "it contains a space; NATS subjects cannot contain "
                                           "whitespace; use 'genbrain.agents.sen-tinel.tasks'",
        "genbrain..tasks": "it has two dots in a row, which makes an empty token",
        "genbrain.agents.*.tasks": "'*' is a wildcard (it matches one token) and only "
                                   "subscriptions may use wildcards",
    }
    for subject, phrase in cases.items():
        for publish in (lab.publish, lab.js.publish):
            with pytest.raises(BadSubject) as caught:
                publish(subject, b"{}")
            assert str(caught.value).startswith(f"Cannot publish to '{subject}': {phrase}")
    with pytest.raises(BadSubject, match="Cannot publish to an empty subject"):
        lab.publish("", b"{}")
    with pytest.raises(BadSubject, match="role 'c t o' contains a space"):
        S.tasks("c t o")
    with pytest.raises(BadSubject, match="role 'cto.cfo' contains '.'"):
        Agent(lab, "cto.cfo")
    sentinel.still_works()


def test_unknown_stream_or_consumer(sentinel, lab):
    with pytest.raises(StreamNotFound) as caught:
        lab.js.pull("NO_SUCH_STREAM", ROLE)
    assert str(caught.value).startswith(
        "Stream 'NO_SUCH_STREAM' does not exist on this server. Declare it first")
    with pytest.raises(ConsumerNotFound) as caught:
        lab.js.pull(TASK_STREAM, "ghost")
    assert str(caught.value).startswith(
        f"Consumer 'ghost' does not exist on stream '{TASK_STREAM}'. Declare it first")
    assert isinstance(caught.value, LookupError)
    sentinel.still_works()


def test_wrong_credentials(sentinel, server):
    with pytest.raises(AuthenticationFailed) as caught:
        Client.open(server.url, name="intruder", user="alice", password="guessed-wrong")
    assert str(caught.value) == (
        f"The NATS server at {server.url} refused user 'alice': authorization violation. "
        "Check the user name and password (or nkey/creds) for this tenant.")
    assert "guessed-wrong" not in str(caught.value)
    with pytest.raises(AuthenticationFailed, match="refused an anonymous connection"):
        Client.open(server.url, name="anonymous")
    sentinel.still_works()


def test_permission_violation(sentinel, server, lab):
    alice = Client.open(server.url, name="alice", user="alice", password="alice-pw")
    try:
        task = sentinel.task("sneaked in")
        with pytest.raises(PermissionDenied) as caught:
            alice.publish(TASKS, task)
        assert str(caught.value).startswith(
            f"Permission denied: user 'alice' may not publish to '{TASKS}'.")
        with pytest.raises(PermissionDenied, match=f"user 'alice' may not publish to '{TASKS}'"):
            alice.js.publish(TASKS, task, msg_id=task.id, timeout=5)
        with pytest.raises(PermissionDenied, match="may not subscribe to 'genbrain.>'"):
            alice.subscribe("genbrain.>")
        alice.publish("alice.notes", "allowed")  # the connection is still usable
        alice.flush()
    finally:
        alice.close()
    assert task.id not in [task_id for task_id, _ in sentinel.calls]
    sentinel.still_works()


def test_server_not_running_at_start(sentinel):
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(ServerUnreachable) as caught:
        Client.open(url, name="early")
    assert str(caught.value).startswith(f"Could not connect to a NATS server at {url} (")
    assert "Start one with `agentlab server`" in str(caught.value)
    worker = subprocess.run(
        [sys.executable, "-m", "agentlab.programs.worker", "--url", url, "--role", "cto"],
        check=False, capture_output=True, text=True, timeout=30,
        env={**{k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"},
             "COLUMNS": "200"})
    assert worker.returncode == 2
    assert f"agentlab worker cto failed: Could not connect to a NATS server at {url}" in \
        " ".join(worker.stderr.split())
    assert "Traceback" not in worker.stderr
    sentinel.still_works()


def test_server_going_away_mid_run(sentinel, server, lab):
    """SIGKILL the server, publish while it is away, restart it on the same store: every
    task published before, during and after is handled and recorded once, none lost.

    "Handled" can mean twice here, and the test says so: the server sends a message before
    it writes down that it did, so a SIGKILL in between forgets the delivery and the task
    comes back as a *first* delivery after the restart. The Agent reads the ledger for
    every task stored before its reconnect, so one recorded before the kill is acked, not
    run again; one whose run was not yet recorded runs again, and only an idempotent
    handler keeps its effect to one (see agentlab/chaos/checks.py, where the fault suite
    counts handler runs per task id).
    """
    stats = sentinel.agent.stats
    counted = {name: stats[name] for name in ("duplicates_suppressed", "errors", "failed")}
    before = [sentinel.task(f"before {i}", echo=i) for i in range(5)]
    during = [sentinel.task(f"during {i}", echo=i) for i in range(20)]
    for task in before:
        sentinel.publish(task)
    server.kill()
    wait_for(lambda: not lab.nc.is_connected, what="the client to notice")
    started = time.monotonic()
    for task in during:  # buffered by the client while it reconnects; returns at once
        lab.publish(TASKS, task, headers={"Nats-Msg-Id": task.id})
    assert time.monotonic() - started < 0.5
    late = sentinel.task("published with an ack, during the outage")
    receipt: list[Any] = []
    publisher = threading.Thread(target=lambda: receipt.append(
        lab.js.publish(TASKS, late, msg_id=late.id, timeout=10)))
    publisher.start()
    time.sleep(0.5)
    server.restart()
    publisher.join(15)
    assert receipt and receipt[0].stream == TASK_STREAM and not receipt[0].duplicate

    ledger = TaskLedger.declare(lab)
    everything = before + during + [late]
    # A ledger write in flight when the server died gets no reply: it times out (5 s), the
    # task is nak'ed and comes back.
    wait_for(lambda: all(ledger.get(ORG, task.id) for task in everything), timeout=20,
             what="every task in the ledger")
    wait_for(lambda: stored(lab, TASK_STREAM, TASKS) == 0, what="every ack")
    # An attempt whose ledger write died with the old connection finishes (fails) later.
    wait_for(lambda: sentinel.agent.in_flight == 0, timeout=10, what="attempts in flight")
    runs = {task.title: sentinel.calls_for(task) for task in everything}
    assert all(runs.values()), runs  # none lost
    repeats = sum(len(deliveries) - 1 for deliveries in runs.values())
    # Every repeat is one the agent knows of: a duplicate it suppressed, or an attempt that
    # could not be recorded (logged "could not process", then retried).
    known = sum(stats[name] - counted[name] for name in counted)
    assert repeats <= known, (runs, dict(stats))
    assert all(len(deliveries) == 1 for title, deliveries in runs.items()
               if title.startswith("during")), runs  # published after the kill: never twice
    sentinel.still_works()


def test_handler_raising(sentinel, lab, caplog):
    task = sentinel.task("flaky", fail_times=1, error="the LLM API timed out")
    done = lab.subscribe(S.tasks_completed(ORG))
    with caplog.at_level(logging.WARNING, logger="agentlab"):
        sentinel.publish(task)
        event = wait_for(lambda: next((m.decode(TaskCompleted) for m in done.messages(
            timeout=0.1) if m.decode(TaskCompleted).task_id == task.id), None),
            timeout=5, what="the retried task")
    done.unsubscribe()
    assert f"agent {sentinel.agent.instance}: task {task.id} ('flaky') failed on delivery 1: " \
           "ConnectionError: the LLM API timed out" in caplog.text
    assert event.deliveries == 2 and sentinel.calls_for(task) == [1, 2]
    sentinel.still_works()


def test_handler_hanging_past_ack_wait(sentinel, lab, office):
    """A handler that never returns: redelivered after each ack_wait (1 s) until
    max_deliver (3), then a dead letter that says it hung. The agent keeps serving. The
    redeliveries are nak'ed, not run: the hung run still holds the task's lease."""
    task = sentinel.task("hangs", hang=True)
    receipt = sentinel.publish(task)
    wait_for(lambda: sentinel.calls_for(task), what="the first run")
    sentinel.still_works()  # while it hangs
    letter = letter_for(office, receipt.seq)
    assert letter.reason == "max_deliveries" and letter.deliveries == 3
    assert letter.error == "no error recorded (handler hung?)"
    assert sentinel.calls_for(task) == [1]
    assert TaskLedger.declare(lab).get(ORG, task.id) is None
    sentinel.still_works()


def test_poison_message_redelivered_until_max_deliver(sentinel, lab, office):
    task = sentinel.task("always breaks", always_raise="vendor_id missing")
    receipt = sentinel.publish(task)
    letter = letter_for(office, receipt.seq)
    assert (letter.reason, letter.deliveries) == ("max_deliveries", 3)
    assert letter.error == "ValueError: vendor_id missing"
    assert Task.model_validate_json(letter.payload) == task
    assert sentinel.calls_for(task) == [1, 2, 3]
    assert stored(lab, TASK_STREAM, TASKS) == 0
    sentinel.still_works()


def test_duplicate_publish_within_the_dedup_window(sentinel, lab):
    task = sentinel.task("once only", echo="once")
    first, again = sentinel.publish(task), sentinel.publish(task)
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    wait_for(lambda: TaskLedger.declare(lab).get(ORG, task.id), what="the ledger")
    time.sleep(0.3)
    assert sentinel.calls_for(task) == [1]
    sentinel.still_works()


def test_ttl_expired_intent(sentinel, lab):
    kind = f"book{uuid.uuid4().hex[:8]}"
    publish_intent(lab, kind, {"slot": "stale"}, ttl=1)
    publish_intent(lab, kind, {"slot": "fresh"}, ttl=60)
    with pytest.raises(ValueError, match=r"ttl=0.5: a message TTL is a whole number of "
                                         r"seconds, at least 1\."):
        publish_intent(lab, kind, {"slot": "half"}, ttl=0.5)
    time.sleep(2.2)  # the server expires TTLs about once a second
    queue = IntentQueue(lab, kind)
    got = queue.fetch(batch=10, timeout=1)
    assert [msg.json()["slot"] for msg in got] == ["fresh"]  # the stale one never arrives
    for msg in got:
        msg.ack()
    sentinel.still_works()


def test_overlapping_filter_on_a_work_queue_stream(sentinel, lab):
    with pytest.raises(JetStreamError) as caught:
        lab.js.declare_consumer(TASK_STREAM, ConsumerSpec("snoop", filter_subject=S.tasks("*")))
    error = caught.value
    assert error.err_code == 10100
    assert str(error).startswith(f"JetStream could not declare consumer 'snoop' on stream "
                                 f"'{TASK_STREAM}': ")
    assert str(error).endswith("On a work-queue stream each consumer must filter a different, "
                               "non-overlapping subject. Give this consumer its own "
                               "filter_subject.")
    assert "snoop" not in [c.name for c in lab.js.consumers(TASK_STREAM)]
    sentinel.still_works()  # its tasks still reach it, not a snoop
