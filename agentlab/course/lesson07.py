"""Lesson 07, Tenant isolation: Globex tries to read Acme's replies, in both models.

    lesson07.check(users_globex, eavesdropper, acme)

The check does both attacks again, for real, with what the learner built. In the users model
it subscribes the learner's Globex connection to `_INBOX.acme.>`: the server must refuse,
naming Globex's user. In the accounts model it has Acme call the shared `search` tool with a
query only this check knows, and reads what the learner's `_INBOX.>` subscription received
meanwhile: none of it may be Acme's, while Acme gets its answer.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..core.client import Client
from ..core.subscription import Subscription
from ..errors import PermissionDenied
from ..org import call_shared_tool
from .check import CheckResult, Exercise, listing, not_given

EXERCISE = Exercise("07", "Can Globex steal Acme's replies?")
ACME_REPLIES = "_INBOX.acme.>"


def _who(client: Client) -> str:
    tenant = getattr(client, "tenant", None)
    tenants = getattr(client, "tenants", None)
    model = getattr(tenants, "model", None)
    if tenant:
        return f"{tenant} ({model} model)" if model else str(tenant)
    return f"the connection `{client.name}`"


@EXERCISE.check
def check(users_globex: Any, eavesdropper: Any, acme: Any) -> CheckResult:
    """Users model: Globex refused Acme's inbox. Accounts model: Globex's inbox hears no Acme."""
    if not_given(users_globex, eavesdropper):
        return EXERCISE.not_done(
            "there is no `users_globex` connection or `eavesdropper` subscription yet (the cell "
            "still says `...`)",
            "`users_globex = connect(users, users_server, \"globex\", \"globex-eavesdropper\")`, "
            "then `eavesdropper = globex.subscribe(\"_INBOX.>\")`")
    if not isinstance(users_globex, Client):
        return EXERCISE.failed(
            f"`users_globex` is a {type(users_globex).__name__}, not a connection",
            "`connect(users, users_server, \"globex\", ...)` returns one")
    if not isinstance(eavesdropper, Subscription):
        return EXERCISE.failed(
            f"`eavesdropper` is a {type(eavesdropper).__name__}, not a subscription",
            "`globex.subscribe(\"_INBOX.>\")` returns one")

    # 1. The users model: the server must refuse Globex Acme's reply subjects.
    try:
        probe = users_globex.subscribe(ACME_REPLIES)
    except PermissionDenied as error:
        refused = error
    else:
        probe.unsubscribe()
        model = getattr(getattr(users_globex, "tenants", None), "model", "")
        why = (f"in the accounts model `{ACME_REPLIES}` is a subject like any other of the "
               "tenant's own account" if model == "accounts" else
               "this connection may read Acme's replies")
        return EXERCISE.failed(
            f"{_who(users_globex)} subscribed to `{ACME_REPLIES}` without an error: {why}",
            "the first part is about the users model: connect as Globex to `users_server`, "
            "`connect(users, users_server, \"globex\", \"globex-eavesdropper\")`")
    if refused.identity and "globex" not in refused.identity.lower():
        return EXERCISE.failed(
            f"the server refused `{ACME_REPLIES}` to user '{refused.identity}', not to Globex",
            "connect as \"globex\": `connect(users, users_server, \"globex\", ...)`")

    # 2. The accounts model: Acme calls the shared tool; does the eavesdropper hear it?
    if eavesdropper.subject != "_INBOX.>":
        return EXERCISE.failed(
            f"your subscription listens on `{eavesdropper.subject}`; the exercise's "
            "eavesdropper listens to every inbox of its account, `_INBOX.>`",
            "`eavesdropper = globex.subscribe(\"_INBOX.>\")`")
    if not isinstance(acme, Client):
        return EXERCISE.failed(
            f"the third argument is a {type(acme).__name__}, not Acme's connection",
            "pass `acme`, Acme's connection to the accounts model's server")
    marker = f"lesson 07 check {uuid.uuid4().hex[:8]}"
    answer = call_shared_tool(acme, "search", query=marker)
    heard = eavesdropper.messages(timeout=0.5)
    overheard = [m for m in heard if marker in m.text]
    if overheard:
        return EXERCISE.failed(
            f"your `_INBOX.>` subscription of {_who(eavesdropper.client)} received Acme's "
            f"answer to the check's search, on {listing(m.subject for m in overheard)}: it "
            "listens in Acme's account",
            "the eavesdropper is Globex: subscribe with Globex's connection to the accounts "
            "model's server, `globex.subscribe(\"_INBOX.>\")`")
    if not (isinstance(answer, list) and any(marker in str(line) for line in answer)):
        return EXERCISE.failed(
            f"Acme's call of the shared `search` tool answered {answer!r}, not its results",
            "is the shared tool pool of section 6 still running (`pool.is_running`)?")
    return EXERCISE.passed(
        f"users model: the server refused `{ACME_REPLIES}` to user '{refused.identity}'; "
        f"accounts model: Acme got its answer ({len(answer)} results) while your `_INBOX.>` "
        f"received {len(heard)} messages, none of them Acme's",
        f"the refusal: {refused}")
