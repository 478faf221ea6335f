"""``agentlab status``, run as a real subprocess against this module's own server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from agentlab import ConsumerSpec, Subjects
from agentlab.reports.report import CONSUMER_REPORT_COLUMNS, STREAM_REPORT_COLUMNS
from helpers import credentials_env

CLI = [sys.executable, "-m", "agentlab.programs.cli"]


def run(*args: str, url: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    if url is not None:
        env["AGENTLAB_NATS_URL"] = url
    # The login of the server named (by url= or --url): this module's server is closed.
    for named in [url, *(a for a in args if a.startswith("nats://"))]:
        env.update(credentials_env(named) if named else {})
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30, env=env)


def flat(text: str) -> str:
    return " ".join(text.split())


def test_status_prints_the_stream_and_consumer_reports(org_lab, unique):
    role = f"{unique}-status"
    s = Subjects()
    org_lab.js.declare_consumer("AGENT_TASKS", ConsumerSpec(role, filter_subject=s.tasks(role)))
    org_lab.js.publish(s.tasks(role), {"title": "waiting"})
    result = run("status", "--url", org_lab.url)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Stream Report" in out
    for header in STREAM_REPORT_COLUMNS + CONSUMER_REPORT_COLUMNS + ("Oldest Unprocessed",):
        assert header in out, f"header {header!r} missing from:\n{out}"
    for stream in ("AGENT_TASKS", "AGENT_EVENTS", "MEETINGS", "TOOL_REQUESTS",
                   "TOOL_RESULTS", "DEAD_LETTERS"):
        assert stream in out
    assert "Consumer report for AGENT_TASKS with" in out
    line = next(ln for ln in out.splitlines() if role in ln)
    assert "Pull" in line and "Explicit" in line and "1 / " in line
    assert "Traceback" not in result.stderr


def test_status_reads_the_url_from_the_environment(org_server):
    result = run("status", url=org_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Stream Report" in result.stdout


def test_status_without_a_url_says_how_to_get_one():
    result = run("status")
    assert result.returncode == 2
    message = flat(result.stderr)
    assert "agentlab server" in message and "AGENTLAB_NATS_URL" in message
    assert "--url" in message
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_status_with_nobody_listening_fails_cleanly():
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run("status", "--url", f"nats://127.0.0.1:{port}")
    assert result.returncode == 2
    assert "agentlab status failed" in flat(result.stderr)
    assert "Traceback" not in result.stderr
