"""docs/asyncapi.json and docs/protocol.md: current, valid under the official AsyncAPI parser,
and saying what the agents enforce.

The parser is the npm package @asyncapi/parser (tests/js/package.json, locked by its
package-lock.json); `make test` installs it with `npm ci --prefix tests/js`, and this file
does too if tests/js/node_modules is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentlab.core.subjects import check_subscribe_subject
from agentlab.org import Event, Task
from agentlab.org.models import EVENT_TYPE_PATTERN, TASK_ID_PATTERN, TOKEN_PATTERN
from agentlab.protocol.asyncapi import (
    TABLE_BEGIN,
    TABLE_END,
    asyncapi_document,
    component_schemas,
    render,
)
from agentlab.protocol.channels import CHANNELS, EXTERNAL_SCHEMAS, MESSAGES, PARAMETERS
from agentlab.wire import json_schemas

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "asyncapi.json"
PROTOCOL = ROOT / "docs" / "protocol.md"
JS = ROOT / "tests" / "js"
REGENERATE = "run `agentlab asyncapi --out docs/asyncapi.json --doc docs/protocol.md`"
pytestmark = pytest.mark.unit


def test_the_committed_document_is_the_generated_one():
    assert COMMITTED.read_text(encoding="utf-8") == render(asyncapi_document()), \
        f"docs/asyncapi.json is stale: {REGENERATE}"


def test_the_subjects_table_in_protocol_md_is_the_generated_one():
    from agentlab.protocol.channels import markdown_table

    text = PROTOCOL.read_text(encoding="utf-8")
    assert TABLE_BEGIN in text and TABLE_END in text, "docs/protocol.md lost its table markers"
    table = text[text.index(TABLE_BEGIN) + len(TABLE_BEGIN):text.index(TABLE_END)]
    assert table == "\n" + markdown_table(), \
        f"docs/protocol.md's subjects table is stale: {REGENERATE}"


def test_cli_writes_json_and_yaml(tmp_path):
    out = tmp_path / "asyncapi.json"
    done = subprocess.run([sys.executable, "-m", "agentlab", "asyncapi", "--out", str(out)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == COMMITTED.read_text(encoding="utf-8")
    yaml = pytest.importorskip("yaml")
    as_yaml = tmp_path / "asyncapi.yaml"
    subprocess.run([sys.executable, "-m", "agentlab", "asyncapi", "--out", str(as_yaml)],
                   check=True, capture_output=True, timeout=60)
    assert yaml.safe_load(as_yaml.read_text(encoding="utf-8")) == json.loads(out.read_text())


def _parser_installed() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        why = "node and npm are needed for the AsyncAPI parser (apt-get install nodejs npm)"
        if os.environ.get("CI"):  # .ci/run installs them: there, a skip would hide a failure
            pytest.fail(why)
        pytest.skip(why)
    if not (JS / "node_modules" / "@asyncapi" / "parser").is_dir():
        subprocess.run([npm, "ci", "--prefix", str(JS), "--ignore-scripts", "--no-audit",
                        "--no-fund"], check=True, capture_output=True, timeout=600)
    return Path(node)


def test_the_document_is_valid_under_the_official_asyncapi_parser():
    node = _parser_installed()
    done = subprocess.run([str(node), str(JS / "validate-asyncapi.mjs"), str(COMMITTED)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, f"@asyncapi/parser refused docs/asyncapi.json:\n" \
                                 f"{done.stdout}{done.stderr}"
    assert "valid AsyncAPI 3.0.0" in done.stdout


def test_the_parser_check_fails_on_a_broken_document(tmp_path):
    """The check itself: an error diagnostic is a non-zero exit, naming the problem."""
    node = _parser_installed()
    broken = asyncapi_document()
    broken["channels"]["agentTasks"]["parameters"] = {}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    done = subprocess.run([str(node), str(JS / "validate-asyncapi.mjs"), str(path)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 1 and "Missed: role" in done.stdout


def test_every_name_the_channels_use_exists():
    schemas = component_schemas()
    ids = [channel.id for channel in CHANNELS]
    assert len(ids) == len(set(ids))
    for channel in CHANNELS:
        check_subscribe_subject(channel.pattern)
        assert set(channel.parameters) <= set(PARAMETERS), channel.id
        for name in channel.messages + channel.replies + channel.sent:
            assert name in MESSAGES, (channel.id, name)
    for message in MESSAGES.values():
        assert message.schema in schemas and (message.headers is None
                                              or message.headers in schemas), message
        assert message.schema in json_schemas() or message.schema in EXTERNAL_SCHEMAS
    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', render(asyncapi_document()))
    assert set(refs) <= set(schemas)


def test_every_wire_model_is_on_some_channel():
    on_channels = {MESSAGES[name].schema for channel in CHANNELS
                   for name in channel.messages + channel.replies}
    # QueueMetrics travels inside SystemMetrics; a saga step's SagaRequest goes to whatever
    # subject the step names (docs/protocol.md, "Sagas").
    assert set(json_schemas()) - on_channels == {"QueueMetrics", "SagaRequest"}


# -- the schemas say what the agents enforce ------------------------------------------------
TOKENISH = st.text(alphabet=st.sampled_from(list("ab-_/=.*> \t\r\n\fé\v")), max_size=6)


@settings(max_examples=300, deadline=None)
@given(TOKENISH)
def test_token_patterns_accept_exactly_what_the_task_model_accepts(value):
    base = {"id": "t1", "org": "acme", "role": "cto", "title": "t", "requested_by": "ceo"}
    for field, pattern in (("role", TOKEN_PATTERN), ("requested_by", TOKEN_PATTERN),
                           ("id", TASK_ID_PATTERN)):
        try:
            Task.model_validate({**base, field: value})
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == bool(re.fullmatch(pattern, value)), (field, value)
    try:
        Task.model_validate({**base, "org": value})
        org_ok = True
    except ValidationError:
        org_ok = False
    assert org_ok == (bool(re.fullmatch(TOKEN_PATTERN, value)) and value != "system")


@settings(max_examples=200, deadline=None)
@given(TOKENISH)
def test_the_event_type_pattern_is_what_the_event_model_accepts(value):
    try:
        Event(type=value, source="test")
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == bool(re.fullmatch(EVENT_TYPE_PATTERN, value)), value


def test_the_task_schema_carries_the_rules():
    task = json_schemas()["Task"]["properties"]
    assert task["id"]["pattern"] == TASK_ID_PATTERN
    for field in ("org", "role", "requested_by"):
        assert task[field]["pattern"] == TOKEN_PATTERN, field
    assert task["org"]["not"] == {"const": "system"}
    assert "without an offset it is UTC" in task["created_at"]["description"]
