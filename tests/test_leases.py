"""No handler runs twice while its first run lives: task leases (agentlab/org/leases.py).

Each test runs two instances of one role on a real nats-server and hands a task out again
while its first run still works, in the ways the server really does it: the ack wait runs
out (the first run sends no ``in_progress``), or the consumer's record of the delivery is
lost (a restarted server without it, reproduced exactly by recreating the consumer on a
stream that keeps acked tasks, as tests/test_agent_repeats.py does). The second delivery
must wait for the first run: its record answers it. When the first run's instance dies
instead, its lease expires and the task runs once more.
"""

from __future__ import annotations

import threading
import time

import pytest

from agentlab import Client, EmbeddedServer, StreamSpec, Subjects
from agentlab.org import (
    TASK_STREAM,
    Agent,
    Lease,
    LeaseHolder,
    Task,
    TaskCompleted,
    TaskLeases,
    TaskLedger,
)
from helpers import stored, wait_for

pytestmark = pytest.mark.timeout(90)


class Runs:
    """What each handler run saw: (instance, delivery, started, ended)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[tuple[str, int, float]] = []
        self.ended: list[tuple[str, float]] = []

    def begin(self, ctx) -> int:
        with self.lock:
            self.started.append((ctx.agent.instance, ctx.deliveries, time.monotonic()))
            return len(self.started)

    def end(self, ctx) -> None:
        with self.lock:
            self.ended.append((ctx.agent.instance, time.monotonic()))


def total(agents: list[Agent], counter: str) -> int:
    return sum(agent.stats[counter] for agent in agents)


def publish(client: Client, names, title: str) -> Task:
    task = Task(org=names.org, role=names.cto, title=title, requested_by=names.ceo)
    client.js.publish(Subjects().tasks(names.cto), task, msg_id=task.id)
    return task


@pytest.mark.parametrize("lease", [True, False], ids=["leased", "no lease"])
def test_a_redelivery_while_the_first_run_lives_is_not_run(org_lab, agents, names, lease):
    """ack_wait runs out while the first run works without in_progress(): the task is
    delivered again. With leases the redelivery waits while the run's instance says it is
    working, then (the run quiet for longer than ack_wait) is nak'ed, and the first run's
    record settles the task. Without leases the handler runs a second time, next to the
    first (what leases are for)."""
    runs, finish = Runs(), threading.Event()

    def quiet(task, ctx):
        runs.begin(ctx)
        finish.wait(30)  # until the test has seen the second delivery
        runs.end(ctx)
        return {"by": ctx.agent.instance}

    pair = [agents(names.cto, names.org, quiet, ack_wait=1.0, max_deliver=10,
                   lease=lease).start() for _ in range(2)]
    done = org_lab.subscribe(Subjects().tasks_completed(names.org))
    task = publish(org_lab, names, "think it over")
    wait_for(lambda: runs.started, 10, "the first run")
    if lease:
        wait_for(lambda: total(pair, "lease_waits") >= 1, 10, "a redelivery waiting")
        wait_for(lambda: total(pair, "lease_naks") >= 1, 10, "a redelivery nak'ed")
    else:
        wait_for(lambda: len(runs.started) >= 2, 10, "the second run")
    finish.set()
    event = done.next(timeout=10).decode(TaskCompleted)
    assert event.task_id == task.id
    if not lease:
        assert len(runs.started) >= 2  # the handler ran twice at once
        return
    assert len(runs.started) == 1, runs.started
    assert total(pair, "leases_lost") == 0
    # The first run's ack settled the task (a nak'ed delivery shares its stream sequence).
    wait_for(lambda: stored(org_lab, TASK_STREAM, Subjects().tasks(names.cto)) == 0, 10,
             "the task acked")
    time.sleep(1.5)  # a delivery on its way is answered from the ledger, not run
    assert len(runs.started) == 1, runs.started


@pytest.fixture
def server(tmp_path):
    with EmbeddedServer(name="leases", store_dir=tmp_path / "store", sync_always=True) as srv:
        yield srv


def test_a_first_delivery_repeated_by_a_server_that_forgot_waits_for_the_first_run(server):
    """The server loses its record that it handed the task out (delivery count 1 again)
    while the first run works: the repeat waits, and the handler runs once."""
    S, role, org = Subjects(), "cto", "acme"
    runs, finish = Runs(), threading.Event()

    def slow(task, ctx):
        runs.begin(ctx)
        finish.wait(30)
        runs.end(ctx)
        return {"by": ctx.agent.instance}

    clients = [Client.open(server.url, name=n) for n in ("admin", "first", "second")]
    admin = clients[0]
    made: list[Agent] = []
    try:
        # Limits retention: the task stays stored, so a recreated consumer hands it out again.
        admin.js.declare_stream(StreamSpec(TASK_STREAM, [S.tasks("*")]))
        done = admin.subscribe(S.tasks_completed(org))
        made.append(Agent(clients[1], role, org, slow, ack_wait=30, lease=True).start())
        task = Task(org=org, role=role, title="forgotten", requested_by="ceo")
        admin.js.publish(S.tasks(role), task, msg_id=task.id)
        wait_for(lambda: runs.started, 10, "the first run")
        admin.js.delete_consumer(TASK_STREAM, role)  # the server's record of the delivery
        # ... and the consumer recreated by the next instance to start
        made.append(Agent(clients[2], role, org, slow, ack_wait=30, lease=True).start())
        wait_for(lambda: total(made, "lease_waits") >= 1, 10, "the repeat waiting")
        assert [d for _, d, _ in runs.started] == [1]
        finish.set()
        assert done.next(timeout=10).decode(TaskCompleted).task_id == task.id
        wait_for(lambda: total(made, "acked_from_ledger") >= 1, 15, "the repeat acked")
        assert len(runs.started) == 1 and len(runs.ended) == 1
    finally:
        finish.set()
        for agent in made:
            agent.stop()
        for client in clients:
            client.close()


def test_a_dead_instance_s_lease_expires_and_the_task_runs_once_more(org_lab, agents, names):
    """The first run's instance dies mid-run (kill(): nothing released, as in a crash). The
    redelivery after ack_wait waits until the dead run's lease expires, then runs."""
    runs = Runs()

    async def first_hangs(task, ctx):
        import asyncio

        if runs.begin(ctx) == 1:
            await asyncio.sleep(60)  # killed meanwhile
        runs.end(ctx)
        return {"by": ctx.agent.instance}

    lease_ttl = 3
    first = agents(names.cto, names.org, first_hangs, ack_wait=1.0, lease_ttl=lease_ttl).start()
    done = org_lab.subscribe(Subjects().tasks_completed(names.org))
    task = publish(org_lab, names, "interrupted")
    wait_for(lambda: runs.started, 10, "the first run")
    first.kill()
    second = agents(names.cto, names.org, first_hangs, ack_wait=1.0,
                    lease_ttl=lease_ttl).start()
    event = done.next(timeout=20).decode(TaskCompleted)
    assert event.task_id == task.id and event.instance == second.instance
    assert len(runs.started) == 2 and runs.ended[0][0] == second.instance
    # Redelivered after ack_wait (1 s), it waited for the lease: claimed with the first run,
    # renewed at most until the kill, expired lease_ttl after its last write.
    assert second.stats["lease_waits"] == 1
    assert runs.started[1][2] - runs.started[0][2] >= lease_ttl - 0.5
    assert TaskLedger.declare(org_lab).get(names.org, task.id)["instance"] == second.instance


def test_a_long_run_keeps_renewing_its_lease_past_the_ttl(org_lab, agents, names):
    """A run five times as long as lease_ttl (saying in_progress() as it works) keeps its
    lease: renewed every third of the TTL, by the same run, which never looks quiet."""
    runs, lease_ttl = Runs(), 2

    def long_run(task, ctx):
        runs.begin(ctx)
        deadline = time.monotonic() + 5 * lease_ttl
        while time.monotonic() < deadline:
            ctx.in_progress()
            time.sleep(0.3)
        runs.end(ctx)
        return {}

    pair = [agents(names.cto, names.org, long_run, ack_wait=1.0, lease_ttl=lease_ttl).start()
            for _ in range(2)]
    done = org_lab.subscribe(Subjects().tasks_completed(names.org))
    task = publish(org_lab, names, "a long one")
    wait_for(lambda: runs.started, 10, "the run")
    leases = TaskLeases.declare(org_lab)
    first = wait_for(lambda: leases.holder(names.org, task.id), 5, "the lease")
    time.sleep(2 * lease_ttl)
    later = leases.holder(names.org, task.id)
    assert later is not None and later.run == first.run and later.revision > first.revision
    assert later.quiet_s < 1.0  # its in_progress() calls count as signs of life
    assert done.next(timeout=20).decode(TaskCompleted).task_id == task.id
    assert len(runs.started) == 1
    assert total(pair, "leases_lost") == 0


def test_a_hung_handler_is_dead_lettered_after_max_deliver_but_run_once(org_lab, agents,
                                                                        names):
    """A run that never returns nor calls in_progress() is hung by ack_wait's contract: its
    redeliveries are nak'ed (attempts, as failures are) instead of running next to it, and
    the task runs out of deliveries."""
    from agentlab.org import DeadLetterOffice

    runs, release = Runs(), threading.Event()

    def hangs(task, ctx):
        runs.begin(ctx)
        release.wait(60)
        return {}

    office = DeadLetterOffice(org_lab).start()
    try:
        agent = agents(names.cto, names.org, hangs, ack_wait=1.0, max_deliver=3).start()
        letters = org_lab.subscribe(Subjects().dlq(TASK_STREAM, names.cto))
        publish(org_lab, names, "never ends")
        letter = letters.next(timeout=30)
        assert letter.json()["reason"] == "max_deliveries"
        assert len(runs.started) == 1
        assert agent.stats["lease_naks"] >= 1
    finally:
        release.set()
        office.stop()


def test_a_failed_run_releases_its_lease_so_its_retry_need_not_wait(org_lab, agents, names):
    runs = Runs()

    def fails_once(task, ctx):
        if runs.begin(ctx) == 1:
            raise RuntimeError("not yet")
        return {}

    agent = agents(names.cto, names.org, fails_once, lease_ttl=60).start()
    done = org_lab.subscribe(Subjects().tasks_completed(names.org))
    publish(org_lab, names, "second time lucky")
    done.next(timeout=20)
    assert [d for _, d, _ in runs.started] == [1, 2]
    assert runs.started[1][2] - runs.started[0][2] < 10  # the back-off, not the 60 s lease
    assert agent.stats["lease_waits"] == 0


def test_a_lease_ttl_that_the_server_cannot_count_is_refused(org_lab, names):
    for bad in (0, 2.5, -3, "30"):
        with pytest.raises(ValueError, match="whole number of seconds"):
            Agent(org_lab, names.cto, names.org, lease_ttl=bad)


def test_two_claims_one_lease(org_lab, names):
    """The claim is a create: of two instances one gets the lease, the other learns who."""
    leases = TaskLeases.declare(org_lab)
    first = leases.claim(names.org, "t1", instance="a", runner="ra", ttl=5)
    second = leases.claim(names.org, "t1", instance="b", runner="rb", ttl=5)
    assert isinstance(first, Lease) and first.fresh
    assert isinstance(second, LeaseHolder) and second.instance == "a"
    assert 3 < second.remaining() <= 5
    leases.release(first)
    third = leases.claim(names.org, "t1", instance="b", runner="rb", ttl=5)
    assert isinstance(third, Lease) and not third.fresh  # over a released lease
    assert not leases.renew(first)  # no longer the first run's
    assert leases.renew(third) and leases.holder(names.org, "t1").revision == third.revision



def test_a_task_stored_before_the_feed_was_interrupted_is_looked_up_first(server):
    """The consumer is deleted and made again ("409 Consumer Deleted" ends the feed's
    request): the new consumer hands out again, as a first delivery, a task done before.
    Stored before the interruption, it is looked up in the ledger and acked, not run (with
    or without leases)."""
    from agentlab.org.workloop import CLOCK_SKEW_ALLOWANCE

    S, role, org = Subjects(), "cto", "acme"
    runs: list[str] = []
    admin, worker = (Client.open(server.url, name=n) for n in ("admin", "worker"))
    try:
        admin.js.declare_stream(StreamSpec(TASK_STREAM, [S.tasks("*")]))  # keeps acked tasks
        # No lease: a lease left by the first run would send the repeat to the ledger too.
        cto = Agent(worker, role, org, lambda task, ctx: runs.append(task.id),
                    ack_wait=30, lease=False).start()
        # Stored later than the connection by more than the clock skew allowed: fresh.
        time.sleep(CLOCK_SKEW_ALLOWANCE + 0.2)
        task = Task(org=org, role=role, title="done once", requested_by="ceo")
        admin.js.publish(S.tasks(role), task, msg_id=task.id)
        wait_for(lambda: cto.stats["processed"] == 1, 10, "the first run")
        assert cto.stats["ledger_prechecks"] == 0
        feed = cto._runner.feed
        admin.js.delete_consumer(TASK_STREAM, role)
        wait_for(lambda: feed.interrupted_at > 0, 10, "the feed told of the deletion")
        admin.js.declare_consumer(TASK_STREAM, cto.consumer_spec)  # from the first task on
        wait_for(lambda: cto.stats["acked_from_ledger"] == 1, 15, "the repeat acked")
        assert runs == [task.id] and cto.stats["ledger_prechecks"] == 1
        cto.stop()
    finally:
        admin.close()
        worker.close()
