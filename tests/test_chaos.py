"""The fault suite, short version (`make chaos` runs 10,000 tasks), and the worker process
it is built on: agents in OS processes of their own, SIGKILLed, with the nats-server
SIGKILLed under them too (DESIGN.md decision 8). What the figures mean and why "zero lost,
zero applied twice" holds is argued in agentlab/chaos/__init__.py, and how handler runs are
judged in agentlab/chaos/checks.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rich.console import Console

from agentlab import Subjects
from agentlab.chaos import ChaosConfig, ChaosReport, run
from agentlab.chaos.checks import RECORD_RACE, WorkerLogs, judge_runs
from agentlab.org import Task, TaskCompleted
from agentlab.programs.worker import WorkerProcess
from helpers import credentials_env, wait_for

S = Subjects()


@pytest.mark.timeout(150)
def test_fault_suite_short_version(capsys):
    config = ChaosConfig(tasks=1000, roles=("cto", "cfo"), workers_per_role=2, seed=7)
    report = run(config)
    with capsys.disabled():  # the figures, in `make test` output as in `make chaos`
        console = Console(width=120)
        console.print()
        console.print(report.to_table())
        console.print(report.verdict())

    assert report.lost == [] and report.applied_twice == []
    # Counted per task id from the handlers' own logs, not from the ledger: no handler
    # reached the effect of a task that the ledger already had.
    assert report.ran_after_record == []
    assert report.problems == [] and report.ok
    assert report.tasks == 1000 and report.completed + report.dead_lettered == 1000
    assert report.dead_lettered >= 5  # every 200th task fails by design
    assert report.letter_reasons["max_deliveries"] >= 5
    assert report.agent_kills >= 2
    assert len(report.restarts) == 2
    for restart in report.restarts:
        assert restart.recovery is not None and restart.recovery < 2.0, restart
    assert report.handler_runs >= report.acting_runs >= report.completed
    assert report.duration < 60, report.duration


@pytest.mark.timeout(150)
def test_fault_suite_on_a_cluster_kills_the_stream_leader(capsys):
    """The same on agentlab.cluster's three nodes: the first fault SIGKILLs the node leading
    AGENT_TASKS. Recovery there includes a leader election (printed, not held to 2 s), so
    the tasks come slowly enough (20/s) for both faults to land while they are published."""
    report = run(ChaosConfig(tasks=300, cluster=True, rate=20, seed=11))
    with capsys.disabled():
        console = Console(width=120)
        console.print()
        console.print(report.to_table())
        console.print(report.verdict())
    assert report.lost == [] and report.applied_twice == [] and report.ok, report.problems
    assert report.ran_after_record == []
    assert len(report.restarts) == 2
    assert report.restarts[0].label.endswith("the AGENT_TASKS leader")
    assert all(r.recovery is not None for r in report.restarts)


def test_the_checker_tells_a_run_after_the_record_from_crashes_and_overlaps(tmp_path):
    """The verdict on handler runs, from worker logs in the format effect_handler writes
    (one file per pid) and the ledger's store times: only a run that began after the
    ledger had its task fails the suite; the other repeats are explained and counted."""
    logs = {
        100: ["attempt chaos-000001 a1 1 100.00", "acts chaos-000001 a1",
              "applied chaos-000001 a1",
              "attempt chaos-000002 c1 1 200.00", "acts chaos-000002 c1"],  # then SIGKILLed
        200: ["attempt chaos-000001 b1 1 101.00", "acts chaos-000001 b1",
              "suppressed chaos-000001 b1",
              "attempt chaos-000003 f1 1 300.10", "acts chaos-000003 f1",
              "attempt chaos-000004 h1 2 400.15", "acts chaos-000004 h1",
              "attempt chaos-000005 j1 1 500.00", "attempt chaos-000005 j2 2 500.50"],
        300: ["attempt chaos-000002 d1 2 202.50", "acts chaos-000002 d1",
              "attempt chaos-000003 e1 1 300.00", "acts chaos-000003 e1",
              "attempt chaos-000004 g1 1 400.00", "acts chaos-000004 g1"],
    }
    for pid, lines in logs.items():
        (tmp_path / f"worker-{pid}.log").write_text("\n".join(lines) + "\n")
    recorded = {"chaos-000001": 100.10, "chaos-000002": 203.00, "chaos-000003": 300.20,
                "chaos-000004": 400.05}  # when TASK_LEDGER stored each task
    report = ChaosReport(ChaosConfig(tasks=5))
    worker_logs = WorkerLogs(tmp_path)
    judge_runs(report, worker_logs, recorded, deaths={100: 200.05})

    assert report.handler_runs == 10 and report.acting_runs == 8
    [failure] = report.ran_after_record  # b1 began 0.9 s after the ledger had the task
    assert failure.startswith("chaos-000001: run b1 (pid 200, delivery 1) began 0.90 s after")
    assert report.rerun_after_crash == 1  # d1: c1's process died before the record
    # f1 overlapped e1; h1 began 0.1 s after the record, within RECORD_RACE of its check.
    assert report.rerun_in_flight == 2 and RECORD_RACE > 0.1
    assert report.forgotten_deliveries == 2  # chaos-000001 and chaos-000003, twice as 1st
    assert worker_logs.suppressed == 1 and worker_logs.applied["chaos-000001"] == {"a1"}
    assert not report.ok


def worker(server_url: str, role: str, org: str, tmp_path, **kwargs) -> WorkerProcess:
    return WorkerProcess(server_url, role, org=org, instance=f"{role}-proc",
                         log_path=tmp_path / f"{role}.stderr", **kwargs)


def test_a_worker_process_serves_its_role_and_stops_on_sigterm(org_server, org_lab, names,
                                                                tmp_path):
    done = org_lab.subscribe(S.tasks_completed(names.org))
    proc = worker(org_server.url, names.cto, names.org, tmp_path,
                  handler="agentlab.org.roles:cto_handler", options=["--ack-wait", "5"]).start()
    try:
        task = Task(org=names.org, role=names.cto, title="Pick a database",
                    requested_by=names.ceo)
        org_lab.js.publish(S.tasks(names.cto), task, msg_id=task.id)
        event = done.next(timeout=10).decode(TaskCompleted)
        assert (event.task_id, event.instance) == (task.id, f"{names.cto}-proc")
        info = org_lab.js.consumer_info("AGENT_TASKS", names.cto).config
        assert info.ack_wait == 5 and info.max_deliver == 3
    finally:
        code = proc.stop()
    assert code == 0
    assert "Traceback" not in (tmp_path / f"{names.cto}.stderr").read_text()


def test_a_sigkilled_worker_s_task_goes_to_the_next_worker(org_server, org_lab, names,
                                                            tmp_path):
    done = org_lab.subscribe(S.tasks_completed(names.org))
    first = worker(org_server.url, names.cto, names.org, tmp_path,
                   handler="agentlab.org.roles:cto_handler",
                   options=["--ack-wait", "1"]).start()
    task = Task(org=names.org, role=names.cto, title="Slow work", requested_by=names.ceo,
                details={"seconds": 30})  # the reference role works that long
    org_lab.js.publish(S.tasks(names.cto), task, msg_id=task.id)
    wait_for(lambda: org_lab.js.consumer_info("AGENT_TASKS", names.cto).num_ack_pending,
             what="the task in hand")
    first.kill()
    assert first.proc.returncode == -9
    org_lab.js.publish(S.tasks(names.cto), Task(org=names.org, role=names.cto, title="Quick",
                                                 requested_by=names.ceo))
    second = worker(org_server.url, names.cto, names.org, tmp_path,
                    handler="agentlab.org.roles:cto_handler",
                    options=["--ack-wait", "1"]).start()
    try:
        event = done.next(timeout=10).decode(TaskCompleted)
        assert event.title == "Quick"  # the slow one is redelivered, still running
        assert event.instance == second.instance
    finally:
        second.kill()


def test_worker_errors_are_one_paragraph_and_exit_2(org_server, tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"},
           "COLUMNS": "200", **credentials_env(org_server.url)}

    def run_worker(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentlab.programs.worker", *args],
                              check=False, capture_output=True, text=True, timeout=30, env=env)

    bad_handler = run_worker("--url", org_server.url, "--role", "cto",
                             "--handler", "no_such_module:handle")
    assert bad_handler.returncode == 2
    assert "--handler 'no_such_module:handle': cannot import 'no_such_module'" in \
        " ".join(bad_handler.stderr.split())
    no_url = run_worker("--role", "cto")
    assert no_url.returncode == 2 and "AGENTLAB_NATS_URL" in no_url.stderr
    for result in (bad_handler, no_url):
        assert "Traceback" not in result.stderr
