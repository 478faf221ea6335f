"""Per-message TTL on CALL_INTENT (seed 004): an expired intent is never delivered."""

from __future__ import annotations

import time

from agentlab.org import IntentQueue, publish_intent


def test_expired_intent_is_never_delivered_and_live_one_is(org_lab, unique):
    kind = f"book{unique}"
    publish_intent(org_lab, kind, {"call": "stale"}, ttl=1)
    publish_intent(org_lab, kind, {"call": "fresh"}, ttl=60)
    time.sleep(2.2)  # the server checks TTLs about once a second
    queue = IntentQueue(org_lab, kind)
    got = queue.fetch(batch=10, timeout=1)
    assert [m.json()["call"] for m in got] == ["fresh"]
    for msg in got:
        msg.ack()
    assert queue.fetch(batch=10, timeout=0.3) == []


def test_intent_ids_deduplicate(org_lab, unique):
    kind = f"esc{unique}"
    first = publish_intent(org_lab, kind, {"n": 1}, ttl=30, intent_id=f"{unique}-1")
    again = publish_intent(org_lab, kind, {"n": 1}, ttl=30, intent_id=f"{unique}-1")
    assert not first.duplicate and again.duplicate
