"""The exercises check themselves: every solution passes its check, a wrong answer fails it.

A lesson's check (agentlab/course/lessonNN.py) runs in the learner's notebook against the
live server. So it is tested there: each notebook is executed in a real kernel on its own
embedded server, with its exercise cell holding a realistic wrong answer (the check must
fail, saying what is wrong and a hint that leads to the fix) and then the notebook's
solution cell as it is (the check must pass, in the state the wrong answer left behind,
as a learner who tried, failed, and read the solution would see it). The verdicts are read
from the check results' own JSON output (CHECK_MIME), not from their HTML.

The first tests are of the results themselves: their text, HTML and JSON, the placeholder,
an exception turned into a failed result, and no credentials in anything a result shows.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from agentlab.course import CHECK_MIME, CheckResult, Exercise, not_given, scrub
from helpers import this_venv_kernel

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "notebooks"
CELL_TIMEOUT = 120.0  # seconds per cell: a loaded machine, a check that waits for a task

# ---------------------------------------------------------------------------------------------
# the results


EXAMPLE = Exercise("99", "An example")


@EXAMPLE.check
def _example_check(answer):
    if not_given(answer):
        return EXAMPLE.not_done("no answer yet", "write one")
    if answer == "boom":
        raise ConnectionError("nats://ceo:s3cret-pw@127.0.0.1:4222 refused")
    if answer == "wrong":
        return EXAMPLE.failed("received 3 of the 4 messages: `genbrain.agents.cto.inbox` is "
                              "not matched by `genbrain.agents.*.tasks`",
                              "use `genbrain.agents.>`", "missing: <cto> & co")
    return EXAMPLE.passed("all 4 messages received")


@pytest.mark.unit
def test_a_result_is_true_only_when_passed_and_shows_itself_three_ways():
    passed, failed, waiting = _example_check("right"), _example_check("wrong"), _example_check(...)
    assert [bool(passed), bool(failed), bool(waiting)] == [True, False, False]
    assert [r.status for r in (passed, failed, waiting)] == ["passed", "failed", "not done"]
    assert not_given(None) and not not_given(0) and not not_given([])

    bundle = failed._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", CHECK_MIME}
    assert bundle[CHECK_MIME] == {
        "lesson": "99", "exercise": "An example", "status": "failed", "passed": False,
        "message": failed.message, "hint": "use `genbrain.agents.>`",
        "details": ["missing: <cto> & co"]}
    text = bundle["text/plain"]
    assert text.startswith("✘ Not yet right: 99 · An example")
    assert "Hint: use `genbrain.agents.>`" in text and "- missing: <cto> & co" in text
    html = bundle["text/html"]
    assert "data-status='failed'" in html and "#dc2626" in html  # red
    assert "<code>genbrain.agents.cto.inbox</code>" in html  # backticks become code
    assert "&lt;cto&gt; &amp; co" in html  # escaped, never raw
    assert "#16a34a" in passed._repr_html_() and "Hint" not in passed._repr_html_()  # green
    assert "Not done yet" in waiting.text()
    with pytest.raises(ValueError, match="status"):
        CheckResult("99", "x", "maybe", "?")  # type: ignore[arg-type]


@pytest.mark.unit
def test_an_error_in_the_answer_is_a_failed_result_that_names_it_and_shows_no_secret():
    result = _example_check("boom")
    assert result.status == "failed"
    assert "ConnectionError" in result.message and "127.0.0.1:4222" in result.message
    everything = str(result._repr_mimebundle_())
    assert "s3cret-pw" not in everything and "ceo:" not in everything
    assert scrub("see tls://u:p@h:1 and nats://h:2") == "see tls://h:1 and nats://h:2"


@pytest.mark.unit
def test_an_async_check_is_awaited_and_never_raises_either():
    exercise = Exercise("99", "Async")

    @exercise.check
    async def check(answer):
        await asyncio.sleep(0)
        if answer is None:
            return exercise.not_done("nothing yet", "write it")
        raise KeyError(answer)

    assert asyncio.iscoroutinefunction(check)
    assert asyncio.run(check(None)).status == "not done"
    result = asyncio.run(check("cfo"))
    assert result.status == "failed" and "KeyError" in result.message


# ---------------------------------------------------------------------------------------------
# the lessons, in their notebooks


@dataclass(frozen=True)
class WrongAnswer:
    code: str              # the exercise cell's new source: the wrong answer, then the check
    message: tuple[str, ...]  # what the failed result's message must say
    hint: tuple[str, ...]     # ... and its hint


WRONG = {
    # Stopped reading after two completions: the CFO's is missing.
    "00-start-here": WrongAnswer(
        '''
my_goal = org.assign("Open an office in Porto")
mine = []
while len(mine) < 2:
    event = done.next(timeout=10).json()
    if event["correlation_id"] == my_goal.id:
        mine.append(event)
lesson00.check(org, my_goal, mine)
''', message=("2 of the 3 completions", "missing"), hint=("while len(mine) < 3",)),
    # One token too few: `*` after tasks would do, `tasks.created` is not a pattern for both.
    "01-subjects-and-wildcards": WrongAnswer(
        '''
observer_pattern = "genbrain.org.acme.tasks.*"  # acme only
lesson01.check(lab, observer_pattern)
''', message=("received 2 of the 4 messages",
              "`genbrain.org.globex.tasks.created` is not matched by `genbrain.org.acme.tasks.*`"),
        hint=("`*` where the org id goes",)),
    # Two translators, but no queue group: each gets every request.
    "02-queue-groups-and-request-reply": WrongAnswer(
        '''
def make_translator(name):
    def translate(msg):
        return {"translation": msg.json()["text"][::-1], "worker": name}
    return translate
translators = [lab.connect(name).serve("tasks.translate.assign", make_translator(name))
               for name in ("translator-a", "translator-b")]
lesson02.check(lab, translators)
''', message=("received 16 copies of 8 requests",), hint=('queue="translators"',)),
    # A handler that never fails: done on the first delivery.
    "03-durable-tasks-ceo-to-cto": WrongAnswer(
        '''
def flaky_handler(task, ctx):
    return {"decision": "fine at once", "attempt": ctx.deliveries}
lesson03.check(lab, flaky_handler)
''', message=("succeeded on the first delivery",), hint=("ctx.deliveries == 1",)),
    # One node down (a follower) is no loss of majority: receipts go on.
    "08-cluster-and-failover": WrongAnswer(
        '''
publisher = AckedPublisher(cluster.connect("ceo-one-down"), subject, payload=task).start()
publisher.wait_for_acks(20)
follower = next(n for n in cluster.names if n != cluster.stream_leader("AGENT_TASKS"))
cluster.stop_node(follower)
time.sleep(1)
count = len(publisher.acked)
time.sleep(3)
acked_while_down = len(publisher.acked) - count
cluster.start_node(follower)
publisher.stop()
cluster.wait_for_meta_leader()
lesson08.check(cluster, publisher, acked_while_down)
''', message=("while your nodes were down", "majority"), hint=("two of the three",)),

    # Followed without replay=True: only the decisions said after the secretary joined.
    "04-meetings": WrongAnswer(
        '''
minutes = []


def take_minutes(entry):
    if entry.kind == "decision":
        minutes.append(entry)


secretary = Meeting.join(lab.connect("secretary"), meeting.id)
feed = secretary.follow(take_minutes)  # no replay: the meeting so far is not read
meeting.decide("ceo", "Press release on 14 May", owner="cmo")
last = cfo_seat.decide("cfo", "Keep 5k in reserve for launch week", amount=5_000)
wait_until(lambda: any(entry.id == last.id for entry in minutes))
feed.stop()
lesson04.check(meeting, minutes)
''',
        message=("your minutes hold 2 of the 6 decisions", "MEETINGS"),
        hint=("replay=True",)),
    # One worker: the calls go out without waiting, but run one after another.
    "05-async-tool-execution": WrongAnswer(
        '''
FORECASTS = {"Paris": "sunny", "Oslo": "rain", "Lagos": "storms", "Lima": "cloudy"}


def weather(city):
    time.sleep(0.5)
    if city not in FORECASTS:
        raise ValueError(f"no forecast for {city!r}")
    return FORECASTS[city]


weather_pool = ToolWorkerPool(lab.connect("weather-host"), "weather", weather, workers=1).start()
lesson05.check(weather_pool, FORECASTS)
''',
        message=("one after another", "1 worker(s)"),
        hint=("workers=3",)),
    # Off by one: max_deliver=3's last attempt comes at +1.5 s, inside the outage.
    "06-retries-and-dead-letters": WrongAnswer(
        '''
outage_ends = 0.0


def treasurer(task, ctx):
    if time.monotonic() < outage_ends:
        raise ConnectionError(f"the bank is down (attempt {ctx.deliveries})")
    return {"paid": task.details["amount"], "attempt": ctx.deliveries}


treasury = Agent(lab.connect("treasurer-1"), "treasurer", "acme", treasurer,
                 max_deliver=3, ack_wait=5, instance="treasurer-1").start()
outage_ends = time.monotonic() + 2.5
payment = cfo.delegate("treasurer", "Pay the Tokyo supplier", {"amount": 603.0})
verdict = lesson06.check(treasury, payment)
treasury.stop()
verdict
''',
        message=("is a dead letter in DEAD_LETTERS", "max_deliveries", "+1.5 s"),
        hint=("max_deliver=4", "+3.5 s")),
    # Part 2 with Acme's connection: an _INBOX.> in Acme's own account hears Acme's replies.
    "07-tenant-isolation": WrongAnswer(
        '''
users_globex = connect(users, users_server, "globex", "globex-eavesdropper")
eavesdropper = acme.subscribe("_INBOX.>")
lesson07.check(users_globex, eavesdropper, acme)
''',
        message=("received Acme's answer", "acme (accounts model)", "Acme's account"),
        hint=('globex.subscribe("_INBOX.>")',)),
    # The handler's own duration_ms: it leaves out the time a task waited in the queue.
    "09-observability-and-performance": WrongAnswer(
        '''
records = replay(lab, "acme", since=notebook_started)
created = {r.event.id for r in records if r.kind == "task.created"}
took = {}
for record in records:
    if record.kind == "task.completed" and record.event.task_id in created:
        took.setdefault(record.event.role, []).append(
            (record.event.duration_ms / 1000, record.event.title))
lesson09.check(lab, took, since=notebook_started)
''',
        message=("for `cto` your longest task took", "from created to completed it took"),
        hint=("waited in AGENT_TASKS", "duration_ms")),
    # The model's answer returned unchecked: the stand-in's amount as text gets through.
    "10-bring-your-own-agent": WrongAnswer(
        '''
def cfo_prompt(task):
    return (f"You are the CFO of {task.org}. Task: {task.title}\\n"
            f"Details: {json.dumps(task.details)}\\n"
            'Answer with one JSON object: {"approved": true or false, "amount": 0, "reason": ""}')


def cfo_by_model(task, ctx):
    answer = parse_json(bean_counter(cfo_prompt(task)), "approved", "amount")
    return {"approved": answer["approved"], "amount": answer["amount"]}


put_in_role("cfo", patient(cfo_by_model))
lesson10.check(org, cfo_by_model)
''',
        message=("on delivery 1", "not a number", "about"),
        hint=("UnusableAnswer",)),
    # The service's id taken for the instance's name: the roles are right, the names are not.
    "11-other-agents-other-languages": WrongAnswer(
        '''
async def roles_on_duty(org_name):
    on_duty = {}
    for answer in await ask_everyone("$SRV.PING"):
        meta = answer.get("metadata") or {}
        if meta.get("agentlab.kind") == "agent" and meta.get("agentlab.org") == org_name:
            on_duty.setdefault(meta["agentlab.role"], []).append(answer["id"])
    return {role: sorted(ids) for role, ids in on_duty.items()}


await lesson11.check(roles_on_duty, org)
''',
        message=("now, for `", "you found"),
        hint=("agentlab.instance",)),
    # complete_task instead of fail_task: the budget is approved into the ledger.
    "12-an-llm-joins-the-organisation": WrongAnswer(
        '''
reason = "two billion euros is far above the quarter's budget"
async with hub_session() as hub:
    while True:
        held = await call(hub, "next_task", role="cfo", wait_s=15)
        if held["id"] == budget.id:
            break
        await call(hub, "complete_task", id=held["id"], result="done in an earlier session")
    await call(hub, "complete_task", id=held["id"], result=reason)
verdict = lesson12.check(org, budget, reason)
# as the hint says: the exercise's first cell again, for a new budget task
budget = org.assign("Budget: a rocket to the Moon", to="cfo", requested_by="ceo",
                    details={"amount": 2_000_000_000})
verdict
''',
        message=("was completed", "TASK_LEDGER"),
        hint=("fail_task", "complete_task")),
    # The autoscaler left at its defaults but one: it wakes on the first queued task
    # (activation_lag=0) instead of the exercise's five.
    "13-a-hundred-agents": WrongAnswer('''
audit = org.autoscale("audit", max_replicas=3, cooldown=2, interval=0.25)
backlog = [org.assign(f"Audit {n}", to="audit") for n in range(25)]
lesson13.check(audit, backlog)''', message=("setting(s) differ",), hint=("activation_lag=5",)),
    # Acked straight away, never recorded: the tasks leave the queue and their answers are lost.
    "14-your-browser-as-an-agent": WrongAnswer(
        '''
answer = {"decision": "the official NATS JavaScript client, over WebSocket"}
for msg in await queue.fetch(10, timeout=5):
    await msg.ack()
verdict = await lesson14.check(org, task, answer, instance="learner")
# as the hint says: the exercise's first cell again, for a new task
task = org.assign("Choose a WebSocket client for the dashboard", to="cto", requested_by="ceo")
verdict
''',
        message=("was acked but the ledger has no record",),
        hint=("$KV.TASK_LEDGER.acme.", "before the ack")),
}

NEEDS = {"11-other-agents-other-languages": "synadia_ai", "12-an-llm-joins-the-organisation": "mcp"}


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    return this_venv_kernel(tmp_path, monkeypatch, "agentlab-course-checks-python")


def _exercise_cell(nb: nbformat.NotebookNode) -> int:
    start = next(i for i, c in enumerate(nb.cells)
                 if c.cell_type == "markdown" and "## Exercise" in c.source)
    return next(i for i, c in enumerate(nb.cells) if i > start and c.cell_type == "code"
                and "Your turn" in c.source)


def _solution_cell(nb: nbformat.NotebookNode) -> int:
    return next(i for i, c in enumerate(nb.cells)
                if c.cell_type == "code" and "%run -i solutions/" in c.source)


def _verdicts(cell: nbformat.NotebookNode) -> list[dict]:
    return [o["data"][CHECK_MIME] for o in cell.get("outputs", [])
            if o.get("output_type") in ("execute_result", "display_data")
            and CHECK_MIME in o.get("data", {})]


def _errors(nb: nbformat.NotebookNode) -> list[tuple[str, str, str]]:
    return [(c.source[:60], o.get("ename"), o.get("evalue")) for c in nb.cells
            if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(WRONG))
def test_the_exercise_and_its_solution_end_with_the_lessons_check(name):
    nb = nbformat.read(COURSE / f"{name}.ipynb", as_version=4)
    call = f"lesson{name[:2]}.check("
    exercise, solution = nb.cells[_exercise_cell(nb)], nb.cells[_solution_cell(nb)]
    for what, cell in (("exercise", exercise), ("solution", solution)):
        last = cell.source.strip().splitlines()[-1]
        assert call in last, f"{name}: the {what} cell should end with {call}...), not {last!r}"
    assert "= ..." in exercise.source, f"{name}: the exercise cell has no placeholder to replace"
    assert importlib.util.find_spec(f"agentlab.course.lesson{name[:2]}"), name


@pytest.mark.notebooks
@pytest.mark.parametrize("name", sorted(WRONG))
def test_a_wrong_answer_fails_with_a_hint_then_the_solution_passes(name, kernel_name):
    needed = NEEDS.get(name)
    if needed and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{name} needs the {needed!r} module (an optional extra of agentlab)")
    nb = nbformat.read(COURSE / f"{name}.ipynb", as_version=4)
    exercise, solution = _exercise_cell(nb), _solution_cell(nb)
    nb.cells[exercise].source = WRONG[name].code.strip()
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}  # its own server
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(COURSE)}})
    client.execute(env=env)
    assert not _errors(nb), f"{name}: error outputs {_errors(nb)}"

    [wrong] = _verdicts(nb.cells[exercise])
    assert wrong["status"] == "failed", f"{name}: the wrong answer was judged {wrong}"
    for words in WRONG[name].message:
        assert words in wrong["message"], f"{name}: {words!r} not in {wrong['message']!r}"
    for words in WRONG[name].hint:
        assert words in wrong["hint"], f"{name}: {words!r} not in the hint {wrong['hint']!r}"

    verdicts = _verdicts(nb.cells[solution])
    assert verdicts and all(v["status"] == "passed" for v in verdicts), \
        f"{name}: the solution's check said {verdicts}"


# ---------------------------------------------------------------------------------------------
# lesson 14's steps, each missing in turn (the notebook run above covers the ack without a
# record): the check reads only the server, so a TaskDesk over TCP stands in for the page


def test_lesson_14_names_the_step_that_is_missing(org_lab, names):
    from agentlab.course import lesson14
    from agentlab.org import (
        TASK_STREAM,
        Organisation,
        TaskCompleted,
        TaskDesk,
        TaskLedger,
        task_consumer_spec,
    )

    org = Organisation(org_lab, names.org, roles={})
    ledger = TaskLedger.declare(org_lab)
    answer = {"decision": "prototype first"}

    def verdict(task):
        return asyncio.run(lesson14.check(org, task, answer, instance="learner"))

    def new_task(title):
        return org.assign(title, to=names.cto, requested_by="ceo")

    with TaskDesk(org_lab, org=names.org, worker="learner") as learner, \
            TaskDesk(org_lab, org=names.org, worker="browser") as page:
        waiting = new_task("Waiting")
        result = verdict(waiting)
        assert result.status == "not done" and "no consumer" in result.message, result
        org_lab.js.declare_consumer(TASK_STREAM, task_consumer_spec(names.cto, org.subjects))
        result = verdict(waiting)
        assert result.status == "not done" and "1 task(s) not taken" in result.message
        assert asyncio.run(lesson14.check(org, waiting, ...)).status == "not done"

        held = learner.take(names.cto, wait=10)
        assert held is not None and held.task.id == waiting.id
        ledger.record(TaskCompleted(task_id=waiting.id, org=names.org, role=names.cto,
                                    instance="learner", title=waiting.title, result=answer))
        result = verdict(waiting)  # recorded, never acked
        assert result.status == "failed" and "taken and not acked" in result.message, result
        assert "await msg.ack()" in result.hint
        held.message.ack()
        learner.held.clear()

        by_page = new_task("Done in the widget")
        assert page.take(names.cto, wait=10) is not None
        page.complete(by_page.id, answer)
        result = verdict(by_page)
        assert result.status == "failed" and "instance 'browser'" in result.message, result
        assert '"instance": "learner"' in result.hint

        wrong = new_task("Answered with something else")
        assert learner.take(names.cto, wait=10) is not None
        learner.complete(wrong.id, {"decision": "later"})
        result = verdict(wrong)
        assert result.status == "failed" and "not your answer" in result.message, result

        twice = new_task("Announced twice")
        assert learner.take(names.cto, wait=10) is not None
        record, _ = learner.complete(twice.id, answer)
        org_lab.publish(org.subjects.tasks_completed(names.org), record)  # by hand, again
        result = verdict(twice)
        assert result.status == "failed" and "2 times, not once" in result.message, result
        assert "republish" in result.hint

        right = new_task("Done right")
        assert learner.take(names.cto, wait=10) is not None
        learner.complete(right.id, answer)
        result = verdict(right)
        assert result.passed, result
