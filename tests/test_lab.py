"""agentlab.start(): reuse in one kernel, AGENTLAB_NATS_URL, and no server outliving the lab."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import agentlab
from agentlab import EmbeddedServer


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return "\nState:\tZ" not in status.read()
    except FileNotFoundError:
        return False


@pytest.fixture
def no_env_url(monkeypatch):
    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)


@pytest.fixture
def set_aside_lab(monkeypatch):
    """Tests that start fresh labs must not close the session's shared lab."""
    import agentlab.lab

    monkeypatch.setattr(agentlab.lab, "_current", None)


def test_start_reuses_the_running_lab_unless_fresh(lab, no_env_url):
    assert agentlab.start() is lab
    assert agentlab.current_lab() is lab


def test_close_stops_the_embedded_server_and_fresh_starts_another(no_env_url, set_aside_lab):
    first = agentlab.start(fresh=True, name="first")
    pid = first.server.pid
    second = agentlab.start(fresh=True, name="second")
    try:
        assert second is not first and first.is_closed
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid), "the first lab's nats-server outlived lab.close()"
        assert second.request is not None and second.server.pid != pid
    finally:
        second.close()
        assert not _alive(second.server.pid)


def test_env_url_connects_there_and_starts_nothing(monkeypatch, set_aside_lab):
    with EmbeddedServer(name="external") as external:
        monkeypatch.setenv("AGENTLAB_NATS_URL", external.url)
        lab = agentlab.start(fresh=True, name="env")
        try:
            assert lab.server is None and lab.url == external.url and not lab.embedded
            other = agentlab.connect(name="other")
            sub = other.subscribe("env.check")
            lab.publish("env.check", "via the external server")
            assert sub.next(timeout=1).text == "via the external server"
            other.close()
        finally:
            lab.close()
        assert external.is_running  # closing the lab does not stop a server it did not start


def test_connect_without_lab_or_url_explains_what_to_do(no_env_url, set_aside_lab):
    with pytest.raises(agentlab.ServerUnreachable, match="agentlab.start"):
        agentlab.connect(name="nobody")


def test_a_script_that_forgets_close_leaves_no_server(tmp_path):
    script = "import agentlab; lab = agentlab.start(); print(lab.server.pid, flush=True)"
    env = {k: v for k, v in os.environ.items() if k != "AGENTLAB_NATS_URL"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
