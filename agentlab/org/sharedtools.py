"""One tool-worker pool serving every tenant, shared deliberately and visibly.

    pool = SharedToolPool(lab.tenant("tools"), {"search": search}).start()
    acme = lab.tenant("acme")
    call_shared_tool(acme, "search", query="nats")      # -> search(query="nats")

A tenant requests ``<its root>.shared.tools.<tool>``. In the accounts model that subject is
a service import: the server carries the request into the TOOLS account as
``genbrain.<tenant>.shared.tools.<tool>`` (the tenant token is stamped by the server's
import mapping, so a tenant cannot claim to be another), and the reply goes straight back
to the requester's private inbox. No tenant can see another's requests or results: they
never enter its account. In the users model the tenant publishes that subject itself; its
permissions allow only ``genbrain.<tenant>.>``, and the pool answers through
``allow_responses``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..core.client import Client
from ..core.lifecycle import Service
from ..core.received import Message
from ..core.subjects import DEFAULT_ROOT, validate_token
from ..core.subscription import Subscription
from ..errors import AgentlabError

log = logging.getLogger("agentlab")

__all__ = ["SharedToolError", "SharedToolPool", "call_shared_tool", "shared_tool_subject"]

QUEUE = "shared-tools"


class SharedToolError(AgentlabError, RuntimeError):
    """The shared tool ran and raised; the message carries the remote error."""

    def __init__(self, tool: str, error: str):
        self.tool, self.error = tool, error
        super().__init__(f"Shared tool '{tool}' failed: {error}")


def shared_tool_subject(client: Client, tool: str) -> str:
    """Where ``client``'s tenant calls ``tool``: ``<root>.shared.tools.<tool>``."""
    tenants, tenant = getattr(client, "tenants", None), getattr(client, "tenant", "")
    root = tenants.subjects(tenant).root if tenants is not None and tenant in tenants.names \
        else DEFAULT_ROOT
    return f"{root}.shared.tools.{validate_token(tool, 'tool')}"


def call_shared_tool(client: Client, tool: str, /, *, timeout: float = 5.0,
                     **arguments: Any) -> Any:
    """Call ``tool`` in the shared pool and return its value; SharedToolError if it failed."""
    return _unpack(tool, client.request(shared_tool_subject(client, tool), arguments,
                                        timeout=timeout))


async def acall_shared_tool(client: Client, tool: str, /, *, timeout: float = 5.0,
                            **arguments: Any) -> Any:
    return _unpack(tool, await client.arequest(shared_tool_subject(client, tool), arguments,
                                               timeout=timeout))


def _unpack(tool: str, reply: Message) -> Any:
    body = reply.json()
    if not isinstance(body, dict) or "ok" not in body:
        raise SharedToolError(tool, f"unexpected reply {reply.data[:80]!r}")
    if not body["ok"]:
        raise SharedToolError(tool, body.get("error", "unknown error"))
    return body.get("value")


class SharedToolPool(Service):
    """``workers`` members of one queue group answering ``genbrain.*.shared.tools.*``.

    ``tools`` maps a tool name to a function called with the request's JSON object as
    keyword arguments (sync functions run in agentlab's handler threads). ``served`` counts
    calls per tenant, read from the subject token the server stamped.
    """

    def __init__(self, client: Client, tools: dict[str, Callable[..., Any]], *,
                 workers: int = 2, root: str = DEFAULT_ROOT):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.client, self.tools, self.workers = client, dict(tools), workers
        self.subject = f"{root}.*.shared.tools.*"
        self.served: Counter[str] = Counter()
        self._subscriptions: list[Subscription] = []
        self._bridge = client._bridge

    async def _astart_service(self) -> None:
        for _ in range(self.workers):
            self._subscriptions.append(await self.client.asubscribe(
                self.subject, self._handle, queue=QUEUE))

    async def _astop_service(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            await sub.aunsubscribe()

    def _handle(self, msg: Message) -> None:
        tokens = msg.subject.split(".")
        tenant, tool = tokens[-4], tokens[-1]
        try:
            fn = self.tools[tool]
            arguments = msg.json() if msg.data else {}
            if not isinstance(arguments, dict):
                raise TypeError(f"arguments must be a JSON object, got {arguments!r:.60}")
            reply: dict[str, Any] = {"ok": True, "value": fn(**arguments)}
        except KeyError:
            reply = {"ok": False, "error": f"no tool '{tool}' (this pool has "
                                           f"{', '.join(sorted(self.tools))})"}
        except Exception as error:
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        self.served[tenant] += 1
        if msg.reply:
            msg.respond(reply)

    def __repr__(self) -> str:
        return (f"<SharedToolPool {', '.join(sorted(self.tools))} workers={self.workers} "
                f"{self.service_state} served={dict(self.served)}>")
