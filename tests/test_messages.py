"""Tests of agentlab.wire.messages: the envelope, payload encoding, decode errors and schemas."""

from __future__ import annotations

import dataclasses
import enum
import json
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import agentlab.org  # noqa: F401  (registers the organisation's wire models)
from agentlab.errors import AgentlabError, MessageDecodeError
from agentlab.wire import messages
from agentlab.wire.messages import (
    AgentMessage,
    decode_json,
    decode_model,
    export_schemas,
    json_schemas,
    register_wire_model,
    to_bytes,
)

# A message as a JavaScript or Go agent would write it, typed by hand, not made by the model.
FOREIGN_JSON = (
    '{"id": "0b6f3c1e9d2a4f7e8c5b1a2d3e4f5a6b", "sender": "js-planner", '
    '"type": "task.assigned", "payload": {"task": "sum", "args": [1, 2, 3], "deep": {"x": null}}, '
    '"timestamp": "2024-05-01T12:30:00.123Z", "correlation_id": "wf-42", "causation_id": null}'
)


# --- envelope ------------------------------------------------------------------------------


def test_round_trip_keeps_every_field():
    msg = AgentMessage(
        id="m-1", sender="planner", type="task.assigned",
        payload={"n": 3, "items": ["a", "é"], "nested": {"ok": True, "none": None}},
        timestamp=datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=timezone.utc),
        correlation_id="wf-1", causation_id="m-0",
    )
    back = AgentMessage.from_bytes(msg.to_bytes(), subject="agents.x")
    assert back == msg
    assert back.model_dump() == msg.model_dump()  # every field, not just equality semantics
    assert set(json.loads(msg.to_bytes())) == set(AgentMessage.model_fields)


def test_defaults_round_trip_and_timestamp_is_utc_iso_on_the_wire():
    msg = AgentMessage(sender="a", type="t")
    assert msg.timestamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - msg.timestamp) < timedelta(seconds=5)
    wire = json.loads(msg.to_bytes())
    assert isinstance(wire["timestamp"], str)
    assert wire["timestamp"].endswith(("Z", "+00:00"))
    assert datetime.fromisoformat(wire["timestamp"].replace("Z", "+00:00")) == msg.timestamp
    assert AgentMessage.from_bytes(msg.to_bytes()) == msg


def test_timestamps_are_normalised_to_utc():
    paris = timezone(timedelta(hours=2))
    msg = AgentMessage(sender="a", type="t", timestamp=datetime(2024, 5, 1, 14, 0, tzinfo=paris))
    assert msg.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    assert msg.timestamp.utcoffset() == timedelta(0)
    # datetime.utcnow().isoformat() from an older Python agent has no offset: read as UTC.
    naive = b'{"id": "x", "sender": "a", "type": "t", "timestamp": "2024-05-01T12:00:00"}'
    assert AgentMessage.from_bytes(naive).timestamp == datetime(2024, 5, 1, 12, tzinfo=timezone.utc)


def test_ids_are_unique_uuid4_hex():
    ids = {AgentMessage(sender="a", type="t").id for _ in range(2000)}
    assert len(ids) == 2000
    for value in list(ids)[:20]:
        assert uuid.UUID(hex=value).version == 4 and len(value) == 32


def test_follow_up_chains_correlation_and_causation():
    first = AgentMessage(sender="planner", type="task.assigned")
    second = first.follow_up(sender="worker", type="task.started")
    third = second.follow_up("worker", "task.done", {"result": 55})
    assert (second.correlation_id, second.causation_id) == (first.id, first.id)
    assert (third.correlation_id, third.causation_id) == (first.id, second.id)
    assert (third.sender, third.type, third.payload) == ("worker", "task.done", {"result": 55})
    assert second.payload == {} and len({first.id, second.id, third.id}) == 3
    in_workflow = AgentMessage(sender="a", type="t", correlation_id="wf-9")
    assert in_workflow.follow_up("b", "u").correlation_id == "wf-9"


def test_envelope_is_immutable_and_requires_sender_and_type():
    msg = AgentMessage(sender="a", type="t")
    with pytest.raises(ValidationError):
        msg.sender = "b"
    with pytest.raises(ValidationError):
        AgentMessage(sender="", type="t")
    with pytest.raises(ValidationError):
        AgentMessage(type="t")


# --- decode errors -------------------------------------------------------------------------

GOOD = {"id": "m", "sender": "a", "type": "t", "timestamp": "2024-05-01T12:00:00Z"}


def _with(**changes):
    doc = {**GOOD, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'\xff\xfe{"sender": "a"}', "invalid UTF-8 at byte 0"),
        (b'{"id": "m", "sender": "\xc3(", "type": "t"}', "invalid UTF-8 at byte 23"),
        (b'{"sender": "a", ', "invalid JSON: "),
        (b"not json", "invalid JSON: expected"),
        (b"", "empty message"),
        (b"[1, 2]", "expected a JSON object, got an array"),
        (_with(sender=...), "field 'sender' is required"),
        (_with(payload=[1, 2]), "field 'payload': input should be"),
        (_with(payload="text"), "field 'payload'"),
        (_with(sender=""), "field 'sender': string should have at least 1 character"),
        (_with(priority=5), "unexpected field 'priority' (allowed: id, sender, type, payload"),
        (_with(id=...), "field 'id' is required"),
        (_with(timestamp=...), "field 'timestamp' is required"),
        (_with(timestamp="yesterday"), "field 'timestamp'"),
    ],
)
def test_decode_errors_name_subject_and_reason(data, reason):
    with pytest.raises(MessageDecodeError) as info:
        AgentMessage.from_bytes(data, subject="agents.worker.inbox")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, AgentlabError)
    assert err.subject == "agents.worker.inbox"
    assert err.data == data
    assert reason in err.reason
    assert "agents.worker.inbox" in str(err) and reason in str(err)
    assert "\n" not in err.reason and len(err.reason) < 200  # short, one line


def test_decode_error_without_subject_and_from_memoryview():
    with pytest.raises(MessageDecodeError, match=r"\(no subject\).*invalid JSON") as info:
        AgentMessage.from_bytes(b"{oops")
    assert info.value.subject is None
    assert AgentMessage.from_bytes(memoryview(_with())).sender == "a"


def test_decode_json():
    assert decode_json(b'{"a": [1, 2.5, null, "\xc3\xa9"]}') == {"a": [1, 2.5, None, "é"]}
    with pytest.raises(MessageDecodeError, match="on subject 'x.y'.*line 1 column") as info:
        decode_json(b'{"a": ', subject="x.y")
    assert info.value.reason.startswith("invalid JSON: ")
    with pytest.raises(MessageDecodeError, match="invalid UTF-8 at byte 6"):
        decode_json(b'{"a": \xff}', subject="x.y")


class Point(BaseModel):
    x: int
    y: int = 0


def test_decode_model_with_any_model():
    assert decode_model(b'{"x": 1, "y": 2}', Point) == Point(x=1, y=2)
    with pytest.raises(MessageDecodeError, match="on subject 'geo'.*field 'x': input should be"):
        decode_model(b'{"x": "one"}', Point, subject="geo")
    with pytest.raises(MessageDecodeError, match="field 'x' is required"):
        decode_model(b"{}", Point, subject="geo")


# --- to_bytes ------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Pair:
    left: int
    right: str


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"raw\x00\xff", b"raw\x00\xff"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
        ("héllo", "héllo".encode()),
        ({"a": 1, "b": [True, None]}, b'{"a":1,"b":[true,null]}'),
        ([1, "x"], b'[1,"x"]'),
        ((1, 2), b"[1,2]"),
        (42, b"42"),
        (1.5, b"1.5"),
        (True, b"true"),
        (None, b"null"),
        ({"nan": float("nan")}, b'{"nan":null}'),
        (
            {"when": datetime(2024, 5, 1, 12, tzinfo=timezone.utc), "color": Color.RED,
             "id": uuid.UUID(int=1), "pair": Pair(1, "b"), "price": Decimal("1.10")},
            b'{"when":"2024-05-01T12:00:00Z","color":"red",'
            b'"id":"00000000-0000-0000-0000-000000000001","pair":{"left":1,"right":"b"},'
            b'"price":"1.10"}',
        ),
        (Point(x=1), b'{"x":1,"y":0}'),
    ],
)
def test_to_bytes_accepted_types(value, expected):
    out = to_bytes(value)
    assert type(out) is bytes and out == expected


def test_to_bytes_returns_bytes_unchanged_and_matches_envelope():
    data = b"x" * 64
    assert to_bytes(data) is data
    msg = AgentMessage(sender="a", type="t", payload={"k": 1})
    assert to_bytes(msg) == msg.to_bytes() == msg.model_dump_json().encode()


@pytest.mark.parametrize("value", [object(), {1, 2}, Color.RED, 1j])
def test_to_bytes_rejects_unsupported_types(value):
    with pytest.raises(TypeError, match=f"cannot send an object of type {type(value).__name__}:"
                       r" pass bytes, str, a dict/list \(sent as JSON\) or a pydantic model"):
        to_bytes(value)


def test_to_bytes_names_unsupported_nested_type():
    with pytest.raises(TypeError, match="cannot send this dict as JSON.*object"):
        to_bytes({"a": [object()]})


# --- schemas -------------------------------------------------------------------------------


def test_committed_schema_files_match_the_models(tmp_path):
    generated = {p.name: p.read_bytes() for p in export_schemas(tmp_path)}
    committed = {p.name: p.read_bytes() for p in messages.SCHEMA_DIR.glob("*.schema.json")}
    assert generated, "no schema was generated"
    assert committed == generated, (
        "agentlab/wire/schemas/ is stale: run `agentlab schemas`"
    )


def test_schema_identity_and_wire_requirements():
    schema = json_schemas()["AgentMessage"]
    assert schema["$id"] == "https://agentlab.dev/schemas/agent_message.schema.json"
    assert schema["title"] == "AgentMessage"
    assert schema["required"] == ["id", "sender", "type", "timestamp"]
    assert schema["additionalProperties"] is False
    text = (messages.SCHEMA_DIR / "agent_message.schema.json").read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "$id"')


_JSON_TYPES = {"string": str, "object": dict, "array": list, "null": type(None),
               "boolean": bool, "number": (int, float), "integer": int}


def _conforms(doc: dict, schema: dict) -> list[str]:
    """A deliberately small check: required fields, unknown fields, types, minLength."""
    problems = [f"missing {name}" for name in schema["required"] if name not in doc]
    for name, value in doc.items():
        prop = schema["properties"].get(name)
        if prop is None:
            problems.append(f"unknown {name}")
            continue
        types = [alt["type"] for alt in prop.get("anyOf", [prop])]
        if not any(isinstance(value, _JSON_TYPES[t]) for t in types):
            problems.append(f"{name} is not {types}")
        elif isinstance(value, str) and len(value) < prop.get("minLength", 0):
            problems.append(f"{name} too short")
    return problems


def test_message_from_another_language_matches_schema_and_decodes():
    schema = json.loads((messages.SCHEMA_DIR / "agent_message.schema.json").read_text())
    doc = json.loads(FOREIGN_JSON)
    assert _conforms(doc, schema) == []
    # The check must be able to fail, or the assertion above proves nothing.
    assert _conforms({**doc, "sender": "", "extra": 1, "payload": []}, schema) == [
        "sender too short", "payload is not ['object']", "unknown extra"]
    assert "missing id" in _conforms({k: v for k, v in doc.items() if k != "id"}, schema)

    msg = AgentMessage.from_bytes(FOREIGN_JSON.encode(), subject="agents.py-worker")
    assert (msg.id, msg.sender, msg.type) == (doc["id"], "js-planner", "task.assigned")
    assert msg.payload == {"task": "sum", "args": [1, 2, 3], "deep": {"x": None}}
    assert msg.timestamp == datetime(2024, 5, 1, 12, 30, 0, 123000, tzinfo=timezone.utc)
    assert (msg.correlation_id, msg.causation_id) == ("wf-42", None)


def test_message_from_another_language_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schemas()["AgentMessage"]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(json.loads(FOREIGN_JSON))) == []
    assert not validator.is_valid({**json.loads(FOREIGN_JSON), "colour": "red"})
    assert not validator.is_valid({"sender": "a", "type": "t"})  # no id/timestamp


def test_register_wire_model(monkeypatch):
    monkeypatch.setattr(messages, "WIRE_MODELS", list(messages.WIRE_MODELS))

    @register_wire_model
    class HTTPTaskResult(BaseModel):
        ok: bool

    assert register_wire_model(HTTPTaskResult) is HTTPTaskResult  # idempotent
    names = list(json_schemas())
    assert "AgentMessage" in names and "HTTPTaskResult" in names and names == sorted(names)
    assert json_schemas()["HTTPTaskResult"]["$id"].endswith("/http_task_result.schema.json")
    with pytest.raises(ValueError, match="already registered"):
        register_wire_model(type("AgentMessage", (BaseModel,), {"__annotations__": {"a": int}}))
    with pytest.raises(TypeError, match="pydantic model class"):
        register_wire_model(dict)


def test_cli_export_writes_the_same_files(tmp_path):
    out = tmp_path / "schemas"
    done = subprocess.run([sys.executable, "-m", "agentlab", "schemas", str(out)],
                          capture_output=True, text=True, cwd=Path(messages.__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert str(out / "agent_message.schema.json") in done.stdout.split()
    for committed in messages.SCHEMA_DIR.glob("*.schema.json"):
        assert (out / committed.name).read_bytes() == committed.read_bytes(), committed.name
