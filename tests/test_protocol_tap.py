"""The wire contract against the real thing: tap every subject while the whole demo runs.

Every subject seen must be one docs/protocol.md documents (its generated subjects table) and
a channel address of docs/asyncapi.json (parameters as wildcards); every payload must be
valid under one of that channel's message schemas, and its headers under the message's
headers schema. A prober asks the micro services and an inbox meanwhile, so the `$SRV`
subjects and the replies are checked too.
"""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import agentlab
from agentlab import NoResponders, RequestTimeout, subject_matches
from agentlab.org.deadletters import ADVISORY
from agentlab.protocol.asyncapi import TABLE_BEGIN, TABLE_END
from agentlab.protocol.channels import CHANNELS, EXTERNAL_SCHEMAS, HEADERS, MESSAGES, MULTI_TOKEN
from agentlab.wire import json_schemas

jsonschema = pytest.importorskip("jsonschema")
DOCS = Path(__file__).resolve().parent.parent / "docs"
TAPPED = ("genbrain.>", "$SRV.>", "$KV.TASK_LEDGER.>", "$KV.TASK_FAILURES.>", f"{ADVISORY}.>",
          "agents.>")
# What the demo must have exercised, or the tap saw too little to prove anything.
EXPECTED = {"agentTasks", "agentInbox", "agentMeetings", "agentHeartbeats", "orgEvents",
            "tasksCreated", "tasksCompleted", "systemHealth", "systemMetrics",
            "meetingMessages", "meetingDecisions", "toolExecute", "toolResult", "events",
            "callIntent", "deadLetters", "taskLedger", "taskFailures", "maxDeliveries",
            "agentStatusService", "agentDelegateService", "microAll", "microByName"}
# The prober's one deliberately bad request: answered with ADR-32's 400 headers, no task.
BAD_DELEGATE = ("genbrain.agents.cfo.svc.acme.delegate", b'{"title": ""}')
pytestmark = pytest.mark.timeout(300)


def as_pattern(address: str) -> str:
    return ".".join((">" if token[1:-1] in MULTI_TOKEN else "*") if token.startswith("{")
                    else token for token in address.split("."))


def documented_in_protocol_md() -> list[str]:
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    table = text[text.index(TABLE_BEGIN):text.index(TABLE_END)]
    return [as_pattern(address) for address in re.findall(r"^\| `([^`]+)` \|", table, re.M)]


def asyncapi_channels() -> dict[str, str]:
    doc = json.loads((DOCS / "asyncapi.json").read_text(encoding="utf-8"))
    return {as_pattern(channel["address"]): name for name, channel in doc["channels"].items()
            if channel.get("address")}


def schema_of(name: str) -> dict[str, Any]:
    return json_schemas().get(name) or EXTERNAL_SCHEMAS[name]


def problems_with(messages: tuple[str, ...], headers: dict[str, str], data: bytes) -> list[str]:
    """Why none of ``messages`` describes this payload and these headers ([] if one does)."""
    try:
        body = json.loads(data) if data else None
    except ValueError:
        return [f"not JSON: {data[:60]!r}"]
    found = []
    for name in messages:
        message = MESSAGES[name]
        if not data:  # no JSON at all: only a message that reads no body fits
            errors = [] if message.schema in ("Empty", "AnyJSON") else ["an empty body"]
        else:
            errors = [e.message for e in jsonschema.Draft202012Validator(
                schema_of(message.schema)).iter_errors(body)]
        if message.headers and not errors:
            errors = [f"headers: {e.message}" for e in jsonschema.Draft202012Validator(
                HEADERS[message.headers]).iter_errors(headers)]
        if not errors:
            return []
        found.append(f"{name}: {'; '.join(errors[:3])}")
    return found


class Prober(threading.Thread):
    """Asks what a client in another language would ask, until the lab closes."""

    def __init__(self, client: agentlab.Client):
        super().__init__(daemon=True, name="protocol-prober")
        self.client, self.stop, self.replies = client, threading.Event(), []

    def run(self) -> None:
        asks = [("$SRV.PING", b""), ("$SRV.INFO.agentlab-agent-cto", b""),
                ("$SRV.STATS.agentlab-agent-ceo", b""),
                ("genbrain.agents.cto.inbox", b""),
                ("genbrain.agents.ceo.svc.acme.status", b""),
                BAD_DELEGATE]
        while not self.stop.wait(0.5) and not self.client.is_closed:
            for subject, body in asks:
                try:
                    reply = self.client.request(subject, body, timeout=0.5)
                except (NoResponders, RequestTimeout):
                    continue
                except Exception:  # noqa: BLE001  (the demo closed the lab under us)
                    return
                self.replies.append((subject, dict(reply.headers), reply.data))


@pytest.fixture
def own_lab(monkeypatch):
    """The demo calls agentlab.start(): it gets this lab, on an embedded server of its own,
    and closes it at the end; the session's lab is put back afterwards."""
    import agentlab.lab

    monkeypatch.delenv("AGENTLAB_NATS_URL", raising=False)
    monkeypatch.setattr(agentlab.lab, "_current", None)
    lab = agentlab.start(fresh=True, name="protocol-tap")
    yield lab
    lab.close()


def test_every_subject_the_demo_uses_is_documented_and_every_payload_fits(own_lab):
    from agentlab.programs.demo import run

    tap = own_lab.connect("tap")
    seen: list[tuple[str, dict[str, str], bytes]] = []
    for pattern in TAPPED:
        tap.subscribe(pattern, lambda m: seen.append((m.subject, dict(m.headers), m.data)))
    prober = Prober(own_lab.connect("prober"))
    prober.start()
    passed = run(Console(file=io.StringIO(), width=200))
    prober.stop.set()
    prober.join(5)
    assert seen, "the tap saw nothing"
    print(f"demo passed: {passed}; {len(seen)} messages tapped, {len(prober.replies)} replies")

    in_doc, in_asyncapi = documented_in_protocol_md(), asyncapi_channels()
    undocumented = sorted({s for s, _, _ in seen if not any(subject_matches(p, s)
                                                             for p in in_doc)})
    assert not undocumented, f"subjects docs/protocol.md does not document: {undocumented}"
    no_channel = sorted({s for s, _, _ in seen if not any(subject_matches(p, s)
                                                          for p in in_asyncapi)})
    assert not no_channel, f"subjects with no channel in docs/asyncapi.json: {no_channel}"

    used, bad = set(), []
    for subject, headers, data in seen:
        channel = next(c for c in CHANNELS if subject_matches(c.pattern, subject))
        used.add(channel.id)
        if headers.get("Nats-Msg-Id", "").startswith("poison-"):
            continue  # the demo's deliberately broken task (and its dead letter's copy)
        if (channel.id == "deadLetters" and b"{this is not a task" in data) or \
                (subject, data) == BAD_DELEGATE:
            continue
        problems = problems_with(channel.messages, headers, data)
        if problems:
            bad.append(f"{subject} {headers} {data[:120]!r}: {problems}")
    bad = list(dict.fromkeys(bad))
    assert not bad, "payloads or headers that fit no documented message:\n" + "\n".join(bad[:10])
    assert EXPECTED <= used, f"the demo never used {sorted(EXPECTED - used)}"

    for subject, headers, data in prober.replies:
        channel = next(c for c in CHANNELS if subject_matches(c.pattern, subject))
        assert not problems_with(channel.replies, headers, data), (subject, headers, data[:200])
    assert {s for s, _, _ in prober.replies} >= {"$SRV.PING", "genbrain.agents.cto.inbox",
                                                 "genbrain.agents.cfo.svc.acme.delegate"}
