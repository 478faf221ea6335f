"""Shared fixtures: one real embedded nats-server per test session, fresh names per test."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from typing import Any

import pytest

import agentlab

_ids = itertools.count()

# Every test gets exactly one kind (registered in pyproject.toml), by its file: `make
# test-fast` is `-m "not browser and not chaos and not notebooks"`. A file not named here is
# `integration`: it starts or shares a real nats-server. A test that carries a kind marker of
# its own keeps it.
KINDS = ("unit", "integration", "browser", "chaos", "notebooks")
KIND_OF_FILE = {
    "test_browser.py": "browser",
    "test_chaos.py": "chaos",
    "test_notebooks.py": "notebooks",
    "test_notebook_asyncio_run.py": "notebooks",
    "test_binder.py": "notebooks",
    "test_compose.py": "unit",
    "test_jupyter_settings.py": "unit",
    "test_messages.py": "unit",
    "test_packaging.py": "unit",
}
# Unit files with a few tests against a real server, known by the fixture that starts it.
SERVER_FIXTURES_IN_UNIT_FILE = {"test_subjects.py": {"server", "conn"}}


# CI (`CI=true`, .ci/run) installs everything the suite needs: chromium, node and npm, the
# extras; and runs as root, so the fault suite can make network namespaces. There a skip
# means the setup drifted, so it fails, except for the reasons below that hold in CI too.
SKIPS_ALLOWED_IN_CI = ("needs agentlab's own server",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") != "true" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in SKIPS_ALLOWED_IN_CI):
        report.outcome = "failed"
        report.longrepr = (f"skipped in CI, where everything this test needs is installed: "
                           f"{reason}")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(kind) for kind in KINDS):
            continue
        name = item.path.name
        kind = KIND_OF_FILE.get(name, "integration")
        if name in SERVER_FIXTURES_IN_UNIT_FILE:
            uses_server = SERVER_FIXTURES_IN_UNIT_FILE[name] & set(item.fixturenames)
            kind = "integration" if uses_server else "unit"
        item.add_marker(kind)


@pytest.fixture(scope="session")
def lab():
    os.environ.pop("AGENTLAB_NATS_URL", None)
    lab = agentlab.start(fresh=True, name="test-lab")
    yield lab
    lab.close()


@pytest.fixture
def client(lab):
    client = lab.connect(f"test-{next(_ids)}")
    yield client
    client.close()


@pytest.fixture
def unique():
    """A fresh subject/stream prefix, so tests sharing the session server never collide."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def org_server():
    """A server of this test module's own, so organisation tests never share stream state."""
    from agentlab import EmbeddedServer

    with EmbeddedServer(name="org-test") as server:
        yield server


@pytest.fixture(scope="module")
def org_lab(org_server):
    """A connection to ``org_server`` with the reference streams declared."""
    from agentlab.org import declare_reference_streams

    client = agentlab.Client.open(org_server.url, name="org-test")
    declare_reference_streams(client)
    yield client
    client.close()


@pytest.fixture
def connect(org_server):
    """``connect("cto")``: another named connection to the module's server, closed after."""
    opened = []

    def open_client(name: str) -> agentlab.Client:
        client = agentlab.Client.open(org_server.url, name=name)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


@pytest.fixture
def names(unique):
    """Fresh role and org names: ``names.cto``, ``names.ceo``, ``names.org``."""
    class Names:
        cto, ceo, org = f"cto{unique}", f"ceo{unique}", f"org{unique}"
    return Names


@pytest.fixture
def agents(connect):
    """``agents(role, org, handler, **options)``: a reference Agent on its own connection,
    short ack_wait and heartbeat; stopped at the end of the test. (test_saga.py has an
    ``agents`` fixture of its own.)"""
    from agentlab.org import Agent

    made: list[Agent] = []

    def make(role: str, org: str, handler: Any = None, **options: Any) -> Agent:
        options.setdefault("ack_wait", 1.0)
        options.setdefault("heartbeat_interval", 0.2)
        agent = Agent(connect(f"{role}-{len(made)}"), role, org, handler, **options)
        made.append(agent)
        return agent

    yield make
    running = [agent for agent in made if agent.running]
    if running:  # all at once: each stop waits out a fetch poll of up to 0.5 s

        async def stop_all() -> None:
            await asyncio.gather(*(agent.astop(timeout=2) for agent in running))

        running[0].client._bridge.run(stop_all(), operation="stop")


@pytest.fixture
def fresh_lab(monkeypatch, request):
    """``fresh_lab(**start_options)``: a lab of the test's own on a new embedded server,
    outside any AGENTLAB_NATS_URL; the session's lab is put back and these are closed after."""
    import agentlab.lab

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.delenv("AGENTLAB_NATS_CREDENTIALS", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)
    prefix = request.module.__name__.removeprefix("test_").replace("_", "-")
    started: list[Any] = []

    def start(**options: Any):
        lab = agentlab.start(fresh=True, name=f"{prefix}-{len(started)}", **options)
        started.append(lab)
        return lab

    yield start
    for lab in started:
        lab.close()
