"""Shared fixtures: one real embedded nats-server per test session, fresh names per test."""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

import agentlab

_ids = itertools.count()


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
    from agentlab.server import EmbeddedServer

    with EmbeddedServer(name="org-test") as server:
        yield server


@pytest.fixture(scope="module")
def org_lab(org_server):
    """A connection to ``org_server`` with the reference streams declared."""
    from agentlab.org.streams import declare_reference_streams

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
