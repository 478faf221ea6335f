"""Any NATS client can work with agentlab agents (DESIGN.md decision 4): a plain nats-py
program, which knows nothing of agentlab, publishes a task, follows its progress, asks the
agent for its status and reads the completion event.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentlab import Subjects
from agentlab.org import TASK_STREAM, Agent, Task, TaskCompleted
from agentlab.wire.messages import SCHEMA_DIR, json_schemas, render_schema

jsonschema = pytest.importorskip("jsonschema")

S = Subjects()
pytestmark = pytest.mark.timeout(60)

# The other program. Only `nats` and the standard library: it could as well be Go or JS.
RAW_CLIENT = r'''
import asyncio
import json
import os
import sys
import uuid
from datetime import datetime, timezone

import nats
import nats.js.errors


async def main(url, role, org):
    # The server admits only its login: the credentials file (a nats CLI context) holds it.
    with open(os.environ["AGENTLAB_NATS_CREDENTIALS"]) as f:
        context = json.load(f)
    nc = await nats.connect(url, user=context["user"], password=context["password"])
    js = nc.jetstream()
    me = "billing-service"
    completed = await nc.subscribe(f"genbrain.org.{org}.tasks.completed")
    progress = await nc.subscribe(f"genbrain.agents.{me}.inbox")

    task_id = "ext-" + uuid.uuid4().hex
    task = {"id": task_id, "org": org, "role": role, "title": "Translate the README",
            "details": {"lang": "fr"}, "requested_by": me,
            "created_at": datetime.now(timezone.utc).isoformat()}
    body = json.dumps(task).encode()
    subject = f"genbrain.agents.{role}.tasks"
    ack = await js.publish(subject, body, headers={"Nats-Msg-Id": task_id})
    again = await js.publish(subject, body, headers={"Nats-Msg-Id": task_id})

    note = json.loads((await progress.next_msg(timeout=10)).data)
    while True:
        event = json.loads((await completed.next_msg(timeout=10)).data)
        if event["task_id"] == task_id:
            break
    # The live event can arrive before the stream has stored its copy: ask again briefly.
    for _ in range(50):
        try:
            stored = await js.get_last_msg("AGENT_EVENTS",
                                           f"genbrain.org.{org}.tasks.completed")
            break
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.05)
    status = json.loads((await nc.request(f"genbrain.agents.{role}.inbox", b"{}",
                                          timeout=2)).data)
    print(json.dumps({
        "task": task, "seq": ack.seq, "stream": ack.stream, "duplicate": again.duplicate,
        "progress": note, "completion": event, "stored": json.loads(stored.data),
        "stored_msg_id": stored.headers.get("Nats-Msg-Id"), "status": status,
        "agentlab_imported": any(m.split(".")[0] == "agentlab" for m in sys.modules),
    }))
    await nc.close()


asyncio.run(main(*sys.argv[1:]))
'''


def schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())


def test_exported_schemas_include_the_org_models_and_are_current():
    """`agentlab/schemas/*.schema.json` is what other languages code against."""
    for model, name in [(Task, "task"), (TaskCompleted, "task_completed"),
                        ("AgentAction", "agent_action"), ("Heartbeat", "heartbeat"),
                        ("DeadLetter", "dead_letter")]:
        title = model if isinstance(model, str) else model.__name__
        path = SCHEMA_DIR / f"{name}.schema.json"
        assert path.exists(), f"{path} is missing: re-export the schemas"
        assert path.read_text() == render_schema(json_schemas()[title]), f"{path} is stale"
    # The task id is the key of exactly-once: other languages must send it.
    assert schema("task")["required"] == ["id", "org", "role", "title", "requested_by"]


def test_a_plain_nats_client_delegates_to_an_agentlab_agent(org_server, org_lab, connect,
                                                            unique):
    role, org = f"translator{unique}", f"org{unique}"
    seen: list[Task] = []

    def translate(task: Task, ctx) -> dict:
        seen.append(task)
        ctx.progress("translating", lang=task.details["lang"])
        return {"words": 1200, "lang": task.details["lang"]}

    agent = Agent(connect(role), role, org, translate, ack_wait=2,
                  heartbeat_interval=0.2).start()
    try:
        run = subprocess.run([sys.executable, "-c", RAW_CLIENT, org_server.url, role, org],
                             capture_output=True, text=True, timeout=30,
                             cwd=Path(__file__).parent,
                             env={**os.environ, **org_server.client_env()})
    finally:
        agent.stop()
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["agentlab_imported"] is False

    # The raw task is a valid Task by the published schema, and the agent took it as is.
    jsonschema.validate(out["task"], schema("task"))
    assert out["stream"] == TASK_STREAM and out["duplicate"] is True  # Nats-Msg-Id dedup
    assert [t.id for t in seen] == [out["task"]["id"]]
    assert seen[0].requested_by == "billing-service" and seen[0].details == {"lang": "fr"}

    # It followed the progress on its own inbox and read the completion, plain JSON.
    assert out["progress"]["type"] == "task.progress" and out["progress"]["sender"] == role
    assert out["progress"]["payload"]["task_id"] == out["task"]["id"]
    jsonschema.validate(out["completion"], schema("task_completed"))
    completion = TaskCompleted.model_validate(out["completion"])
    assert completion.task_id == out["task"]["id"] and completion.role == role
    assert completion.result == {"words": 1200, "lang": "fr"} and completion.deliveries == 1
    assert out["stored"] == out["completion"]  # the same event, kept in AGENT_EVENTS
    assert out["stored_msg_id"] == f"{org}.{out['task']['id']}.completed"
    assert out["status"]["role"] == role and out["status"]["instance"] == agent.instance
