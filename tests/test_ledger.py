"""TASK_LEDGER (org/ledger.py): append-only, first record wins, and the server announces
each record as the task's completion: once, and only if it was stored."""

from __future__ import annotations

import pytest

import agentlab
from agentlab import EmbeddedServer, KeyValueBucket, Subjects
from agentlab.errors import BadSubject, JetStreamError
from agentlab.org import LEDGER_BUCKET, LedgerRootConflict, TaskCompleted, TaskLedger
from helpers import stored, wait_for

S = Subjects()


def record_of(org: str, task_id: str, **fields) -> TaskCompleted:
    return TaskCompleted(task_id=task_id, org=org, role="cto", instance="cto-1",
                         title="t", **fields)


def test_a_record_is_announced_once_and_stored_in_the_audit_log(org_lab, names, unique):
    ledger = TaskLedger.declare(org_lab)
    done = org_lab.subscribe(S.tasks_completed(names.org))
    task_id = f"task-{unique}"

    assert ledger.record(record_of(names.org, task_id, result={"n": 1})) is True
    first = done.next(timeout=2)
    assert TaskCompleted.model_validate_json(first.data).result == {"n": 1}

    # A second record of the same task: refused by the stream, so never announced.
    assert ledger.record(record_of(names.org, task_id, result={"n": 2})) is False
    assert done.messages(timeout=0.3) == []
    assert ledger.get(names.org, task_id)["result"] == {"n": 1}
    wait_for(lambda: stored(org_lab, "AGENT_EVENTS", S.tasks_completed(names.org)) == 1,
             what="the completion in AGENT_EVENTS")


def test_the_same_task_id_in_two_orgs_is_two_records(org_lab, unique):
    ledger = TaskLedger.declare(org_lab)
    orgs = [f"a{unique}", f"b{unique}"]
    heard = [org_lab.subscribe(S.tasks_completed(org)) for org in orgs]
    for org in orgs:
        assert ledger.record(record_of(org, "task-1", result={"org": org})) is True
    for org, sub in zip(orgs, heard, strict=True):
        assert TaskCompleted.model_validate_json(sub.next(timeout=2).data).org == org
        assert ledger.get(org, "task-1")["result"] == {"org": org}


def test_the_ledger_cannot_be_overwritten_or_deleted(org_lab, names, unique):
    ledger = TaskLedger.declare(org_lab)
    ledger.record(record_of(names.org, f"kept-{unique}"))
    key = f"{names.org}.kept-{unique}"
    with pytest.raises(Exception, match="maximum messages per subject exceeded"):
        ledger.bucket.put(key, {"forged": True})
    with pytest.raises(Exception, match="maximum messages per subject exceeded"):
        ledger.bucket.delete(key)
    assert ledger.get(names.org, f"kept-{unique}")["instance"] == "cto-1"


def test_a_task_id_with_a_dot_cannot_key_the_ledger(org_lab, names):
    with pytest.raises(ValueError, match="task id 'a.b' cannot key the ledger"):
        record_of(names.org, "a.b")  # the model refuses it (its schema's pattern says so) ...
    unchecked = TaskCompleted.model_construct(
        **{**record_of(names.org, "ab").model_dump(), "task_id": "a.b"})
    with pytest.raises(BadSubject, match="task id 'a.b' cannot key the ledger"):
        TaskLedger.declare(org_lab).record(unchecked)  # ... and so does the ledger itself


def test_an_agent_of_another_root_in_the_same_account_is_told_why_not(org_lab):
    TaskLedger.declare(org_lab)  # announcing under genbrain
    with pytest.raises(LedgerRootConflict) as caught:
        TaskLedger.declare(org_lab, Subjects("elsewhere"))
    assert str(caught.value) == (
        "Ledger bucket 'TASK_LEDGER' already announces completions on "
        "'genbrain.org.{{wildcard(1)}}.tasks.completed', but this agent's subject root wants "
        "'elsewhere.org.{{wildcard(1)}}.tasks.completed'. One account holds one ledger, so "
        "its agents must share a root: use the same Subjects root, or give each root its own "
        "account (agentlab.Tenants, accounts model).")


def test_a_plain_bucket_of_that_name_is_made_append_only_and_announcing():
    """A TASK_LEDGER created as an ordinary bucket (by hand, or by an older agentlab)."""
    with EmbeddedServer(name="ledger-upgrade") as server:
        client = agentlab.Client.open(server.url, name="upgrade")
        try:
            KeyValueBucket.declare(client, LEDGER_BUCKET).put("acme.old", {"result": {}})
            ledger = TaskLedger.declare(client)
            config = client.js.stream_info(f"KV_{LEDGER_BUCKET}").config
            assert config.republish.dest == "genbrain.org.{{wildcard(1)}}.tasks.completed"
            assert config.discard_new_per_subject and config.deny_delete
            done = client.subscribe(S.tasks_completed("acme"))
            assert ledger.record(record_of("acme", "new")) is True
            assert done.next(timeout=2).json()["task_id"] == "new"
            assert ledger.record(record_of("acme", "old")) is False  # kept, not replaced
        finally:
            client.close()


def test_publishing_over_a_record_is_refused_with_the_reason(org_lab, names, unique):
    ledger = TaskLedger.declare(org_lab)
    ledger.record(record_of(names.org, f"once-{unique}"))
    with pytest.raises(JetStreamError) as caught:
        org_lab.js.publish(f"$KV.{LEDGER_BUCKET}.{names.org}.once-{unique}", {"forged": True})
    assert caught.value.err_code == 10077
    assert "In TASK_LEDGER it means the task is recorded already" in str(caught.value)
