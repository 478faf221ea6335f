"""The `agentlab` command, run as a real subprocess: demo, server, --version, errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import agentlab
from agentlab.programs.cli import main

SCRIPT = Path(sysconfig.get_path("scripts")) / "agentlab"
CLI = [sys.executable, "-m", "agentlab.programs.cli"]


def env(**extra: str) -> dict[str, str]:
    """This environment without AGENTLAB_NATS_URL, wide enough that rich does not wrap."""
    out = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    out.update(COLUMNS="120", PYTHONUNBUFFERED="1", **extra)
    return out


def run(*args: str, timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env(**extra))


def flat(text: str) -> str:
    return " ".join(text.split())


def nats_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-x", "nats-server"], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()}


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return not re.search(r"^State:\s+[ZX]", status, re.M)


def wait_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses pgrep and /proc")
def test_demo_passes_and_leaves_no_server_behind():
    before = nats_pids()
    result = run("demo", "--basics")
    out = flat(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"ready at nats://127\.0\.0\.1:\d+", out)
    assert "3 of 3 tasks completed" in out
    assert "1 duplicate suppressed by the stream" in out
    assert "duplicate, dropped" in out
    assert "work queue empty" in out
    assert "Demo passed." in out
    pid = int(re.search(r"Embedded nats-server pid (\d+)", out).group(1))
    assert pid not in before
    assert wait_gone(pid), f"the demo's nats-server (pid {pid}) outlived the demo"
    assert pid not in nats_pids()


def test_demo_quiet_prints_only_the_summary():
    result = run("demo", "--basics", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Start the lab" not in result.stdout
    assert "3 of 3 tasks completed" in result.stdout
    assert "Demo passed." in result.stdout


def test_demo_with_unreachable_server_exits_2_without_traceback():
    result = run("demo", AGENTLAB_NATS_URL="nats://127.0.0.1:1", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    err = flat(result.stderr)
    assert "Could not connect to a NATS server at nats://127.0.0.1:1" in err
    assert "agentlab server" in err  # the fix is part of the message
    assert "Traceback" not in result.stdout + result.stderr


def test_version():
    command = [str(SCRIPT)] if SCRIPT.exists() else CLI
    result = subprocess.run([*command, "--version"], capture_output=True, text=True,
                            timeout=30, env=env())
    assert result.returncode == 0
    assert result.stdout.strip() == f"agentlab {agentlab.__version__}"


def test_console_script_is_installed():
    assert SCRIPT.exists(), f"{SCRIPT} missing: run `pip install -e .` in this environment"


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_exit_codes_of_demo_outcomes(monkeypatch, capsys):
    import agentlab.programs.basics

    monkeypatch.setattr(agentlab.programs.basics, "run", lambda **kw: False)
    assert main(["demo", "--basics"]) == 1

    def unreachable(**kw):
        raise agentlab.ServerUnreachable("nats://example:4222", "[refused]")

    monkeypatch.setattr(agentlab.programs.basics, "run", unreachable)
    assert main(["demo", "--basics"]) == 2
    err = flat(capsys.readouterr().err)
    assert "agentlab demo failed: Could not connect to a NATS server at nats://example:4222" in err
    assert "([refused])" in err  # rich markup in a message is printed, not interpreted


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_server_serves_the_demo_and_stops_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([*CLI, "server", "--store-dir", str(tmp_path), "--max-memory",
                             "64MB"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env())
    server_pid = None
    try:
        url = credentials = None
        for line in proc.stdout:  # serve_forever prints the URL once the server is ready
            if match := re.search(r"NATS URL:\s+(nats://\S+)", line):
                url = match.group(1)
            if match := re.search(r"export AGENTLAB_NATS_CREDENTIALS=(\S+)", line):
                credentials = match.group(1)  # as another terminal would: the file, 0600
                break
        assert url and credentials, proc.stderr.read()
        assert Path(credentials) == tmp_path / "credentials.json"
        assert Path(credentials).stat().st_mode & 0o777 == 0o600
        server_pid = int(next(tmp_path.glob("*.ports")).name.rsplit("_", 1)[1].split(".")[0])

        with pytest.raises(agentlab.AuthenticationFailed, match="anonymous"):
            agentlab.Client.open(url, name="no-login")
        context = json.loads(Path(credentials).read_text())  # a nats CLI context
        client = agentlab.Client.open(url, name="test-cli", user=context["user"],
                                      password=context["password"])
        try:
            sub = client.subscribe("cli.ping")
            client.publish("cli.ping", "hello")
            assert sub.next(timeout=2).text == "hello"
        finally:
            client.close()

        # The demo runs unchanged against an external server, twice (idempotent declares,
        # fresh msg_ids), and leaves that server running.
        for _ in range(2):
            demo = run("demo", "--basics", AGENTLAB_NATS_URL=url,
                       AGENTLAB_NATS_CREDENTIALS=credentials)
            assert demo.returncode == 0, demo.stdout + demo.stderr
            assert f"{url} (external)" in flat(demo.stdout)
            assert "3 of 3 tasks completed" in demo.stdout
        for _ in range(2):  # the full tour too: it counts only its own dead letters
            tour = run("demo", AGENTLAB_NATS_URL=url, AGENTLAB_NATS_CREDENTIALS=credentials,
                       timeout=90)
            assert tour.returncode == 0, tour.stdout + tour.stderr
            assert "Demo passed." in tour.stdout
        assert proc.poll() is None and alive(server_pid)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        assert "Traceback" not in proc.stderr.read()
        assert wait_gone(server_pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if server_pid and alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_full_tour_runs_every_pattern_and_checks_itself():
    started = time.monotonic()
    result = run("demo", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 60
    for line in ["CEO, CTO and CFO completed the delegated work",
                 "a late joiner replays the meeting with its decision",
                 "three tool calls ran concurrently", "the saga compensated in reverse",
                 "the poison and the flaky task are dead letters",
                 "tasks waited through scale-to-zero and were all done",
                 "the expired intent was never delivered", "Demo passed."]:
        assert line in flat(result.stdout), line
    assert "Stream Report" in result.stdout and "Traceback" not in result.stderr
