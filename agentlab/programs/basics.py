"""The foundation demo: the CEO agent delegates work to the CTO agent over NATS and JetStream.

Run it with ``agentlab demo`` (or ``python -m agentlab.programs.basics``). Read it top to
bottom: each step uses only agentlab's public API, so any line of it can be pasted into a
notebook cell.
With ``$AGENTLAB_NATS_URL`` set it runs against that server instead and leaves it running.
"""

from __future__ import annotations

import threading
import time
import uuid

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

import agentlab
from agentlab import AgentMessage, ConsumerSpec, StreamSpec
from agentlab.core.specs import DAY, MiB

ORG = "acme"
STREAM = "AGENT_TASKS"
TITLES = ["Pick a vector database", "Set up CI", "Draft API rate limits"]
CEO, CTO, SUBJECT = "bold blue", "bold magenta", "cyan"  # colours used for agents and subjects


def run(console: Console | None = None, quiet: bool = False) -> bool:
    """Run the demo; True if its own checks pass. ``quiet`` prints only the summary."""
    console = console or Console(highlight=False)     # colours only where they mean something
    out = Console(quiet=True) if quiet else console   # the step-by-step story
    flow: list[tuple[float, str, str, str]] = []     # (seconds, subject, sender, type)
    t0 = time.perf_counter()

    # 1. A NATS server with JetStream, and a connection to it ------------------------------
    step(out, "1. Start the lab", "agentlab.start(): a real nats-server with JetStream, "
         "and a connection to it.")
    had_lab = agentlab.current_lab() is not None     # a notebook's lab is not ours to close
    lab = agentlab.start()
    took = time.perf_counter() - t0
    if lab.server is not None:                       # an embedded server (lab.embedded)
        out.print(f"Embedded nats-server [bold]pid {lab.server.pid}[/] ready at "
                  f"[bold green]{lab.url}[/] in {took * 1000:.0f} ms")
    else:
        out.print(f"Using the external server [bold green]{lab.url}[/] "
                  f"(connected in {took * 1000:.0f} ms); it keeps running after the demo.")
    clients: list[agentlab.Client] = []
    try:
        return _steps(lab, clients, out, console, flow, t0)
    finally:
        for client in clients:
            client.close()
        if not had_lab:
            lab.close()


def _steps(lab: agentlab.Lab, clients: list, out: Console, console: Console,
           flow: list, t0: float) -> bool:
    # 2. Subjects: where messages go ----------------------------------------------------
    step(out, "2. Subjects", "Messages go to subjects; agentlab.Subjects() builds them "
         "from one tree.")
    s = agentlab.Subjects()                           # root "genbrain"
    tree = s.tree().splitlines()
    out.print("\n".join(tree[:tree.index("├── meetings")]), style="dim", highlight=False)
    out.print("[dim]... and meetings, tools, events, dlq: print(agentlab.Subjects.tree())[/]")

    # 3. One connection per agent, plus an observer that sees everything -------------------
    step(out, "3. Connections", "One named connection per agent, plus an observer "
         f"subscribed to '{s.everything()}'.")
    ceo, cto, observer = lab.connect("ceo"), lab.connect("cto"), lab.connect("observer")
    clients += [ceo, cto, observer]

    def record(msg: agentlab.Message) -> None:
        try:
            m = msg.agent_message()
            flow.append((time.perf_counter() - t0, msg.subject, m.sender, m.type))
        except agentlab.MessageDecodeError:
            flow.append((time.perf_counter() - t0, msg.subject, "?", "(not an AgentMessage)"))

    watch = observer.subscribe(s.everything(), record)
    out.print(f"[{CEO}]ceo[/], [{CTO}]cto[/] and observer connected to {lab.url}")

    # 4. Request/reply: a question that needs an answer now ----------------------------
    step(out, "4. Request / reply", "The CEO asks, the CTO answers at once; core NATS "
         "stores nothing.")

    def status(msg: agentlab.Message) -> AgentMessage:  # runs in the CTO, once per request
        ask = msg.agent_message()
        return ask.follow_up(sender="cto", type="status.reply",
                             payload={"state": "ready", "capacity": 5})

    cto.serve(s.inbox("cto"), status)
    ask = AgentMessage(sender="ceo", type="status.request", payload={"question": "ready?"})
    started = time.perf_counter()
    answer = ceo.request(s.inbox("cto"), ask, timeout=2).agent_message()
    rtt = time.perf_counter() - started
    out.print(f"[{CEO}]ceo[/] → [{SUBJECT}]{s.inbox('cto')}[/]: {ask.type} {ask.payload}")
    out.print(f"[{CTO}]cto[/] → ceo: {answer.type} {answer.payload}  "
              f"[green](round trip {rtt * 1000:.1f} ms)[/]")

    # 5. Durable delegation over JetStream (publish, fetch, ack) -------------------------
    step(out, "5. Delegate tasks over JetStream", "A work-queue stream keeps each task "
         "until the CTO acks it: none is lost.")
    ceo.js.declare_stream(StreamSpec(                 # idempotent: safe to run again
        STREAM, [s.tasks("*")], retention="workqueue", storage="file", max_age=7 * DAY,
        duplicate_window=60, max_msg_size=1 * MiB, description="tasks for each agent role"))
    cto.js.declare_consumer(STREAM, ConsumerSpec(     # the CTO's remembered position
        "cto", filter_subject=s.tasks("cto"), ack_wait=5, max_deliver=3, max_ack_pending=5))
    out.print(f"stream   [bold]{STREAM}[/] on [{SUBJECT}]{s.tasks('*')}[/] (work queue)\n"
              f"consumer [bold]cto[/] on [{SUBJECT}]{s.tasks('cto')}[/] (ack within 5 s, "
              "3 tries at most)")

    run_id = uuid.uuid4().hex[:6]                     # fresh task ids: dedup spans 60 s
    tasks = [AgentMessage(sender="ceo", type="task.assigned",
                          payload={"task_id": f"task-{run_id}-{i}", "title": title})
             for i, title in enumerate(TITLES, 1)]
    ids = {t.payload["task_id"] for t in tasks}
    progress_notes: list[AgentMessage] = []
    inbox = ceo.subscribe(s.inbox("ceo"), lambda m: progress_notes.append(m.agent_message()))
    completions = ceo.subscribe(s.tasks_completed(ORG))  # no handler: we read it below

    sent = Table("task (msg_id)", "title", "stream seq", "result", title="CEO publishes")
    sent.columns[2].justify = "right"
    duplicates = 0
    for task in tasks + tasks[:1]:                    # the first one twice, as a retry would
        ack = ceo.js.publish(s.tasks("cto"), task, msg_id=task.payload["task_id"])
        duplicates += ack.duplicate
        result = "[yellow]duplicate, dropped[/]" if ack.duplicate else "[green]stored[/]"
        sent.add_row(task.payload["task_id"], task.payload["title"], str(ack.seq), result)
    out.print(sent)

    stop, worker_errors = threading.Event(), list[BaseException]()
    worker = threading.Thread(target=cto_agent, args=(cto, s, stop, worker_errors),
                              name="cto-agent", daemon=True)
    worker.start()                                    # the CTO works in parallel with us
    done: set[str] = set()
    bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"),
                   BarColumn(complete_style="green", finished_style="bold green"),
                   MofNCompleteColumn(), console=out)
    with bar:
        job = bar.add_task("CEO waiting for completions", total=len(tasks))
        deadline = time.monotonic() + 10
        while len(done) < len(tasks) and time.monotonic() < deadline:
            try:
                event = completions.next(timeout=deadline - time.monotonic()).agent_message()
            except agentlab.NoMessage:
                break
            if event.payload.get("task_id") in ids - done:
                done.add(event.payload["task_id"])
                bar.advance(job)
                bar.console.print(f"  [green]✓[/] {event.payload['task_id']} completed by "
                                  f"[{CTO}]{event.sender}[/] (attempt {event.payload['attempt']})")
    stop.set()
    worker.join(timeout=5)
    if worker_errors:
        raise worker_errors[0]

    # 6. What happened: the flow, a summary, and the demo's own checks --------------------
    left = wait_for_empty_queue(ceo)
    settle([ceo, cto, observer], [inbox, watch])     # handlers catch up before we count
    notes = sum(n.payload.get("task_id") in ids for n in progress_notes)
    try:
        cto.js.delete_consumer(STREAM, "cto")         # ours; the stream may be shared
    except agentlab.AgentlabError:
        pass

    step(out, "6. Message flow", "All the observer saw, the resent task too: the stream, "
         "not NATS, dropped it.")
    table = Table("time", "from", "type", "subject", title=f"last {min(20, len(flow))} of "
                  f"{len(flow)} messages")
    for seconds, subject, sender, kind in flow[-20:]:
        colour = CEO if sender == "ceo" else CTO if sender == "cto" else "white"
        table.add_row(f"+{seconds:.3f}s", f"[{colour}]{sender}[/]", kind,
                      f"[{SUBJECT}]{subject}[/]")
    out.print(table)

    console.print()
    summary = Table("what", "value", title="Summary", show_header=False)
    summary.add_row("server", f"{lab.url} ({'embedded' if lab.embedded else 'external'})")
    summary.add_row("request round trip", f"{rtt * 1000:.1f} ms")
    summary.add_row("tasks sent", f"{len(tasks)} (+1 resend of the same msg_id)")
    summary.add_row("duplicates suppressed", str(duplicates))
    summary.add_row("tasks completed", f"{len(done)} of {len(tasks)}")
    summary.add_row("progress messages to the CEO", str(notes))
    summary.add_row("left in the work queue", str(left))
    summary.add_row("total time", f"{time.perf_counter() - t0:.2f} s")
    console.print(summary)

    checks = [(len(done) == len(tasks), f"{len(done)} of {len(tasks)} tasks completed"),
              (duplicates == 1, f"{duplicates} duplicate suppressed by the stream"),
              (notes == len(tasks), f"{notes} progress messages reached the CEO's inbox"),
              (left == 0, f"work queue empty ({left} messages left in {STREAM})")]
    for ok, text in checks:
        console.print(f"[green]✓[/] {text}" if ok else f"[bold red]✗ {text}[/]")
    passed = all(ok for ok, _ in checks)
    console.print("[bold green]Demo passed.[/]" if passed else "[bold red]Demo failed.[/]")
    return passed


def cto_agent(cto: agentlab.Client, s: agentlab.Subjects, stop: threading.Event,
              errors: list[BaseException]) -> None:
    """The CTO's work loop: fetch tasks, report progress, ack, announce completion."""
    try:
        consumer = cto.js.pull(STREAM, "cto")
        while not stop.is_set():
            for msg in consumer.fetch(batch=5, timeout=1):
                task = msg.agent_message()
                task_id = task.payload.get("task_id")
                cto.publish(s.inbox("ceo"), task.follow_up(
                    "cto", "task.progress", {"task_id": task_id, "status": "working"}))
                time.sleep(0.2)                       # the actual work would happen here
                msg.ack()                             # done: the work queue forgets it
                cto.publish(s.tasks_completed(ORG), task.follow_up(
                    "cto", "task.completed",
                    {"task_id": task_id, "attempt": msg.info.num_delivered}))
    except Exception as error:                        # handed to the main thread to raise
        errors.append(error)


def wait_for_empty_queue(client: agentlab.Client, timeout: float = 2.0) -> int:
    """Messages left in the work queue; acks are applied asynchronously, so poll briefly."""
    client.flush()
    deadline = time.monotonic() + timeout
    while (left := client.js.stream_info(STREAM).state.messages) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def settle(clients: list, subscriptions: list, timeout: float = 1.0) -> None:
    """Wait until the server has everything sent and each handler has caught up."""
    for client in clients:
        client.flush()
    deadline = time.monotonic() + timeout
    while (any(sub.handled + sub.errors < sub.received for sub in subscriptions)
           and time.monotonic() < deadline):
        time.sleep(0.01)


def step(console: Console, title: str, why: str) -> None:
    console.print()
    console.rule(f"[bold]{title}", align="left", style="cyan")
    console.print(why, style="italic")


if __name__ == "__main__":
    raise SystemExit(0 if run() else 1)
