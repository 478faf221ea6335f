"""The reference Agent against a real server: consumer, heartbeat, delegation, exactly-once,
scale-to-zero, crashes, retries, replicas, queue groups and request/reply (seeds 000, 001).

Every test uses its own role and org names: roles are durable consumers and subjects.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import Counter
from typing import Any

import pytest
from nats.js.api import AckPolicy, DeliverPolicy

from agentlab import AgentMessage, BadSubject, NoResponders, RequestTimeout, Subjects
from agentlab.org import (
    TASK_STREAM,
    Agent,
    AgentStatus,
    ErrorReply,
    Heartbeat,
    Heartbeats,
    Task,
    TaskCompleted,
    TaskLedger,
    retry_delay,
)
from helpers import stored, wait_for

S = Subjects()
pytestmark = pytest.mark.timeout(60)


# -- helpers -------------------------------------------------------------------------------
def completions(sub, count: int, timeout: float = 5.0) -> list[TaskCompleted]:
    got = [m.decode(TaskCompleted) for m in sub.messages(count=count, timeout=timeout)]
    assert len(got) == count, f"{len(got)} of {count} completions arrived"
    return got


# -- the agent itself ------------------------------------------------------------------------
def test_agent_has_the_seed_consumer_an_inbox_and_a_heartbeat(org_lab, agents, names):
    beats = org_lab.subscribe(S.heartbeats())
    cto = agents(names.cto, names.org, ack_wait=1.5).start()

    config = org_lab.js.consumer_info(TASK_STREAM, names.cto).config
    assert config.durable_name == names.cto
    assert config.filter_subject == f"genbrain.agents.{names.cto}.tasks"
    assert config.ack_policy == AckPolicy.EXPLICIT
    assert config.ack_wait == 1.5
    assert config.max_deliver == 3
    assert config.max_ack_pending == 5
    assert config.deliver_policy == DeliverPolicy.ALL

    hearts: list[Heartbeat] = []  # other tests' agents may beat on this server too

    def four_beats() -> bool:
        for msg in beats.messages(timeout=0.05):
            hearts.extend(b for b in msg.decode(Heartbeats).beats if b.instance == cto.instance)
        return len(hearts) >= 4

    wait_for(four_beats, 3, "four heartbeats")
    assert {(h.role, h.org, h.instance) for h in hearts} == {(names.cto, names.org, cto.instance)}
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(hearts, hearts[1:], strict=False)]
    assert all(0.1 < gap < 0.8 for gap in gaps), gaps

    status = org_lab.request(S.inbox(names.cto), b"", timeout=1).json()
    assert status["role"] == names.cto and status["instance"] == cto.instance
    assert status["status"] == "ok"


def test_role_and_org_must_be_subject_tokens(org_lab):
    with pytest.raises(BadSubject, match="role"):
        Agent(org_lab, "c.t.o")
    with pytest.raises(BadSubject, match="org"):
        Agent(org_lab, "cto", org="acme corp")


def test_delegation_follows_the_seed_sequence(org_lab, connect, agents, names):
    """CEO publishes a task; CTO gets it, reports progress to the CEO's inbox, acks, and
    announces the completion on org.{org}.tasks.completed (seed 000's sequence diagram)."""
    observer = connect("observer").subscribe("genbrain.>")  # one subscription: one order

    def cto_work(task: Task, ctx) -> dict:
        ctx.progress("comparing options", percent=50)
        return {"decision": f"{task.details['db']} it is"}

    cto = agents(names.cto, names.org, cto_work).start()
    ceo = agents(names.ceo, names.org)
    task = ceo.delegate(names.cto, "Pick a vector database", {"db": "pgvector"})

    flow: list[tuple[str, bytes]] = []

    def completed() -> bool:
        for msg in observer.messages(timeout=0.05):
            if "heartbeat" not in msg.subject:
                flow.append((msg.subject, msg.data))
        return any(subject == S.tasks_completed(names.org) for subject, _ in flow)

    wait_for(completed, what="the completion")
    subjects = [subject for subject, _ in flow]
    order = [S.tasks(names.cto), S.inbox(names.ceo), S.tasks_completed(names.org)]
    assert [s for s in subjects if s in order] == order
    assert S.tasks_created(names.org) in subjects

    published = Task.model_validate_json(dict(flow)[S.tasks(names.cto)])
    assert published == task and published.requested_by == names.ceo
    progress = AgentMessage.from_bytes(dict(flow)[S.inbox(names.ceo)])
    assert progress.type == "task.progress" and progress.sender == names.cto
    assert progress.payload == {"task_id": task.id, "text": "comparing options", "percent": 50}
    assert progress.correlation_id == task.id
    done = TaskCompleted.model_validate_json(dict(flow)[S.tasks_completed(names.org)])
    assert (done.task_id, done.role, done.instance) == (task.id, names.cto, cto.instance)
    assert done.result == {"decision": "pgvector it is"} and done.deliveries == 1

    # Acked: the work queue forgot the task, and nothing waits for an ack.
    wait_for(lambda: stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0, what="the ack")
    info = org_lab.js.consumer_info(TASK_STREAM, names.cto)
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    assert cto.stats["processed"] == 1 and cto.stats["progress"] == 1


async def _async_double(task: Task, ctx) -> dict:
    await asyncio.sleep(0.01)
    return {"double": task.details["n"] * 2, "thread": threading.current_thread().name}


class AsyncCallable:
    async def __call__(self, task: Task, ctx) -> dict:
        return {"thread": threading.current_thread().name, "object": True}


@pytest.mark.parametrize("kind", ["sync", "async", "async-callable", "lambda-to-coroutine",
                                  "partial", "returns-scalar"])
def test_any_sync_or_async_callable_is_a_handler(org_lab, agents, names, kind):
    handlers: dict[str, Any] = {
        "sync": lambda task, ctx: {"thread": threading.current_thread().name},
        "async": _async_double,
        "async-callable": AsyncCallable(),
        "lambda-to-coroutine": lambda task, ctx: _async_double(task, ctx),
        "partial": functools.partial(_async_double),
        "returns-scalar": lambda task, ctx: task.details["n"] + 1,
    }
    done = org_lab.subscribe(S.tasks_completed(names.org))
    agents(names.cto, names.org, handlers[kind]).start()
    agents(names.ceo, names.org).delegate(names.cto, "compute", {"n": 21})
    result = completions(done, 1)[0].result
    if kind == "returns-scalar":
        assert result == {"value": 22}
        return
    # Sync callables run in the handler pool; coroutines on agentlab's loop thread.
    expected = "agentlab-handler" if kind == "sync" else "agentlab-loop"
    assert result["thread"].startswith(expected), result


def test_in_progress_keeps_a_long_task_from_redelivery(org_lab, agents, names):
    calls: list[int] = []

    def long_work(task: Task, ctx) -> dict:
        calls.append(ctx.deliveries)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            ctx.in_progress()
            time.sleep(0.4)
        return {"pages": 40}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto = agents(names.cto, names.org, long_work, ack_wait=1).start()
    agents(names.ceo, names.org).delegate(names.cto, "Write the design doc")
    event = completions(done, 1, timeout=6)[0]
    assert event.deliveries == 1 and event.duration_ms >= 2400
    time.sleep(1.2)  # more than ack_wait: a redelivery would have arrived by now
    assert calls == [1]
    assert cto.stats["redeliveries"] == 0
    assert org_lab.js.consumer_info(TASK_STREAM, names.cto).num_redelivered == 0


def test_keep_alive_holds_a_task_through_one_long_blocking_call(org_lab, agents, names):
    calls: list[int] = []

    def one_long_call(task: Task, ctx) -> dict:
        calls.append(ctx.deliveries)
        with ctx.keep_alive():      # every ack_wait / 3 = 0.33 s
            time.sleep(2.5)         # a model call that cannot report progress itself
        return {"pages": 40}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    agents(names.cto, names.org, one_long_call, ack_wait=1).start()
    agents(names.ceo, names.org).delegate(names.cto, "Write the design doc")
    event = completions(done, 1, timeout=6)[0]
    time.sleep(1.2)  # more than ack_wait: a redelivery would have arrived by now
    assert event.deliveries == 1 and calls == [1]
    assert org_lab.js.consumer_info(TASK_STREAM, names.cto).num_redelivered == 0


def test_without_in_progress_a_long_task_is_redelivered(org_lab, agents, names):
    """The control for the test above: the same ack_wait, no in_progress(). (Without the
    lease too, which makes the redelivery wait for the live first run: test_leases.py.)"""
    calls: list[int] = []

    def long_work(task: Task, ctx) -> dict:
        calls.append(ctx.deliveries)
        if ctx.deliveries == 1:
            time.sleep(1.6)
        return {}

    agents(names.cto, names.org, long_work, ack_wait=1, lease=False).start()
    agents(names.ceo, names.org).delegate(names.cto, "Write the design doc")
    wait_for(lambda: len(calls) == 2, timeout=4, what="the redelivery")
    assert calls == [1, 2]


# -- exactly-once effect ------------------------------------------------------------------------
def test_same_task_id_is_stored_once(org_lab, agents, names):
    task = Task(org=names.org, role=names.cto, title="Set up CI", requested_by=names.ceo)
    first = org_lab.js.publish(S.tasks(names.cto), task, msg_id=task.id)
    again = org_lab.js.publish(S.tasks(names.cto), task, msg_id=task.id)
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    ceo = agents(names.ceo, names.org)
    for _ in range(2):  # the CEO resends it too: still one task, one "created" event
        assert ceo.delegate(names.cto, "Set up CI", task_id=task.id).id == task.id
    assert stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 1
    org_lab.flush()
    assert stored(org_lab, "AGENT_EVENTS", S.tasks_created(names.org)) == 1

    calls = Counter()
    done = org_lab.subscribe(S.tasks_completed(names.org))
    agents(names.cto, names.org, lambda t, ctx: calls.update([t.id])).start()
    assert completions(done, 1)[0].task_id == task.id
    assert done.messages(timeout=0.5) == []
    assert calls == {task.id: 1}


class _AckLost:
    """The delivery as the work loop sees it, except that its ack never reaches the server."""

    def __init__(self, msg):
        self._msg = msg

    def __getattr__(self, name):
        return getattr(self._msg, name)

    def ack(self) -> None:
        pass


class CrashesBeforeAck(Agent):
    """Records the effect in the ledger and announces it, then dies before its ack leaves."""

    async def _astart_service(self):
        await super()._astart_service()
        run_task = self._runner._run_task

        async def lose_the_ack_and_crash(task, msg):
            await run_task(task, _AckLost(msg))
            self.kill()

        self._runner._run_task = lose_the_ack_and_crash  # before the loop can take a task


def test_effect_recorded_but_ack_lost_is_not_repeated(org_lab, connect, agents, names):
    calls = Counter()

    def charge_card(task: Task, ctx) -> dict:
        calls[task.id] += 1  # the side effect that must happen once
        return {"charged": task.details["amount"]}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    crashing = CrashesBeforeAck(connect("cto-crashing"), names.cto, names.org, charge_card,
                                ack_wait=1, heartbeat_interval=0.2).start()
    task = agents(names.ceo, names.org).delegate(names.cto, "Charge", {"amount": 42})
    first = completions(done, 1)[0]
    assert (first.deliveries, first.instance) == (1, crashing.instance)
    wait_for(lambda: not crashing.running, what="the crash")

    survivor = agents(names.cto, names.org, charge_card).start()
    second = completions(done, 1, timeout=4)[0]  # after ack_wait: the redelivery
    assert (second.task_id, second.deliveries) == (task.id, 2)
    assert second.instance == survivor.instance and second.result == {"charged": 42}

    assert calls == {task.id: 1}
    assert survivor.stats["duplicates_suppressed"] == 1 and survivor.stats["processed"] == 0
    assert TaskLedger.declare(org_lab).get(names.org, task.id)["instance"] == crashing.instance
    wait_for(lambda: stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0, what="the ack")
    # Announced twice on the wire, stored once: Nats-Msg-Id "{org}.{task_id}.completed".
    assert stored(org_lab, "AGENT_EVENTS", S.tasks_completed(names.org)) == 1


@pytest.mark.parametrize("precheck", [True, False])
def test_a_task_whose_effect_is_in_the_ledger_is_only_acked(org_lab, agents, names, unique,
                                                            precheck):
    """As if the task ran before (a resend after the 60 s duplicate window, say)."""
    task_id = f"task-{unique}"
    TaskLedger.declare(org_lab).record(TaskCompleted(
        task_id=task_id, org=names.org, role=names.cto, instance="cto-old", title="Again",
        result={"from": "the earlier run"}))
    calls = Counter()
    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto = agents(names.cto, names.org, lambda t, ctx: calls.update([t.id]) or {"new": 1},
                 ledger_precheck=precheck).start()
    agents(names.ceo, names.org).delegate(names.cto, "Again", task_id=task_id)

    event = completions(done, 1)[0]
    assert event.task_id == task_id and event.result == {"from": "the earlier run"}
    assert cto.stats["duplicates_suppressed"] == 1 and cto.stats["processed"] == 0
    wait_for(lambda: stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0, what="the ack")
    assert stored(org_lab, "AGENT_EVENTS", S.tasks_completed(names.org)) == 1
    # The documented trade-off: without the pre-check the handler itself runs again.
    assert calls == ({} if precheck else {task_id: 1})


# -- scale to zero, crashes, retries ---------------------------------------------------------
def test_tasks_wait_while_the_agent_is_scaled_to_zero(org_lab, agents, names):
    seen: list[str] = []
    cto = agents(names.cto, names.org, lambda t, ctx: seen.append(t.id)).start()
    cto.stop()  # scaled to zero: the durable consumer stays, nobody pulls
    ceo = agents(names.ceo, names.org)
    ids = [ceo.delegate(names.cto, f"task {i}").id for i in range(5)]

    assert stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 5
    assert org_lab.js.consumer_info(TASK_STREAM, names.cto).num_pending == 5
    time.sleep(0.3)
    assert seen == []

    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto.start()  # scale up again: from the durable position, all of them
    assert sorted(e.task_id for e in completions(done, 5)) == sorted(ids)
    assert sorted(seen) == sorted(ids)
    wait_for(lambda: stored(org_lab, TASK_STREAM, S.tasks(names.cto)) == 0, what="the acks")
    info = org_lab.js.consumer_info(TASK_STREAM, names.cto)
    assert info.num_pending == 0 and info.num_ack_pending == 0


def test_a_killed_agent_s_task_is_redelivered_after_ack_wait(org_lab, agents, names):
    started = threading.Event()
    calls: list[int] = []

    def work(task: Task, ctx) -> dict:
        calls.append(ctx.deliveries)
        if ctx.deliveries == 1:
            started.set()
            while not ctx.cancelled:  # stuck, until the process "crashes"
                time.sleep(0.02)
            ctx.in_progress()  # from a dead agent: dropped, so cannot keep the task
            return {"zombie": True}
        return {"ok": True}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    doomed = agents(names.cto, names.org, work, ack_wait=1).start()
    task = agents(names.ceo, names.org).delegate(names.cto, "Migrate the database")
    assert started.wait(3)
    killed_at = time.monotonic()
    doomed.kill()
    assert not doomed.running

    def inbox_gone() -> bool:
        try:
            org_lab.request(S.inbox(names.cto), b"", timeout=0.3)
        except NoResponders:
            return True
        except RequestTimeout:  # sent while the unsubscribe was on its way: a crash
            return False
        return False

    wait_for(inbox_gone, timeout=2, what="the killed agent's inbox to go")

    successor = agents(names.cto, names.org, work, ack_wait=1).start()
    event = completions(done, 1, timeout=5)[0]
    assert time.monotonic() - killed_at >= 0.5  # not before the ack wait ran out
    assert (event.task_id, event.deliveries) == (task.id, 2)
    assert event.instance == successor.instance and event.result == {"ok": True}
    assert calls == [1, 2]
    assert done.messages(timeout=0.3) == []  # the zombie's result was dropped
    assert TaskLedger.declare(org_lab).get(names.org, task.id)["result"] == {"ok": True}


def test_a_failed_task_is_retried_after_the_backoff_not_before(org_lab, agents, names):
    attempts: list[float] = []

    def flaky(task: Task, ctx) -> dict:
        attempts.append(time.monotonic())
        if ctx.deliveries == 1:
            raise ConnectionError("the LLM API timed out")
        return {"ok": True}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto = agents(names.cto, names.org, flaky, ack_wait=5).start()
    agents(names.ceo, names.org).delegate(names.cto, "Summarise the meeting")
    event = completions(done, 1, timeout=4)[0]
    assert event.deliveries == 2 and event.result == {"ok": True}
    gap = attempts[1] - attempts[0]
    assert retry_delay(1) == 0.5
    assert retry_delay(1) <= gap < 2.0, gap  # nak(0.5 s): not at once, not after ack_wait
    assert cto.stats["failed"] == 1 and cto.stats["processed"] == 1


def test_stop_is_prompt_and_finishes_the_task_in_hand(org_lab, agents, names):
    started = threading.Event()

    def work(task: Task, ctx) -> dict:
        started.set()
        time.sleep(0.3)
        return {"finished": True}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto = agents(names.cto, names.org, work, heartbeat_interval=5).start()
    agents(names.ceo, names.org).delegate(names.cto, "Finish me")
    assert started.wait(3)
    t0 = time.monotonic()
    cto.stop()
    took = time.monotonic() - t0
    assert took < 1.5, took  # not a heartbeat_interval (5 s)
    assert completions(done, 1, timeout=0.5)[0].result == {"finished": True}

    cto.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    cto.stop()
    assert time.monotonic() - t0 < 1.0  # the idle pull request expires within 0.5 s


def test_stop_timeout_abandons_a_stuck_task_for_redelivery(org_lab, agents, names):
    """A handler that outlives stop(timeout) is abandoned like a crash: its ctx goes dead,
    so its in_progress() calls stop holding the task, and a successor gets it."""
    started = threading.Event()

    def work(task: Task, ctx) -> dict:
        if ctx.deliveries == 1:
            started.set()
            while not ctx.cancelled:
                ctx.in_progress()
                time.sleep(0.1)
            return {"abandoned": True}
        return {"deliveries": ctx.deliveries}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    cto = agents(names.cto, names.org, work, ack_wait=1).start()
    agents(names.ceo, names.org).delegate(names.cto, "Never ends")
    assert started.wait(3)
    t0 = time.monotonic()
    cto.stop(timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    agents(names.cto, names.org, work, ack_wait=1).start()
    event = completions(done, 1, timeout=4)[0]
    assert event.result == {"deliveries": 2}


# -- replicas and queue groups ---------------------------------------------------------------
def test_replicas_share_one_durable_consumer_and_split_the_work(org_lab, agents, names):
    lock = threading.Lock()
    calls: Counter[str] = Counter()

    def work(task: Task, ctx) -> dict:
        with lock:
            calls[task.id] += 1
        time.sleep(0.01)
        return {"by": ctx.agent.instance}

    done = org_lab.subscribe(S.tasks_completed(names.org))
    replicas = [agents(names.cto, names.org, work).start() for _ in range(3)]
    ceo = agents(names.ceo, names.org)
    ids = [ceo.delegate(names.cto, f"ticket {i}").id for i in range(60)]

    events = completions(done, 60, timeout=15)
    assert sorted(e.task_id for e in events) == sorted(ids)  # each one, once
    split = Counter(e.instance for e in events)
    print("split over the replicas:", dict(split))
    assert set(split) == {r.instance for r in replicas} and all(split.values())
    assert [r.stats["processed"] for r in replicas] == [split[r.instance] for r in replicas]
    assert sum(split.values()) == 60
    assert set(calls) == set(ids) and set(calls.values()) == {1}  # no task ran twice
    ledger = TaskLedger.declare(org_lab)
    assert Counter(ledger.get(names.org, i)["instance"] for i in ids) == split
    assert org_lab.js.consumer_info(TASK_STREAM, names.cto).num_redelivered == 0


def test_core_queue_group_splits_requests_between_workers(org_lab, connect, unique):
    """Seed 001: members of one queue group share a subject's messages (nats-server picks
    a member at random for each message, so over 60 requests every worker gets some)."""
    subject = f"{unique}.search"  # a core subject: no stream captures it
    for i in range(3):
        connect(f"worker-{i}").serve(subject, lambda msg, i=i: {"worker": i}, queue="search")
    split = Counter(org_lab.request(subject, {"q": n}, timeout=1).json()["worker"]
                    for n in range(60))
    print("split over the queue group:", dict(split))
    assert set(split) == {0, 1, 2} and sum(split.values()) == 60


# -- request / reply between agents ------------------------------------------------------------
def test_agents_answer_requests_on_their_inbox_and_gather_fans_out(org_lab, agents, names,
                                                                   unique):
    cfo = f"cfo{unique}"

    async def budget(msg):
        return {"budget": 100, "asked": msg.json()["q"]}

    agents(names.cto, names.org).start()  # default: a status answer
    agents(cfo, names.org, on_request=budget).start()
    missing = f"cmo{unique}"  # nobody runs this role

    answers = org_lab.gather([(S.inbox(names.cto), {"q": "status"}),
                              (S.inbox(cfo), {"q": "budget?"}),
                              (S.inbox(missing), {"q": "anyone?"})], timeout=1)
    assert answers[0].json()["role"] == names.cto and answers[0].json()["status"] == "ok"
    assert answers[1].json() == {"budget": 100, "asked": "budget?"}
    assert isinstance(answers[2], NoResponders) and answers[2].subject == S.inbox(missing)


def test_request_timeouts_errors_and_no_responders_are_clear(org_lab, agents, names, unique):
    def slow(msg):
        time.sleep(1)
        return "late"

    def broken(msg):
        raise ValueError("no budget data")

    slow_role, broken_role = f"slow{unique}", f"broken{unique}"
    agents(slow_role, names.org, on_request=slow).start()
    agents(broken_role, names.org, on_request=broken).start()

    with pytest.raises(RequestTimeout, match=S.inbox(slow_role)):
        org_lab.request(S.inbox(slow_role), b"", timeout=0.3)
    error = org_lab.request(S.inbox(broken_role), b"", timeout=1)
    assert error.json() == {"error": "ValueError: no budget data"}
    assert error.headers.get("Agentlab-Error") == "ValueError"

    nobody = S.inbox(f"ghost{unique}")
    with pytest.raises(NoResponders, match=nobody) as caught:
        org_lab.request(nobody, b"", timeout=1)
    assert caught.value.subject == nobody


def test_inbox_replies_have_registered_schemas(org_lab, agents, names, unique):
    """What a client in another language gets back from an inbox: AgentStatus, or an
    ErrorReply (with the Agentlab-Error header) when on_request raised; docs/protocol.md."""
    jsonschema = pytest.importorskip("jsonschema")
    from agentlab.wire import json_schemas

    def broken(msg):
        raise KeyError("budget")

    broken_role = f"broken{unique}"
    cto = agents(names.cto, names.org).start()
    agents(broken_role, names.org, on_request=broken).start()
    status = org_lab.request(S.inbox(names.cto), b"", timeout=1)
    jsonschema.validate(status.json(), json_schemas()["AgentStatus"])
    assert status.decode(AgentStatus) == AgentStatus(role=names.cto, instance=cto.instance,
                                                     org=names.org, processed=0, in_flight=0)
    error = org_lab.request(S.inbox(broken_role), b"", timeout=1)
    jsonschema.validate(error.json(), json_schemas()["ErrorReply"])
    assert error.decode(ErrorReply).error == "KeyError: 'budget'"
    assert error.headers["Agentlab-Error"] == "KeyError"


def test_the_platform_org_is_not_an_agents_org(org_lab):
    with pytest.raises(BadSubject, match="org 'system' is reserved"):
        Agent(org_lab, "cto", org="system")
