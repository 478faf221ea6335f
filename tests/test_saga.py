"""Sagas on the real server: steps as requests to agents, compensation in reverse order.

The agents are responders (``client.serve``) on their own connections, serving subjects
under the per-test ``unique`` prefix; each records what it was asked to do, in order.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agentlab import BadSubject
from agentlab.org import Event, Saga, SagaRequest, on_event


class Ledger:
    """What the agents did, in the order they did it, across threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls: list[str] = []

    def note(self, what: str) -> None:
        with self.lock:
            self.calls.append(what)


@pytest.fixture
def agents(connect, unique):
    """billing, inventory and shipping agents, one connection each; returns (ledger, subject)."""
    ledger = Ledger()
    behaviour: dict[str, str] = {}  # "<agent>.<verb>" -> "ok" | "raise" | "error" | "slow"

    def serve(agent: str, verb: str):
        def handle(msg):
            request = msg.decode(SagaRequest)
            key = f"{agent}.{verb}"
            ledger.note(key)
            mode = behaviour.get(key, "ok")
            if mode == "raise":
                raise RuntimeError(f"{agent} cannot {verb}")
            if mode == "error":
                return {"error": f"{agent} refused to {verb}"}
            if mode == "slow":
                time.sleep(1.0)
            return {"by": agent, "verb": verb, "context": request.context,
                    "seen": sorted(request.results), "payload": request.payload}
        return handle

    for agent, verbs in {"billing": ["charge", "refund"], "inventory": ["reserve", "release"],
                         "shipping": ["ship", "cancel"]}.items():
        client = connect(agent)
        for verb in verbs:
            client.serve(f"{unique}.{agent}.{verb}", serve(agent, verb))

    def subject(agent: str, verb: str) -> str:
        return f"{unique}.{agent}.{verb}"

    return ledger, subject, behaviour


def order_saga(client, subject, extra_step: bool = False, timeout: float = 1.0) -> Saga:
    saga = Saga(client, "order", default_timeout=timeout)
    saga.step("charge", (subject("billing", "charge"), {"amount": 30}),
              (subject("billing", "refund"), {"amount": 30}))
    saga.step("reserve", (subject("inventory", "reserve"), {"sku": "A1"}),
              (subject("inventory", "release"), {"sku": "A1"}))
    saga.step("ship", (subject("shipping", "ship"), {}), (subject("shipping", "cancel"), {}))
    if extra_step:
        saga.step("notify", (subject("shipping", "ship"), {"notify": True}))
    return saga


def test_all_steps_succeed(connect, agents):
    ledger, subject, _ = agents
    result = order_saga(connect("orchestrator"), subject).run({"order_id": 42})
    assert result.status == "completed" and result.ok
    assert result.completed == ["charge", "reserve", "ship"]
    assert result.compensations == [] and result.failures == [] and result.error is None
    assert ledger.calls == ["billing.charge", "inventory.reserve", "shipping.ship"]
    # Each agent got the saga's context, its own payload and the results so far.
    assert result.results["charge"]["context"] == {"order_id": 42}
    assert result.results["charge"]["payload"] == {"amount": 30}
    assert result.results["ship"]["seen"] == ["charge", "reserve"]
    assert set(result.step_ms) == {"charge", "reserve", "ship"} and result.duration_ms > 0


def test_step_3_of_4_raises_and_steps_2_then_1_are_compensated(connect, agents):
    ledger, subject, behaviour = agents
    behaviour["shipping.ship"] = "raise"  # the agent's handler raises: Agentlab-Error reply
    result = order_saga(connect("orchestrator"), subject, extra_step=True).run()
    assert result.status == "compensated"
    assert result.completed == ["charge", "reserve"] and result.failed_step == "ship"
    assert result.compensations == ["reserve", "charge"]  # reverse order
    assert ledger.calls == ["billing.charge", "inventory.reserve", "shipping.ship",
                            "inventory.release", "billing.refund"]  # step 4 never ran
    assert result.error.kind == "error" and "shipping cannot ship" in result.error.message


def test_error_reply_counts_as_a_failure(connect, agents):
    ledger, subject, behaviour = agents
    behaviour["inventory.reserve"] = "error"  # a normal reply carrying {"error": ...}
    result = order_saga(connect("orchestrator"), subject).run()
    assert result.status == "compensated" and result.compensations == ["charge"]
    assert result.error.message == "inventory refused to reserve"


def test_step_2_times_out_and_step_1_is_compensated(connect, agents):
    ledger, subject, behaviour = agents
    behaviour["inventory.reserve"] = "slow"
    started = time.monotonic()
    result = order_saga(connect("orchestrator"), subject, timeout=0.3).run()
    assert time.monotonic() - started < 1.0  # the saga did not wait for the slow agent
    assert result.status == "compensated" and result.failed_step == "reserve"
    assert result.error.kind == "timeout"
    assert result.compensations == ["charge"]  # a timed-out step is not compensated
    assert ledger.calls[-1] == "billing.refund" and "shipping.ship" not in ledger.calls


def test_missing_agent_counts_as_a_failure(connect, agents, unique):
    _, subject, _ = agents
    saga = order_saga(connect("orchestrator"), subject)
    saga.step("invoice", (f"{unique}.nobody.invoice", {}))
    result = saga.run()
    assert result.failed_step == "invoice" and result.error.kind == "no_responders"
    assert result.compensations == ["ship", "reserve", "charge"]


def test_failing_compensation_is_reported_and_the_rest_still_run(connect, agents):
    ledger, subject, behaviour = agents
    behaviour["shipping.ship"] = "raise"
    behaviour["inventory.release"] = "raise"
    result = order_saga(connect("orchestrator"), subject).run()
    assert result.status == "failed_compensation"
    assert result.compensations == ["reserve", "charge"]
    assert ledger.calls[-2:] == ["inventory.release", "billing.refund"]  # charge still undone
    assert result.error.step == "ship" and "shipping cannot ship" in result.error.message
    [undo] = result.compensation_errors
    assert (undo.step, undo.phase) == ("reserve", "compensate")
    assert "inventory cannot release" in undo.message
    assert set(result.compensation_ms) == {"reserve", "charge"}


def test_callable_steps_and_steps_without_compensation(connect):
    done: list[str] = []

    def reserve(request: SagaRequest):
        done.append("reserve")
        return {"reservation": "r-1"}

    async def release(request: SagaRequest):
        done.append(f"release {request.results['reserve']['reservation']}")

    def explode(request: SagaRequest):
        raise ValueError("card declined")

    saga = Saga(connect("local"), "local")
    saga.step("lookup", lambda request: done.append("lookup") or 7)  # nothing to undo
    saga.step("reserve", reserve, release)
    saga.step("pay", explode, lambda request: done.append("never"))
    result = saga.run()
    assert done == ["lookup", "reserve", "release r-1"]
    assert result.results == {"lookup": 7, "reserve": {"reservation": "r-1"}}
    assert result.compensations == ["reserve"] and result.status == "compensated"
    assert result.error.message == "ValueError: card declined"


def test_callable_timeout(connect):
    async def stall(request: SagaRequest):
        await asyncio.sleep(5)

    result = Saga(connect("local"), "stall").step("stall", stall, timeout=0.1).run()
    assert result.error.kind == "timeout" and result.status == "compensated"


def test_progress_events_can_be_watched(connect, agents):
    ledger, subject, behaviour = agents
    behaviour["shipping.ship"] = "raise"
    seen: list[Event] = []
    lock = threading.Lock()

    def watch(event: Event) -> None:
        with lock:
            seen.append(event)

    on_event(connect("watcher"), "saga.>", watch, group="")
    result = order_saga(connect("orchestrator"), subject).run(saga_id="order-777")
    deadline = time.monotonic() + 3
    while not any(e.type == "saga.finished" for e in seen) and time.monotonic() < deadline:
        time.sleep(0.02)
    mine = [e for e in seen if e.correlation_id == "order-777"]
    assert [(e.type, e.payload["step"]) for e in mine] == [
        ("saga.started", None), ("saga.step_completed", "charge"),
        ("saga.step_completed", "reserve"), ("saga.step_failed", "ship"),
        ("saga.compensated", "reserve"), ("saga.compensated", "charge"),
        ("saga.finished", None)]
    assert mine[-1].payload["status"] == result.status == "compensated"
    assert mine[-1].source == "saga:order"


def test_saga_across_agents_from_async_code(connect, agents):
    _, subject, _ = agents
    saga = order_saga(connect("orchestrator"), subject)
    result = asyncio.run(saga.arun({"order_id": 1}))
    assert result.ok and result.completed == ["charge", "reserve", "ship"]


def test_definition_errors_fail_early(connect):
    saga = Saga(connect("x"), "bad")
    saga.step("one", lambda r: 1)
    with pytest.raises(ValueError, match="already has a step"):
        saga.step("one", lambda r: 2)
    with pytest.raises(BadSubject):
        saga.step("two", ("not a subject", {}))
    with pytest.raises(TypeError, match="subject, payload"):
        saga.step("three", "just a string")
    with pytest.raises(ValueError):
        Saga(connect("y"), "")
