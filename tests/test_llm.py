"""Model-backed roles (agentlab.llm) against an OpenAI-compatible HTTP server the test starts:
real HTTP and server-sent events with canned completions and tool calls, no patched client."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest

from agentlab.llm import (
    DELEGATE_TOOL,
    LlmConfig,
    LlmConfigError,
    ModelError,
    ModelRejected,
    ModelRole,
    ModelUnavailable,
    ToolSpec,
    model_role,
)
from agentlab.llm.scripted import ScriptedModel, answer, status, tool_call
from agentlab.org import (
    REFERENCE_ROLES,
    Organisation,
    Task,
    TaskLedger,
    ToolWorkerPool,
    default_roles,
)

# -- the endpoint -------------------------------------------------------------------------


@pytest.fixture
def model():
    fake = ScriptedModel()
    yield fake
    fake.close()


class FakeContext:
    """What a ModelRole uses of a TaskContext, recorded, for tests that need no agent."""

    def __init__(self, tools: dict[str, Any] | None = None) -> None:
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self.delegated: list[tuple[str, str, dict[str, Any] | None]] = []
        self.tools = tools or {}
        self.kept_alive = 0

    def progress(self, text: str, **data: Any) -> None:
        self.notes.append((text, data))

    def in_progress(self) -> None:
        self.kept_alive += 1

    async def adelegate(self, role: str, title: str, details: dict[str, Any] | None = None
                        ) -> Task:
        self.delegated.append((role, title, details))
        return Task(org="acme", role=role, title=title, details=details or {},
                    requested_by="ceo", id=f"sub{len(self.delegated)}")

    async def acall_tool(self, tool: str, /, *, timeout: float = 30.0, **arguments: Any) -> Any:
        return self.tools[tool](**arguments)


def task(title: str = "Pick a queue", **details: Any) -> Task:
    return Task(org="acme", role="cto", title=title, details=details, requested_by="ceo")


def gather(sub, until, timeout: float = 10.0, what: str = "messages") -> list[dict[str, Any]]:
    """Messages of ``sub`` (as JSON) until ``until(got)`` holds; AssertionError at timeout."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not until(got):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {got}")
        got += [m.json() for m in sub.messages(count=1, timeout=min(left, 0.5))]
    return got


def completed(events: list[dict[str, Any]], task_id: str) -> dict[str, Any] | None:
    return next((e for e in events if e["task_id"] == task_id), None)


SEARCH_SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}},
                 "required": ["query"]}


# -- against the organisation on a real server ----------------------------------------------


def test_a_model_backed_cto_completes_a_delegated_task_with_one_tool_call(
        org_lab, connect, model, unique):
    tool = f"search{unique}"
    model.script = [tool_call(tool, {"query": "durable queues"}),
                    answer("Use JetStream work queues: they keep tasks durably.")]
    searched: list[str] = []

    def search(query: str) -> dict[str, Any]:
        searched.append(query)
        return {"hits": [f"{query}: JetStream work queues"]}

    cto = model_role("You are the CTO.", config=model.config(),
                     tools=[ToolSpec(tool, "Search the docs", SEARCH_SCHEMA, timeout=5)])
    given: dict[str, str] = {}

    async def ceo(task, ctx):
        sub = await ctx.adelegate("cto", "Pick a queue", {"load": "high"})
        given["cto"] = sub.id
        return {"delegated": [sub.id]}

    pool = ToolWorkerPool(connect("tools"), tool, search, workers=1).start()
    org = Organisation(org_lab, f"org{unique}", roles={"ceo": ceo, "cto": cto}, ack_wait=2,
                       heartbeat_interval=0.2, monitor_interval=0.2).start()
    try:
        done = org_lab.subscribe(org.subjects.tasks_completed(org.org))
        notes = org_lab.subscribe(org.subjects.inbox("ceo"))
        org.assign("Launch the product")
        events = gather(done, lambda got: "cto" in given and completed(got, given["cto"]),
                        what="the CTO's completion")
        record = completed(events, given["cto"])
        progress = gather(notes, lambda got: any(n["payload"].get("streamed") for n in got
                                                 if n["payload"]["task_id"] == given["cto"]),
                          what="the CTO's streamed progress")
    finally:
        org.stop()
        pool.stop()

    result = record["result"]
    assert result["answer"] == "Use JetStream work queues: they keep tasks durably."
    assert result["model"] == "test-model" and result["turns"] == 2
    assert result["usage"] == {"prompt_tokens": 70, "completion_tokens": 20,
                               "total_tokens": 90}
    assert result["latency_ms"] > 0
    assert result["tool_calls"] == [{"name": tool, "ok": True,
                                     "arguments": {"query": "durable queues"}}]
    assert record["role"] == "cto" and record["deliveries"] == 1
    ledger = TaskLedger.declare(org_lab, org.subjects)
    assert ledger.get(org.org, given["cto"])["result"] == result  # what the agent recorded
    assert searched == ["durable queues"] and pool.stats.ok == 1

    assert len(model.requests) == 2
    first, second = (r["body"] for r in model.requests)
    assert "authorization" not in {h.lower() for h in model.requests[0]["headers"]}
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in first["tools"]] == [tool]
    assert first["messages"][0] == {"role": "system", "content": "You are the CTO."}
    assert "Pick a queue" in first["messages"][1]["content"]
    assert '"load": "high"' in first["messages"][1]["content"]
    assistant, told = second["messages"][2:]
    assert assistant["tool_calls"][0]["function"] == {
        "name": tool, "arguments": json.dumps({"query": "durable queues"})}
    assert told["role"] == "tool" and told["tool_call_id"] == "call_1"
    assert json.loads(told["content"]) == {"hits": ["durable queues: JetStream work queues"]}

    texts = [n["payload"]["text"] for n in progress if n["payload"]["task_id"] == given["cto"]]
    assert "asking test-model (turn 1)" in texts and f"calling tool {tool}" in texts


def test_a_500_is_retried_and_the_next_delivery_succeeds(org_lab, model, unique):
    model.script = [status(500, "overloaded"), answer("Prototype first.")]
    cto = model_role("You are the CTO.", config=model.config())
    org = Organisation(org_lab, f"org{unique}", roles={"cto": cto}, ack_wait=2,
                       heartbeat_interval=0.2, monitor_interval=0.2).start()
    try:
        done = org_lab.subscribe(org.subjects.tasks_completed(org.org))
        sent = org.assign("Pick a database", to="cto")
        record = completed(gather(done, lambda got: completed(got, sent.id)), sent.id)
    finally:
        org.stop()
    assert record["deliveries"] == 2  # the 500 failed the first, the nak'd retry answered
    assert record["result"]["answer"] == "Prototype first."
    assert len(model.requests) == 2


def test_a_401_names_the_variable_and_the_agent_takes_the_next_task(org_lab, model, unique):
    model.script = [status(401, "Incorrect API key provided"), answer("Approved.")]
    cto = model_role("You are the CTO.", config=model.config(api_key="sk-wrong"))
    org = Organisation(org_lab, f"org{unique}", roles={"cto": cto}, ack_wait=2, max_deliver=1,
                       heartbeat_interval=0.2, monitor_interval=0.2).start()
    try:
        done = org_lab.subscribe(org.subjects.tasks_completed(org.org))
        refused = org.assign("Refused", to="cto")
        deadline = time.monotonic() + 10
        letter = None
        while letter is None and time.monotonic() < deadline:
            letter = next((dl for _, dl in org.dead_letters.list() if refused.id in dl.payload),
                          None)
            time.sleep(0.05)
        assert letter is not None, "the refused task never became a dead letter"
        fine = org.assign("Fine", to="cto")
        record = completed(gather(done, lambda got: completed(got, fine.id)), fine.id)
    finally:
        org.stop()
    assert "ModelRejected" in letter.error and "HTTP 401" in letter.error
    assert "AGENTLAB_LLM_API_KEY" in letter.error and "sk-wrong" not in letter.error
    assert record["result"]["answer"] == "Approved."


# -- the environment switch ----------------------------------------------------------------


@pytest.fixture
def no_llm_env(monkeypatch):
    for name in ("BASE_URL", "MODEL", "API_KEY", "ROLES", "TIMEOUT"):
        monkeypatch.delenv(f"AGENTLAB_LLM_{name}", raising=False)
    return monkeypatch


def test_unconfigured_the_deterministic_roles_stay_the_default(no_llm_env, org_lab):
    assert LlmConfig.from_env() is None
    assert default_roles() == REFERENCE_ROLES
    assert Organisation(org_lab, "acme").roles == REFERENCE_ROLES


def test_the_environment_switches_the_reference_roles_to_the_model(no_llm_env, org_lab):
    no_llm_env.setenv("AGENTLAB_LLM_BASE_URL", "http://localhost:11434/v1/")
    no_llm_env.setenv("AGENTLAB_LLM_MODEL", "llama3.2")
    no_llm_env.setenv("AGENTLAB_LLM_API_KEY", "sk-env-secret")
    roles = default_roles()
    assert set(roles) == {"ceo", "cto", "cfo"}
    assert all(isinstance(handler, ModelRole) for handler in roles.values())
    assert roles["ceo"].delegates_to == ("cto", "cfo")
    assert roles["cto"].config == LlmConfig("http://localhost:11434/v1", "llama3.2",
                                            api_key="sk-env-secret")
    assert isinstance(Organisation(org_lab, "acme").roles["cfo"], ModelRole)
    no_llm_env.setenv("AGENTLAB_LLM_ROLES", "cto")
    roles = default_roles()
    assert isinstance(roles["cto"], ModelRole)
    assert roles["ceo"] is REFERENCE_ROLES["ceo"] and roles["cfo"] is REFERENCE_ROLES["cfo"]


@pytest.mark.parametrize("env, names", [
    ({"AGENTLAB_LLM_BASE_URL": "http://localhost:8000/v1"}, "AGENTLAB_LLM_MODEL"),
    ({"AGENTLAB_LLM_BASE_URL": "localhost:11434", "AGENTLAB_LLM_MODEL": "m"},
     "AGENTLAB_LLM_BASE_URL='localhost:11434' is not an http(s) URL"),
    ({"AGENTLAB_LLM_BASE_URL": "http://h/v1", "AGENTLAB_LLM_MODEL": "m",
      "AGENTLAB_LLM_TIMEOUT": "soon"}, "AGENTLAB_LLM_TIMEOUT"),
    ({"AGENTLAB_LLM_BASE_URL": "http://h/v1", "AGENTLAB_LLM_MODEL": "m",
      "AGENTLAB_LLM_ROLES": "cto,cmo"}, "AGENTLAB_LLM_ROLES"),
])
def test_a_configuration_that_cannot_work_says_which_variable_to_fix(no_llm_env, env, names):
    for name, value in env.items():
        no_llm_env.setenv(name, value)
    with pytest.raises(LlmConfigError) as raised:
        default_roles()
    assert names in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_model_role_without_a_model_says_how_to_give_one(no_llm_env):
    with pytest.raises(LlmConfigError, match="AGENTLAB_LLM_BASE_URL"):
        model_role("You are the CTO.")


# -- the handler on its own (a recorded context), against the same kind of endpoint ----------


def test_the_api_key_is_sent_as_bearer_and_never_shown(model):
    config = model.config(api_key="sk-very-secret")
    model.script = [answer("Hello.")]
    cto = model_role("You are the CTO.", config=config)
    result = asyncio.run(cto(task(), FakeContext()))
    assert result["answer"] == "Hello."
    assert model.requests[0]["headers"]["Authorization"] == "Bearer sk-very-secret"
    for shown in (repr(config), str(config), repr(cto), f"{config}"):
        assert "sk-very-secret" not in shown
    assert "api_key='***'" in repr(config)


def test_a_model_backed_ceo_delegates_through_the_context(model):
    model.script = [
        tool_call(DELEGATE_TOOL, {"role": "cto", "title": "Technical plan",
                                  "details": {"goal": "Lisbon"}}, call_id="c1")[:-2]
        + tool_call(DELEGATE_TOOL, {"role": "cmo", "title": "Ads"}, call_id="c2",
                    index=1)[1:],
        answer("CTO has it.")]
    ceo = model_role("You are the CEO.", delegates_to=["cto", "cfo"], config=model.config())
    ctx = FakeContext()
    result = asyncio.run(ceo(task("Open an office"), ctx))
    assert ctx.delegated == [("cto", "Technical plan", {"goal": "Lisbon"})]
    assert result["delegated"] == ["sub1"]
    assert [(c["name"], c["ok"]) for c in result["tool_calls"]] == [
        (DELEGATE_TOOL, True), (DELEGATE_TOOL, False)]
    offered = model.requests[0]["body"]["tools"][0]["function"]
    assert offered["name"] == DELEGATE_TOOL
    assert offered["parameters"]["properties"]["role"]["enum"] == ["cto", "cfo"]
    told = {m["tool_call_id"]: json.loads(m["content"])
            for m in model.requests[1]["body"]["messages"] if m["role"] == "tool"}
    assert told["c1"] == {"task_id": "sub1", "role": "cto", "status": "delegated"}
    assert "one of ['cto', 'cfo']" in told["c2"]["error"]


def test_bad_json_from_the_model_and_a_failing_tool_are_told_to_the_model(model):
    def search(query: str) -> Any:
        raise RuntimeError("index offline")

    model.script = [tool_call("search", '{"query": "nats"'), tool_call("search", {"query": "x"}),
                    answer("Sorry, no search today.")]
    cto = model_role("You are the CTO.", config=model.config(),
                     tools=[ToolSpec("search", "Search", SEARCH_SCHEMA)])
    result = asyncio.run(cto(task(), FakeContext({"search": search})))
    assert result["answer"] == "Sorry, no search today." and result["turns"] == 3
    assert [c["ok"] for c in result["tool_calls"]] == [False, False]
    assert result["tool_calls"][0]["arguments"] == '{"query": "nats"'
    errors = [json.loads(m["content"])["error"] for m in model.requests[2]["body"]["messages"]
              if m["role"] == "tool"]
    assert "not valid JSON" in errors[0] and "index offline" in errors[1]


def test_streamed_text_reaches_progress_whole_and_the_task_is_kept_alive(model):
    text = " ".join(f"word{i}" for i in range(50))
    model.script = [answer(text)]
    model.delay = 0.3  # the model thinks before its first byte
    cto = model_role("You are the CTO.", config=model.config(), keep_alive_every=0.05)
    ctx = FakeContext()
    result = asyncio.run(cto(task(), ctx))
    streamed = [t for t, data in ctx.notes if data.get("streamed")]
    assert result["answer"] == text and "".join(streamed) == text
    assert len(streamed) < 10  # throttled, not a note per token
    assert ctx.kept_alive >= 2  # in_progress() while it waited


def test_a_model_that_never_answers_fails_after_max_turns(model):
    model.script = [tool_call("search", {"query": str(n)}) for n in range(2)]
    cto = model_role("You are the CTO.", config=model.config(), max_turns=2,
                     tools=[ToolSpec("search", "Search", SEARCH_SCHEMA)])
    with pytest.raises(ModelError, match="max_turns=2"):
        asyncio.run(cto(task(), FakeContext({"search": lambda query: []})))


def test_refusals_and_an_unreachable_endpoint_say_what_to_fix(model):
    model.script = [status(404, "model 'test-model' not found")]
    with pytest.raises(ModelRejected, match="AGENTLAB_LLM_MODEL") as raised:
        asyncio.run(model_role("x", config=model.config())(task(), FakeContext()))
    assert model.base_url in str(raised.value) and "test-model" in str(raised.value)
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = LlmConfig(f"http://127.0.0.1:{port}/v1", "m", timeout=5)
    with pytest.raises(ModelUnavailable, match="AGENTLAB_LLM_BASE_URL"):
        asyncio.run(model_role("x", config=closed)(task(), FakeContext()))
