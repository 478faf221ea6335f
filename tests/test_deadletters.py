"""Dead letters the NATS way (DESIGN.md decision 6), against a real server: max-deliver
exhaustion via the server's advisory, poison input at once, a sweep for advisories nobody
heard, and list/show/redrive from Python and from `agentlab dlq`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from agentlab import Client, EmbeddedServer, StreamNotFound, Subjects
from agentlab.org import (
    DLQ_STREAM,
    TASK_STREAM,
    Agent,
    DeadLetter,
    DeadLetterNotFound,
    DeadLetterOffice,
    Task,
    TaskCompleted,
    declare_reference_streams,
)
from helpers import credentials_env, stored, wait_for

S = Subjects()
CLI = [sys.executable, "-m", "agentlab.programs.cli"]
pytestmark = pytest.mark.timeout(60)


# -- helpers -------------------------------------------------------------------------------
def letters_for(office: DeadLetterOffice, subject: str) -> list[tuple[int, DeadLetter]]:
    return [(seq, letter) for seq, letter in office.list(limit=1000)
            if letter.original_subject == subject]


def wait_for_letters(office: DeadLetterOffice, subject: str, count: int = 1,
                     timeout: float = 6.0) -> list[tuple[int, DeadLetter]]:
    return wait_for(lambda: (found := letters_for(office, subject)) and len(found) >= count
                    and found, timeout, f"{count} dead letter(s) from '{subject}'",
                    interval=0.05)  # each poll lists up to 1000 letters


def always_fails(task: Task, ctx) -> None:
    raise RuntimeError(f"cannot do {task.title!r}")


@pytest.fixture
def office(org_lab, connect):
    """A running DeadLetterOffice on its own connection (stopped after the test)."""
    office = DeadLetterOffice(connect("dead-letter-office")).start()
    yield office
    office.stop()


# -- max-deliver exhaustion ----------------------------------------------------------------
def test_max_deliver_exhaustion_ends_in_the_dlq(org_lab, agents, office, names):
    cto = agents(names.cto, names.org, always_fails).start()
    task = Task(org=names.org, role=names.cto, title="Impossible", requested_by=names.ceo,
                details={"budget": 0})
    receipt = org_lab.js.publish(S.tasks(names.cto), task, msg_id=task.id,
                                 headers={"traceparent": "00-abc-def-01"})
    before = datetime.now(timezone.utc)

    [(seq, letter)] = wait_for_letters(office, S.tasks(names.cto))
    assert letter.reason == "max_deliveries"
    assert letter.error == "RuntimeError: cannot do 'Impossible'"  # the last error recorded
    assert letter.original_subject == S.tasks(names.cto)
    assert Task.model_validate_json(letter.payload) == task and letter.encoding == "utf-8"
    assert letter.headers["Nats-Msg-Id"] == task.id
    assert letter.headers["traceparent"] == "00-abc-def-01"
    assert (letter.stream, letter.stream_seq) == (TASK_STREAM, receipt.seq)
    assert letter.consumer == names.cto and letter.deliveries == 3
    assert before - timedelta(seconds=1) < letter.dead_at < datetime.now(timezone.utc)
    assert cto.stats["failed"] == 3

    # The original left the work queue (deleted just after the letter is published), and the
    # consumer holds nothing for it.
    wait_for(lambda: stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0, 2,
             "the original to leave the work queue")
    info = org_lab.js.consumer_info(TASK_STREAM, names.cto)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    # The letter sits on the DLQ subject of that stream and consumer.
    assert stored(org_lab, DLQ_STREAM, S.dlq(TASK_STREAM, names.cto)) == 1

    # Handlers raising did not stop the agent.
    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto.handler = lambda task, ctx: {"ok": True}
    agents(names.ceo, names.org).delegate(names.cto, "Possible")
    assert done.next(timeout=3).decode(TaskCompleted).result == {"ok": True}


# -- poison input ------------------------------------------------------------------------------
def test_poison_input_is_dead_lettered_at_once_and_termed(org_lab, agents, names):
    calls: list[Task] = []
    cto = agents(names.cto, names.org, lambda task, ctx: calls.append(task)).start()
    office = DeadLetterOffice(org_lab)  # not started: poison needs no advisory
    subject = S.tasks(names.cto)
    binary = b"\xff\xfe\x00 not even text"
    org_lab.js.publish(subject, binary, msg_id=f"bin-{names.cto}")
    org_lab.js.publish(subject, {"title": "no org, no role"}, msg_id=f"half-{names.cto}")
    idless = Task(org=names.org, role=names.cto, title="No id", requested_by=names.ceo)
    org_lab.js.publish(subject, idless.model_dump_json(exclude={"id"}),
                       msg_id=f"noid-{names.cto}")

    letters = [letter for _, letter in wait_for_letters(office, subject, count=3)]
    assert [letter.reason for letter in letters] == ["poison"] * 3
    assert all(letter.deliveries == 1 and letter.consumer == names.cto for letter in letters)
    raw, half, noid = letters
    assert raw.encoding == "base64" and base64.b64decode(raw.payload) == binary
    assert raw.error == "not a valid Task: invalid UTF-8 at byte 0"
    assert "'org'" in half.error and json.loads(half.payload) == {"title": "no org, no role"}
    assert "field 'id' is required" in noid.error  # a receiver must not invent the task id
    assert raw.headers["Nats-Msg-Id"] == f"bin-{names.cto}"

    assert calls == [] and cto.stats["poison"] == 3
    wait_for(lambda: stored(org_lab, TASK_STREAM, subject) == 0, what="term to remove them")
    assert org_lab.js.consumer_info(TASK_STREAM, names.cto).num_redelivered == 0


# -- list, show, redrive ------------------------------------------------------------------------
def test_list_show_and_redrive_with_a_fixed_handler(org_lab, agents, office, names):
    fixed = {"yet": False}

    def handler(task: Task, ctx) -> dict:
        if not fixed["yet"]:
            raise KeyError("vendor_id")
        return {"invoice": task.details["invoice"], "attempt": ctx.deliveries}

    agents(names.cto, names.org, handler).start()
    task = agents(names.ceo, names.org).delegate(names.cto, "Pay", {"invoice": 7})
    [(seq, letter)] = wait_for_letters(office, S.tasks(names.cto))
    assert letter.error == "KeyError: 'vendor_id'"
    assert office.show(seq) == letter
    assert seq in [s for s, _ in office.list()]

    fixed["yet"] = True  # the bug is fixed: send the task round again
    done = org_lab.subscribe(S.tasks_completed(names.org))
    receipt = office.redrive(seq)
    assert receipt.stream == TASK_STREAM and not receipt.duplicate
    event = done.next(timeout=3).decode(TaskCompleted)
    assert event.task_id == task.id and event.result == {"invoice": 7, "attempt": 1}
    assert letters_for(office, S.tasks(names.cto)) == []
    with pytest.raises(DeadLetterNotFound, match=f"seq {seq}"):
        office.show(seq)
    with pytest.raises(DeadLetterNotFound):
        office.redrive(seq)  # once only
    wait_for(lambda: stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0, what="the ack")


def test_show_unknown_seq_and_missing_stream_are_clear(org_lab):
    office = DeadLetterOffice(org_lab)
    with pytest.raises(DeadLetterNotFound, match="No dead letter with seq 999999"):
        office.show(999999)
    with pytest.raises(DeadLetterNotFound):
        office.show(0)
    # A server without the reference streams: the stream is named, not a bare 404.
    with EmbeddedServer(name="bare") as bare, Client.open(bare.url, name="bare") as client:
        with pytest.raises(StreamNotFound, match=DLQ_STREAM):
            DeadLetterOffice(client).list()
        with pytest.raises(StreamNotFound, match=DLQ_STREAM):
            DeadLetterOffice(client).show(1)


# -- advisories nobody heard ---------------------------------------------------------------------
def test_a_missed_advisory_is_caught_up_by_the_sweep(org_lab, agents, names, connect):
    """No office runs while the deliveries run out: the advisory is lost (core NATS), and
    the message stays in the work queue, never delivered again. start() sweeps it up."""
    cto = agents(names.cto, names.org, always_fails).start()
    task = agents(names.ceo, names.org).delegate(names.cto, "Nobody listens")
    wait_for(lambda: cto.stats["failed"] == 3, what="three failed deliveries")
    wait_for(lambda: org_lab.js.consumer_info(TASK_STREAM, names.cto).num_ack_pending == 0,
             what="the consumer to give up")
    time.sleep(0.3)
    assert stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 1  # stuck in the queue
    assert cto.stats["failed"] == 3  # and never delivered again

    late = DeadLetterOffice(connect("late-office")).start()  # sweeps first
    try:
        [(_, letter)] = letters_for(late, S.tasks(names.cto))
        assert letter.reason == "max_deliveries" and letter.deliveries == 3
        assert letter.error == "RuntimeError: cannot do 'Nobody listens'"
        assert Task.model_validate_json(letter.payload).id == task.id
        assert stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0
        assert late.sweep() == 0  # idempotent
    finally:
        late.stop()


def test_a_running_office_sweeps_every_so_often(org_lab, agents, names, connect):
    """An advisory that never comes while the office is connected (a restarted server does
    not announce again a message that ran out of deliveries before it went down): the
    periodic sweep buries it. Here the office stops listening to advisories to stand for it."""
    office = DeadLetterOffice(connect("periodic-office"), sweep_every=0.5).start()
    office.client._bridge.run(office._sub.aunsubscribe(), operation="deafen the office")
    try:
        cto = agents(names.cto, names.org, always_fails).start()
        agents(names.ceo, names.org).delegate(names.cto, "Heard by nobody")
        wait_for(lambda: cto.stats["failed"] == 3, what="three failed deliveries")
        [(_, letter)] = wait_for_letters(office, S.tasks(names.cto), timeout=5)
        assert letter.reason == "max_deliveries"
        # The letter is published before the original is deleted and counted: wait for both.
        wait_for(lambda: office.swept == 1, 2, "the sweep to count its letter")
        assert stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0
    finally:
        office._sub = None
        office.stop()


def test_the_sweep_leaves_tasks_in_progress_alone(org_lab, agents, names, connect):
    """Pending, nak'ed-for-later and unacked-after-a-crash tasks are not dead."""
    started = []

    def stuck(task: Task, ctx) -> None:
        started.append(task.id)
        while not ctx.cancelled:
            time.sleep(0.02)

    cto = agents(names.cto, names.org, stuck).start()
    ceo = agents(names.ceo, names.org)
    ceo.delegate(names.cto, "in hand")
    wait_for(lambda: started, what="the task to start")
    cto.kill()  # its task: delivered, unacked, waiting for redelivery
    ceo.delegate(names.cto, "not yet delivered")
    time.sleep(1.2)  # past ack_wait
    assert DeadLetterOffice(org_lab).sweep() == 0
    assert stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 2
    done = org_lab.subscribe(S.tasks_completed(names.org))
    agents(names.cto, names.org).start()
    assert len(done.messages(count=2, timeout=4)) == 2


def test_an_advisory_sent_while_the_office_reconnects_is_swept_up_after_it(tmp_path):
    """The server restarts; the office's connection comes back last (a 4 s pause between
    its reconnect attempts), so the poison task's max-deliveries advisory is sent while it
    is away and lost. The office sweeps after its reconnect: the letter comes promptly."""
    with EmbeddedServer(name="dlq-restart", store_dir=tmp_path / "store",
                        sync_always=True) as server:
        admin = Client.open(server.url, name="admin", reconnect_wait=0.05)
        worker = Client.open(server.url, name="worker", reconnect_wait=0.05)
        office_client = Client.open(server.url, name="office", reconnect_wait=4.0)
        try:
            declare_reference_streams(admin)
            office = DeadLetterOffice(office_client).start()
            cto = Agent(worker, "cto", "acme", always_fails, max_deliver=2).start()
            server.kill()
            time.sleep(0.3)  # the office's first, immediate reconnect attempt fails now
            server.restart()
            wait_for(lambda: worker.nc.is_connected and admin.nc.is_connected, 10,
                     "the agent's and the publisher's reconnects")
            # The server sends the advisory when it next looks at the exhausted message,
            # not at the last nak: wait until it has really gone out, to nobody in the office.
            advisories = admin.subscribe(
                f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{TASK_STREAM}.cto")
            task = Task(org="acme", role="cto", title="Poison", requested_by="ceo")
            receipt = admin.js.publish(S.tasks("cto"), task, msg_id=task.id)
            wait_for(lambda: cto.stats["failed"] == 2, 5, "two failed deliveries")
            advisories.next(timeout=5)
            assert not office_client.nc.is_connected, "the office came back too early"

            wait_for(lambda: office_client.nc.is_connected, 8, "the office's reconnect",
                     interval=0.01)
            reconnected = time.monotonic()
            [(_, letter)] = wait_for_letters(office, S.tasks("cto"), timeout=5)
            assert time.monotonic() - reconnected < 1.5
            # By the sweep: the advisory never reached the office. The letter is published
            # before the original is deleted and counted, so the count can lag it briefly.
            wait_for(lambda: office.swept == 1, 2, "the sweep to count its letter")
            assert letter.reason == "max_deliveries" and letter.deliveries == 2
            assert letter.error == "RuntimeError: cannot do 'Poison'"
            assert (letter.stream, letter.stream_seq) == (TASK_STREAM, receipt.seq)
            assert stored(admin, TASK_STREAM, S.tasks("cto")) == 0
            cto.stop()
            office.stop()
        finally:
            for client in (admin, worker, office_client):
                client.close()


# -- the agentlab dlq command ------------------------------------------------------------------
def dlq(*args: str, url: str | None = None, env_url: str | None = None
        ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    env.update(COLUMNS="200", PYTHONUNBUFFERED="1")
    if env_url:
        env["AGENTLAB_NATS_URL"] = env_url
    env.update(credentials_env(url or env_url or ""))  # this module's server is closed
    argv = [*CLI, "dlq", *args, *(["--url", url] if url else [])]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)


def test_cli_lists_shows_and_redrives(org_server, org_lab, agents, office, names):
    fixed = {"yet": False}

    def handler(task: Task, ctx) -> dict:
        if not fixed["yet"]:
            raise ValueError("schema v2 not supported")
        return {"ok": True}

    agents(names.cto, names.org, handler).start()
    task = agents(names.ceo, names.org).delegate(names.cto, "Migrate", {"to": "v2"})
    [(seq, letter)] = wait_for_letters(office, S.tasks(names.cto))

    listed = dlq("list", env_url=org_server.url)  # AGENTLAB_NATS_URL
    assert listed.returncode == 0, listed.stderr
    header = next(line for line in listed.stdout.splitlines() if "Seq" in line)
    columns = [c.strip() for c in header.strip("┃│| ").split("┃" if "┃" in header else "│")]
    assert columns == ["Seq", "Reason", "Subject", "Stream Seq", "Consumer", "Deliveries",
                       "Error", "Time"]
    row = next(line for line in listed.stdout.splitlines() if S.tasks(names.cto) in line)
    for text in (str(seq), "max_deliveries", f"{TASK_STREAM}#{letter.stream_seq}",
                 names.cto, "3", "ValueError: schema v2 not supported",
                 letter.dead_at.isoformat(timespec="seconds")):
        assert text in row, (text, row)

    shown = dlq("show", str(seq), url=org_server.url)  # --url
    assert shown.returncode == 0, shown.stderr
    for text in (f"{DLQ_STREAM}#{seq}", "max_deliveries", "ValueError: schema v2 not supported",
                 "original_subject", S.tasks(names.cto), "Nats-Msg-Id", task.id,
                 '"to": "v2"', '"title": "Migrate"'):
        assert text in shown.stdout, (text, shown.stdout)

    fixed["yet"] = True
    done = org_lab.subscribe(S.tasks_completed(names.org))
    redriven = dlq("redrive", str(seq), url=org_server.url)
    assert redriven.returncode == 0, redriven.stderr
    assert f"Redrove dead letter {seq}" in redriven.stdout and TASK_STREAM in redriven.stdout
    assert done.next(timeout=3).decode(TaskCompleted).task_id == task.id

    again = dlq("redrive", str(seq), url=org_server.url)
    assert again.returncode == 2
    assert f"No dead letter with seq {seq}" in " ".join(again.stderr.split())
    assert "Traceback" not in again.stderr


def test_cli_errors_are_clear(org_server):
    no_url = dlq("list")
    assert no_url.returncode == 2
    assert "AGENTLAB_NATS_URL" in no_url.stderr and "--url" in no_url.stderr
    unknown = dlq("show", "987654", url=org_server.url)
    assert unknown.returncode == 2 and "No dead letter with seq 987654" in unknown.stderr
    unreachable = dlq("list", url="nats://127.0.0.1:1")
    assert unreachable.returncode == 2 and "Could not connect" in unreachable.stderr
    assert "Traceback" not in unknown.stderr + unreachable.stderr
    usage = dlq()
    assert usage.returncode == 2 and "ACTION" in usage.stderr
