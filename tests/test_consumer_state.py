"""Agent(consumer_state=...): the role consumer's delivery state in memory (the default for a
consumer an agent makes) or on file.

Cheaper deliveries when one server serves many consumers in turn (benchmarks/consumers.py);
the price is what a restart forgets. These tests restart a real nats-server under a
running agent: the agent makes its consumer again, and the tasks that were out, or sent
after the restart, are done once.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from agentlab import Client, ConsumerSpec, EmbeddedServer, Subjects
from agentlab.errors import AgentlabError
from agentlab.org import TASK_STREAM, Agent, Task, TaskCompleted, declare_reference_streams
from helpers import wait_for

pytestmark = pytest.mark.timeout(90)
S = Subjects()


@pytest.fixture
def server(tmp_path):
    with EmbeddedServer(name="state", store_dir=tmp_path / "store") as srv:
        yield srv


@pytest.fixture
def pair(server):
    """An admin connection (the reference streams declared) and an agent's connection."""
    admin, worker = (Client.open(server.url, name=n) for n in ("admin", "worker"))
    declare_reference_streams(admin)
    yield admin, worker
    admin.close()
    worker.close()


def delegate(client: Client, title: str) -> Task:
    task = Task(org="acme", role="cto", title=title, requested_by="ceo")
    client.js.publish(S.tasks("cto"), task, msg_id=task.id)
    return task


def test_a_memory_consumer_is_made_again_after_its_server_restarts(server, pair):
    admin, worker = pair
    runs: list[str] = []
    cto = Agent(worker, "cto", "acme", lambda task, ctx: runs.append(task.title),
                ack_wait=10, consumer_state="memory").start()
    assert admin.js.consumer_info(TASK_STREAM, "cto").config.mem_storage
    done = admin.subscribe(S.tasks_completed("acme"))
    before = delegate(admin, "before the restart")
    assert done.next(timeout=10).decode(TaskCompleted).task_id == before.id
    server.restart()
    # Gone with the restart; the agent makes it again once its connection is back.
    wait_for(lambda: _exists(admin, "cto"), 30, "the consumer made again")
    assert admin.js.consumer_info(TASK_STREAM, "cto").config.mem_storage
    delegate(admin, "after the restart")
    wait_for(lambda: cto.stats["processed"] == 2, 30, "the task after the restart recorded")
    assert runs == ["before the restart", "after the restart"], runs
    cto.stop()


def test_a_task_out_at_the_restart_is_handed_out_again_and_run_once(server, pair):
    """The restarted server forgot that the task was out: the consumer made again hands it
    out once more, as a first delivery, while its first run still works. The repeat waits
    for the first run's lease, and the first run's record answers it."""
    admin, worker = pair
    runs: list[int] = []
    release = threading.Event()

    def slow(task, ctx):
        runs.append(ctx.deliveries)
        release.wait(30)
        return {}

    cto = Agent(worker, "cto", "acme", slow, ack_wait=10, lease_ttl=20,
                consumer_state="memory").start()
    try:
        done = admin.subscribe(S.tasks_completed("acme"))
        task = delegate(admin, "out at the restart")
        wait_for(lambda: runs, 10, "the first run")
        server.restart()
        wait_for(lambda: cto.stats["lease_waits"] >= 1, 30, "the repeat waiting")
        release.set()
        assert done.next(timeout=30).decode(TaskCompleted).task_id == task.id
        wait_for(lambda: cto.stats["acked_from_ledger"] >= 1, 30, "the repeat acked")
        assert runs == [1], runs
    finally:
        release.set()
        cto.stop()


def test_a_file_consumer_survives_the_restart_as_before(server, pair):
    """consumer_state="file": the consumer is not made again (nothing to do), and works."""
    admin, worker = pair
    runs: list[str] = []
    cto = Agent(worker, "cto", "acme", lambda task, ctx: runs.append(task.title),
                ack_wait=10, consumer_state="file").start()
    assert not admin.js.consumer_info(TASK_STREAM, "cto").config.mem_storage
    created = admin.js.consumer_info(TASK_STREAM, "cto").created
    server.restart()
    wait_for(lambda: worker.nc.is_connected, 30, "the agent reconnected")
    delegate(admin, "after the restart")
    wait_for(lambda: runs == ["after the restart"], 30, "the task after the restart")
    assert admin.js.consumer_info(TASK_STREAM, "cto").created == created
    cto.stop()


def test_by_default_a_new_consumer_is_in_memory_and_an_existing_one_stays_as_it_is(pair):
    admin, worker = pair
    made = Agent(worker, "cto", "acme").start()
    try:
        assert admin.js.consumer_info(TASK_STREAM, "cto").config.mem_storage
        assert made.consumer_state == "memory"
    finally:
        made.stop()
    # A consumer kept on file (made so on purpose, or by an older agentlab) is followed.
    Agent(admin, "cfo", "acme", consumer_state="file").start().stop()
    follower = Agent(worker, "cfo", "acme").start()
    try:
        assert follower.consumer_state == "file"
        assert not admin.js.consumer_info(TASK_STREAM, "cfo").config.mem_storage
        done = admin.subscribe(S.tasks_completed("acme"))
        task = Task(org="acme", role="cfo", title="on file", requested_by="ceo")
        admin.js.publish(S.tasks("cfo"), task, msg_id=task.id)
        assert done.next(timeout=10).decode(TaskCompleted).task_id == task.id
    finally:
        follower.stop()


def test_a_consumer_state_that_is_not_file_or_memory_is_refused(pair):
    with pytest.raises(ValueError, match="'memory', 'file', or None"):
        Agent(pair[1], "cto", "acme", consumer_state="ram")


def test_instances_that_disagree_on_the_consumer_state_get_a_clear_error(pair):
    first = Agent(pair[1], "cto", "acme").start()  # in memory
    try:
        with pytest.raises(AgentlabError, match="consumer_state='file'.*nats consumer rm"):
            Agent(pair[1], "cto", "acme", consumer_state="file").start()
    finally:
        first.stop()


def _exists(client: Client, consumer: str) -> bool:
    try:
        client.js.consumer_info(TASK_STREAM, consumer)
        return True
    except AgentlabError:
        return False


def test_a_hand_made_spec_follows_the_role_consumer_that_exists(pair):
    """ConsumerSpec(memory_state=None), the default, as lesson 03 declares the cto's queue by
    hand: on file when new, and whatever the existing consumer keeps otherwise; asking for
    the other kind outright is refused with the server's reason."""
    admin, worker = pair
    Agent(worker, "cto", "acme").start().stop()  # the role consumer, in memory
    spec = ConsumerSpec("cto", filter_subject=S.tasks("cto"), ack_wait=2, max_deliver=5)
    info = admin.js.declare_consumer(TASK_STREAM, spec)
    assert info.config.mem_storage and info.config.ack_wait == 2  # updated, kept in memory
    with pytest.raises(AgentlabError, match="storage type can not be updated.*10012"):
        admin.js.declare_consumer(TASK_STREAM, replace(spec, memory_state=False))
    fresh = admin.js.declare_consumer(TASK_STREAM, replace(spec, durable="audit",
                                                           filter_subject=S.tasks("audit")))
    assert not fresh.config.mem_storage
