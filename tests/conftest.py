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
