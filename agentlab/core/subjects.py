"""NATS subject names for agentlab: validation, wildcard matching, and the subject hierarchy.

Usage::

    from agentlab.core.subjects import Subjects, subject_matches
    s = Subjects()                                 # root "genbrain"
    s.tasks("cto")                                 # 'genbrain.agents.cto.tasks'
    subject_matches(s.tasks("*"), s.tasks("cto"))  # True: '*' builds a pattern
    print(Subjects.tree())                         # the whole hierarchy, with placeholders

The rules are the NATS server's: tokens are separated by '.' and are non-empty with no
whitespace; a token that is exactly '*' matches one token, a last token that is exactly '>'
matches one or more. Any other token, 'a*' included, is literal to the server, so you may
publish to it; but nats-py's subscribe() refuses such tokens, so patterns and builder
arguments may not contain them.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
from collections.abc import Callable

from agentlab.errors import BadSubject

__all__ = ["DEFAULT_ROOT", "Subjects", "check_name", "check_publish_subject",
           "check_reply_subject", "check_subscribe_subject", "subject_matches", "validate_token"]

DEFAULT_ROOT = "genbrain"

# Exactly the characters nats-server refuses in a subject; other Unicode spaces are literal.
_WHITESPACE = {" ": "a space", "\t": "a tab", "\r": "a carriage return",
               "\n": "a line feed", "\f": "a form feed"}
_WHITESPACE_RUN = re.compile("[ \t\r\n\f]+")
_SEPARATOR_RUN = re.compile("[ \t\r\n\f.]+")


def _first_whitespace(text: str) -> str | None:
    return next((_WHITESPACE[c] for c in text if c in _WHITESPACE), None)


@functools.lru_cache(maxsize=4096)
def _token_problem(token: object, what: str) -> str | None:
    if not isinstance(token, str):
        return f"{what} must be a str, got {type(token).__name__} {token!r}"
    if token == "":
        return f"{what} '' is empty; NATS subject tokens must be non-empty; pass e.g. 'worker-1'"
    if token == ">":
        return (f"{what} '>' is the multi-token wildcard, which builders do not accept; "
                f"pass '*' to match any single {what}, or use a *_all() builder")
    stem = _SEPARATOR_RUN.sub("-", token.replace("*", "").replace(">", "")).strip("-")
    fix = f"a name such as {stem!r}" if stem else "a name such as 'worker-1'"
    if "-" in stem:
        fix += f" or {stem.replace('-', '_')!r}"
    space = _first_whitespace(token)
    if space or "." in token:
        flaw = f"contains {space}" if space else "contains '.', which would make it two tokens"
        return (f"{what} {token!r} {flaw}; NATS subject tokens cannot contain whitespace or '.'; "
                f"use {fix}")
    if token != "*" and ("*" in token or ">" in token):
        return (f"{what} {token!r} mixes a wildcard character with others; the server would take "
                "it literally, but nats-py refuses to subscribe to such subjects; pass exactly "
                f"'*' for a pattern, or {fix}")
    return None


def validate_token(token: str, what: str = "token") -> str:
    """Return `token` if it can be one subject token, or is '*'; else raise BadSubject.

    `what` names the argument in the message: "role", "org", ...
    """
    try:
        problem = _token_problem(token, what)
    except TypeError:  # unhashable, so not a str either
        problem = f"{what} must be a str, got {type(token).__name__}"
    if problem is not None:
        raise BadSubject(problem)
    return token


def _subject_problem(subject: object, publish: bool) -> str | None:
    """The message saying why `subject` cannot be published to (or subscribed to), or None."""
    verb = "publish to" if publish else "subscribe to"
    if not isinstance(subject, str):
        return f"Cannot {verb} {subject!r}: a subject must be a str, got {type(subject).__name__}"
    if subject == "":
        return f"Cannot {verb} an empty subject; pass a subject such as 'agents.cto.tasks'"
    space = _first_whitespace(subject)
    if space:
        fix = _WHITESPACE_RUN.sub("-", subject.strip(" \t\r\n\f"))
        return (f"Cannot {verb} {subject!r}: it contains {space}; NATS subjects cannot contain "
                f"whitespace; use {fix!r}")
    tokens = subject.split(".")
    if "" in tokens:
        where = ("starts with '.'" if subject.startswith(".") else "ends with '.'"
                 if subject.endswith(".") else "has two dots in a row")
        fix = ".".join(t for t in tokens if t) or "agents.cto.tasks"
        return (f"Cannot {verb} {subject!r}: it {where}, which makes an empty token; NATS "
                f"subject tokens must be non-empty; use {fix!r}")
    for wildcard, means in (("*", "one token"), (">", "one or more tokens")):
        if publish and wildcard in tokens:
            example = ".".join("x" if t in ("*", ">") else t for t in tokens)
            return (f"Cannot publish to {subject!r}: {wildcard!r} is a wildcard (it matches "
                    f"{means}) and only subscriptions may use wildcards; publish to a concrete "
                    f"subject such as {example!r}")
    if ">" in tokens[:-1]:
        i = tokens.index(">")
        one, rest = ".".join(tokens[:i] + ["*"] + tokens[i + 1:]), ".".join(tokens[:i] + [">"])
        return (f"Cannot subscribe to {subject!r}: '>' matches all remaining tokens, so it may "
                f"only be the last token; use {one!r} to match exactly one token there, "
                f"or {rest!r} to match everything from there on")
    mixed = next((t for t in tokens if t not in ("*", ">") and ("*" in t or ">" in t)), None)
    if mixed is not None and not publish:  # nats-py refuses to subscribe, not to publish
        return (f"Cannot subscribe to {subject!r}: the token {mixed!r} mixes a wildcard "
                "character with others; the server takes it literally but nats-py refuses it; "
                "use '*' for any one token, or a name without '*' and '>'")
    return None


# One cache each, keyed on the subject alone: a one-argument key is the cheapest lookup.
_publish_problem = functools.lru_cache(maxsize=4096)(
    functools.partial(_subject_problem, publish=True))
_subscribe_problem = functools.lru_cache(maxsize=4096)(
    functools.partial(_subject_problem, publish=False))


def check_publish_subject(subject: str) -> str:
    """Return `subject` if a message can be published to it, else raise BadSubject."""
    # Runs on every publish (~300k/s), so a cache hit must be all the work done here.
    try:
        problem = _publish_problem(subject)
    except TypeError:  # unhashable, so not a str: the uncached check says so
        problem = _subject_problem(subject, publish=True)
    if problem is not None:
        raise BadSubject(problem)
    return subject


def check_subscribe_subject(subject: str) -> str:
    """Return `subject` if it is a valid subscription pattern, else raise BadSubject."""
    try:
        problem = _subscribe_problem(subject)
    except TypeError:
        problem = _subject_problem(subject, publish=False)
    if problem is not None:
        raise BadSubject(problem)
    return subject


def check_reply_subject(reply: str) -> str:
    """Return ``reply`` if it can be a message's reply subject ('' for none), else raise.

    A reply subject is written into the protocol line beside the subject, so whitespace in it
    would end the command early and start another: it gets the publish subject's rules.
    """
    if reply == "":
        return reply
    try:
        problem = _publish_problem(reply)
    except TypeError:
        problem = _subject_problem(reply, publish=True)
    if problem is not None:
        raise BadSubject("Reply subject: " + problem.replace("Cannot publish to", "cannot use", 1)
                         .replace("publish to a concrete", "use a concrete"))
    return reply


# The characters nats-server (and nats.go, nats-py) refuse in a stream or consumer name: it
# becomes a directory on the server's disk and a token of the JetStream API subjects.
_NAME_FORBIDDEN = {">": "'>'", "*": "'*'", ".": "'.'", " ": "a space", "/": "'/'",
                   "\\": "'\\'", "\t": "a tab", "\r": "a carriage return", "\n": "a line feed",
                   "\f": "a form feed"}


@functools.lru_cache(maxsize=1024)
def _name_problem(name: object, what: str) -> str | None:
    if not isinstance(name, str):
        return f"A {what} name must be a str, got {type(name).__name__} {name!r}"
    if name == "":
        return f"A {what} name is required; pass a name such as 'AGENT_TASKS' or 'cto'"
    bad = next((_NAME_FORBIDDEN[c] for c in name if c in _NAME_FORBIDDEN), None)
    if bad is not None:
        fix = re.sub("[>*. /\\\\\t\r\n\f]+", "_", name).strip("_") or "AGENT_TASKS"
        return (f"The {what} name {name!r} contains {bad}; JetStream names cannot contain "
                f"'.', '*', '>', '/', '\\' or whitespace; use {fix!r}")
    return None


def check_name(name: str, what: str = "stream") -> str:
    """Return ``name`` if it can name a JetStream stream, consumer or bucket, else raise."""
    try:
        problem = _name_problem(name, what)
    except TypeError:
        problem = f"A {what} name must be a str, got {type(name).__name__}"
    if problem is not None:
        raise BadSubject(problem)
    return name


def subject_matches(pattern: str, subject: str) -> bool:
    """True if a subscription to `pattern` receives a message published to `subject`."""
    check_subscribe_subject(pattern)
    check_publish_subject(subject)
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i  # '>' stands for at least one token
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


class _ClassOrInstanceMethod:
    """Lets `Subjects.tree()` run on the class (default root) as well as on an instance."""

    def __init__(self, func: Callable[[Subjects], str]):
        self.__func__, self.__doc__ = func, func.__doc__

    def __get__(self, obj: Subjects | None, cls: type[Subjects]) -> Callable[[], str]:
        return types.MethodType(self.__func__, cls() if obj is None else obj)


class Subjects:
    """Builders for agentlab's subject hierarchy under `root`; pass '*' to get a pattern."""

    __slots__ = ("_root",)

    def __init__(self, root: str = DEFAULT_ROOT):
        tokens = root.split(".") if isinstance(root, str) else [None]
        if any(token in ("", "*", ">", None) for token in tokens):
            raise BadSubject(f"root {root!r} is not concrete tokens joined by single dots; "
                             f"use e.g. {DEFAULT_ROOT!r} or 'acme.{DEFAULT_ROOT}'")
        for token in tokens:
            validate_token(token, "root token")
        self._root = root

    @property
    def root(self) -> str:
        return self._root

    def __repr__(self) -> str:
        return f"Subjects(root={self._root!r})"

    # Agents: {root}.agents.{role}.<leaf>
    def _agent(self, role: str, leaf: str) -> str:
        return f"{self._root}.agents.{validate_token(role, 'role')}.{leaf}"

    def inbox(self, role: str) -> str:
        return self._agent(role, "inbox")

    def tasks(self, role: str) -> str:
        return self._agent(role, "tasks")

    def meetings(self, role: str) -> str:
        """Meeting invitations sent to `role`."""
        return self._agent(role, "meetings")

    def heartbeat(self, role: str) -> str:
        return self._agent(role, "heartbeat")

    def heartbeats(self) -> str:
        """The beats of many agents in one message (``Heartbeats``: every agent of a process
        that beats at one interval); ``heartbeat(role)`` carries one agent's beat alone."""
        return f"{self._root}.agents.heartbeats"

    def agent_all(self, role: str) -> str:
        return self._agent(role, ">")

    def agent_service(self, role: str, org: str, endpoint: str) -> str:
        """An endpoint of the role's NATS micro service in ``org`` (org/services.py); the
        org is a token of its own because orgs sharing an account share the role's subjects."""
        org, endpoint = validate_token(org, "org"), validate_token(endpoint, "endpoint")
        return self._agent(role, f"svc.{org}.{endpoint}")

    def broadcast(self) -> str:
        return f"{self._root}.agents.broadcast"

    # Orgs: {root}.org.{org}.<leaf>, and {root}.org.system.<leaf> for the platform itself.
    def _org(self, org: str, leaf: str) -> str:
        if validate_token(org, "org") == "system":
            raise BadSubject(
                f"org 'system' is reserved: {self._root}.org.system.* carries the platform's "
                "health/scaling/metrics, and an org of that name would be mixed up with them; "
                "use another id such as 'system-org'")
        return f"{self._root}.org.{org}.{leaf}"

    def org_events(self, org: str) -> str:
        return self._org(org, "events")

    def tasks_created(self, org: str) -> str:
        return self._org(org, "tasks.created")

    def tasks_completed(self, org: str) -> str:
        return self._org(org, "tasks.completed")

    def org_metrics(self, org: str) -> str:
        """Beware: org_metrics('*') also matches system_metrics(), 'system' being in {org}."""
        return self._org(org, "metrics")

    def system_health(self) -> str:
        return f"{self._root}.org.system.health"

    def system_scaling(self) -> str:
        return f"{self._root}.org.system.scaling"

    def system_metrics(self) -> str:
        return f"{self._root}.org.system.metrics"

    # Meetings, tools, events, dead letters.
    def _meeting(self, meeting_id: str, leaf: str) -> str:
        return f"{self._root}.meetings.{validate_token(meeting_id, 'meeting_id')}.{leaf}"

    def meeting_messages(self, meeting_id: str) -> str:
        return self._meeting(meeting_id, "messages")

    def meeting_decisions(self, meeting_id: str) -> str:
        return self._meeting(meeting_id, "decisions")

    def meeting_all(self, meeting_id: str) -> str:
        return self._meeting(meeting_id, ">")

    def tool_execute(self, tool: str) -> str:
        return f"{self._root}.tools.execute.{validate_token(tool, 'tool')}"

    def tool_result(self, conversation_id: str) -> str:
        return f"{self._root}.tools.result.{validate_token(conversation_id, 'conversation_id')}"

    def tool_service(self, tool: str, endpoint: str) -> str:
        """An endpoint of a tool worker pool's NATS micro service (org/services.py): beside
        ``tools.execute``, so TOOL_REQUESTS never stores its requests."""
        tool, endpoint = validate_token(tool, "tool"), validate_token(endpoint, "endpoint")
        return f"{self._root}.tools.svc.{tool}.{endpoint}"

    def event(self, event_type: str) -> str:
        return f"{self._root}.events.{validate_token(event_type, 'event_type')}"

    def call_intent(self, kind: str) -> str:
        """Short-lived intents with a per-message TTL (seed 004): ``call.intent.{kind}``."""
        return f"{self._root}.call.intent.{validate_token(kind, 'intent kind')}"

    def dlq(self, stream: str = "*", consumer: str = "*") -> str:
        """Dead letters of `consumer` on `stream`; both default to '*' (a pattern)."""
        stream, consumer = validate_token(stream, "stream"), validate_token(consumer, "consumer")
        return f"{self._root}.dlq.{stream}.{consumer}"

    def dlq_all(self) -> str:
        return f"{self._root}.dlq.>"

    def everything(self) -> str:
        return f"{self._root}.>"

    @_ClassOrInstanceMethod
    def tree(self) -> str:
        """The hierarchy as a text tree, each subject labelled with the builder that makes it."""
        # Drawn by calling every builder with '{placeholder}' tokens, so it cannot drift.
        nested: dict = {}
        for name, member in vars(Subjects).items():
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            params = list(inspect.signature(member).parameters)[1:]
            subject, node = getattr(self, name)(*(f"{{{p}}}" for p in params)), nested
            for token in subject[len(self._root) + 1:].split("."):
                node = node.setdefault(token, {})
            node[None] = f"{name}({', '.join(params)})"
        lines = [self._root]

        def draw(node: dict, indent: str) -> None:
            keys = [k for k in node if k is not None]
            for key in keys:
                last = key == keys[-1]
                text = f"{indent}{'└── ' if last else '├── '}{key}"
                lines.append(f"{text:<40}{node[key][None]}" if None in node[key] else text)
                draw(node[key], indent + ("    " if last else "│   "))

        draw(nested, "")
        return "\n".join(lines)
