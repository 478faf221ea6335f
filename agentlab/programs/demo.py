"""`agentlab demo`: the whole reference organisation, end to end, in under a minute.

Delegation, a meeting with a decision, async tool calls, a saga that compensates, a poison
task and a flaky task ending in the dead-letter queue, scale to zero, and intents that
expire. A live flow tail and a progress bar show it happening; the summary checks it.
Read it top to bottom: each step is a few lines of agentlab's public API.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import agentlab
from agentlab.core.received import Message
from agentlab.org.intents import IntentQueue, publish_intent
from agentlab.org.meetings import Meeting, attend_meetings
from agentlab.org.organisation import Organisation
from agentlab.org.saga import Saga
from agentlab.org.tools import ToolClient, ToolWorkerPool
from agentlab.reports.report import consumer_report, natural_width, stream_report


class FlowTail:
    """An observer on ``genbrain.>``: the last messages, for the live view."""

    def __init__(self, client: agentlab.Client, pattern: str, size: int = 10):
        self.rows: deque[tuple[str, str, str, str]] = deque(maxlen=size)
        self.count = 0
        self._start = time.monotonic()
        client.subscribe(pattern, self._record)

    def _record(self, msg: Message) -> None:
        self.count += 1
        try:
            body = msg.json()
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        sender = str(body.get("sender") or body.get("requested_by") or body.get("role")
                     or body.get("source") or "")
        kind = str(body.get("type") or body.get("kind") or body.get("title") or "")[:28]
        self.rows.append((f"+{time.monotonic() - self._start:5.2f}s", sender, kind,
                          msg.subject.removeprefix("genbrain.")))

    def __rich__(self) -> Table:
        table = Table(title=f"flow tail ({self.count} messages seen)", expand=True,
                      title_justify="left", show_edge=False, pad_edge=False)
        for name, style in (("time", "dim"), ("from", "blue"), ("what", "magenta"),
                            ("subject", "cyan")):
            table.add_column(name, style=style, no_wrap=True)
        for row in self.rows:
            table.add_row(*row)
        return table


def brief(value: Any, width: int = 40) -> str:
    text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run(console: Console | None = None) -> bool:
    console = console or Console(highlight=False)
    started = time.monotonic()
    # The tour narrates failures itself; the library's warnings would repeat them.
    quiet, logging.getLogger("agentlab").level = logging.getLogger("agentlab").level, logging.ERROR
    lab = agentlab.start()
    s = agentlab.Subjects()
    org = Organisation(lab, "acme", ack_wait=2.0, heartbeat_interval=0.5,
                       monitor_interval=0.5).start()
    observer = lab.connect("observer")
    tail = FlowTail(observer, s.everything())
    completed = observer.subscribe(s.tasks_completed("acme"))
    steps = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                     TextColumn("{task.completed}/{task.total} steps"), TimeElapsedColumn())
    overall = steps.add_task("tour", total=7)
    facts: dict[str, Any] = {}
    checks: list[tuple[str, bool]] = []

    def step(title: str, why: str) -> None:
        console.rule(f"[bold]{title}")
        console.print(f"[dim]{why}")

    with Live(Group(steps, tail), console=console, refresh_per_second=6, transient=True):
        step("1. Delegation", "The board gives the CEO a goal; the CEO splits it for the "
             "CTO and the CFO over the AGENT_TASKS work queue.")
        org.assign("Launch the product")
        done = completed.messages(count=3, timeout=10)
        for msg in done:
            event = msg.json()
            console.print(f"  ✓ [blue]{event['role']}[/] finished [magenta]{event['title']}"
                          f"[/] → {brief(event['result'])}")
        checks.append(("CEO, CTO and CFO completed the delegated work", len(done) == 3))
        steps.advance(overall)

        step("2. Meeting", "The CEO calls a meeting; the CTO and CFO join from their "
             "invitations; the decision is recorded in the MEETINGS stream.")
        for role in ("cto", "cfo"):
            attend_meetings(org.agent(role).client, role)
        meeting = Meeting.create(org.agent("ceo").client, "Launch plan", ["cto", "cfo"],
                                 organizer="ceo")
        meeting.say("ceo", "Ship in two weeks?")
        wait_until(lambda: len(meeting.transcript()) >= 3, 5)
        meeting.decide("ceo", "Ship on the 1st, managed services first")
        late = Meeting.join(lab, meeting.id).transcript()
        for entry in late:
            console.print(f"  [blue]{entry.sender}[/] {entry.kind}: {entry.text}")
        facts["decisions"] = len([e for e in late if e.kind == "decision"])
        checks.append(("a late joiner replays the meeting with its decision",
                       facts["decisions"] == 1 and len(late) >= 4))
        steps.advance(overall)

        step("3. Async tools", "An agent starts three slow searches for three "
             "conversations at once and carries on; a pool of workers answers.")

        def web_search(query: str) -> dict[str, Any]:
            time.sleep(0.5)
            return {"query": query, "hits": len(query)}

        with ToolWorkerPool(lab.connect("tools"), "web_search", web_search, workers=3):
            callers = [ToolClient(org.agent("cto").client, f"conv-{n}").start()
                       for n in range(3)]
            tool_started = time.monotonic()
            calls = [(c, c.call_async("web_search", query=f"vector db {n}"))
                     for n, c in enumerate(callers)]
            results = [c.result(call_id, timeout=10) for c, call_id in calls]
            took = time.monotonic() - tool_started
            for caller in callers:
                caller.close()
        console.print(f"  3 results in {took:.2f} s (each call takes 0.5 s): "
                      f"{brief([r.value['query'] for r in results])}")
        checks.append(("three tool calls ran concurrently", all(r.ok for r in results)
                       and took < 1.4))
        steps.advance(overall)

        step("4. Saga", "Charge, reserve, ship: shipping fails, so the completed steps "
             "are compensated in reverse order.")
        services = lab.connect("services")
        services.serve("shop.billing.charge", lambda m: {"charged": 42})
        services.serve("shop.billing.refund", lambda m: {"refunded": 42})
        services.serve("shop.stock.reserve", lambda m: {"reserved": 1})
        services.serve("shop.stock.release", lambda m: {"released": 1})

        def ship(msg: Message) -> None:
            raise RuntimeError("no courier available")

        services.serve("shop.shipping.book", ship)
        saga = (Saga(lab, "order-1001")
                .step("charge", ("shop.billing.charge", {}), ("shop.billing.refund", {}))
                .step("reserve", ("shop.stock.reserve", {}), ("shop.stock.release", {}))
                .step("ship", ("shop.shipping.book", {})))
        outcome = saga.run({"order": 1001})
        console.print(f"  saga {outcome.status}: failed at '{outcome.failed_step}', "
                      f"compensated {outcome.compensations}")
        checks.append(("the saga compensated in reverse", outcome.status == "compensated"
                       and outcome.compensations == ["reserve", "charge"]))
        steps.advance(overall)

        step("5. Dead letters", "A task that is not JSON, and one that fails every time: "
             "both end in DEAD_LETTERS with the reason; the work queue is left clean.")
        office = org.dead_letters
        assert office is not None
        before = {seq for seq, _ in office.list(limit=10_000)}  # an external server may have some

        def new_letters() -> list[tuple[int, Any]]:
            return [(seq, letter) for seq, letter in office.list(limit=10_000)
                    if seq not in before]

        lab.js.publish(s.tasks("cto"), b"{this is not a task", msg_id=f"poison-{time.time()}")
        org.assign("Migrate the billing database", to="cto", details={"always_fail": True})
        wait_until(lambda: len(new_letters()) >= 2, 15)
        letters = new_letters()
        for seq, letter in letters:
            console.print(f"  ✗ DLQ #{seq} [yellow]{letter.reason}[/] after "
                          f"{letter.deliveries} deliveries: {letter.error[:70]}")
        facts["dead_letters"] = len(letters)
        checks.append(("the poison and the flaky task are dead letters",
                       sorted(letter.reason for _, letter in letters)
                       == ["max_deliveries", "poison"]))
        steps.advance(overall)

        step("6. Scale to zero", "The CTO scales to zero; tasks wait in the stream; two "
             "CTO instances start and share the backlog through one durable consumer.")
        org.scale("cto", 0)
        for n in range(6):
            org.assign(f"Review pull request #{n}", to="cto")
        wait_until(lambda: lab.js.stream_info("AGENT_TASKS").state.messages >= 6, 3)
        waiting = lab.js.stream_info("AGENT_TASKS").state.messages
        console.print(f"  {waiting} tasks waiting with no CTO running")
        ctos = org.scale("cto", 2)
        finished = completed.messages(count=6, timeout=10)
        split = {agent.instance: agent.stats["processed"] for agent in ctos}
        console.print(f"  {len(finished)} done after scaling up; split {split}")
        checks.append(("tasks waited through scale-to-zero and were all done",
                       waiting >= 6 and len(finished) == 6))
        steps.advance(overall)

        step("7. Intents that expire", "A booking intent with a 1 s TTL and one with 60 s: "
             "the stale one is gone before anyone reads it.")
        publish_intent(lab, "book", {"call": "stale"}, ttl=1)
        publish_intent(lab, "book", {"call": "fresh"}, ttl=60)
        time.sleep(2.2)
        intents = IntentQueue(lab, "book").fetch(batch=10, timeout=1)
        for msg in intents:
            msg.ack()
        console.print(f"  delivered: {[m.json()['call'] for m in intents]}")
        checks.append(("the expired intent was never delivered",
                       [m.json()["call"] for m in intents] == ["fresh"]))
        steps.advance(overall)

    console.rule("[bold]Streams and consumers")
    for report in (stream_report(lab), consumer_report(lab, "AGENT_TASKS")):
        table = report.to_table()
        # A console of the table's own width: nats-style reports read badly when wrapped.
        wide = Console(width=max(console.width, natural_width(table)), file=console.file,
                       highlight=False, force_terminal=console.is_terminal)
        wide.print(table)
    totals = org.stats()
    summary = Table(title="Summary", show_header=False)
    for key, value in [("tasks completed", totals.get("processed", 0)),
                       ("redeliveries", totals.get("redeliveries", 0)),
                       ("dead letters", facts.get("dead_letters", 0)),
                       ("meeting decisions", facts.get("decisions", 0)),
                       ("messages seen by the observer", tail.count),
                       ("total time", f"{time.monotonic() - started:.1f} s")]:
        summary.add_row(key, str(value))
    console.print(summary)
    for text, ok in checks:
        console.print(f"[green]✓[/] {text}" if ok else f"[red]✗ {text}[/]")
    org.stop()
    lab.close()
    logging.getLogger("agentlab").setLevel(quiet)
    passed = all(ok for _, ok in checks)
    console.print("[bold green]Demo passed." if passed else "[bold red]Demo failed.")
    return passed


if __name__ == "__main__":
    raise SystemExit(0 if run() else 1)
