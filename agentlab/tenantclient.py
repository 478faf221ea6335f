"""A connection as one tenant: more connections with the same credentials, its organisation,
and JetStream permission errors raised at the call (DESIGN.md decision 5).

    acme = lab.tenant("acme")              # a TenantClient
    cto = acme.connect("cto")              # another connection as acme
    org = acme.organisation().start()      # the reference org, every agent connected as acme
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .client import Client
from .errors import PermissionDenied

if TYPE_CHECKING:
    from .tenants import Tenants

__all__ = ["TenantClient", "fail_fast_on_denied_requests", "tenant_organisation"]


class TenantClient(Client):
    """A connection as one tenant; ``connect()`` opens more with the same credentials."""

    tenant: str = ""
    tenants: Tenants | None = None

    def connect(self, name: str) -> TenantClient:
        """Another connection as this tenant (one per agent, as separate processes would)."""
        return self.tenants.connect(self.url, self.tenant, name=name)  # type: ignore[union-attr]

    async def aconnect(self, name: str) -> TenantClient:
        return await self.tenants.aconnect(self.url, self.tenant,  # type: ignore[union-attr]
                                           name=name)

    def organisation(self, **options: Any) -> Any:
        """The reference organisation of this tenant (accounts model), agents connected as it."""
        return tenant_organisation(self, **options)


def tenant_organisation(client: TenantClient, **options: Any) -> Any:
    """``Organisation(client, client.tenant)`` whose agents each connect as the tenant."""
    from .org.organisation import Organisation

    tenants = client.tenants
    assert tenants is not None
    if tenants.model != "accounts":
        raise ValueError(
            f"The reference organisation uses the seed's fixed stream names (AGENT_TASKS, ...), "
            f"which only the accounts model gives every tenant; this lab uses "
            f"model={tenants.model!r}. Start it with agentlab.start(tenants=[...]).")

    class TenantOrganisation(Organisation):
        def _connect(self, name: str) -> Client:
            connection = client.connect(f"{client.tenant}-{name}")
            self._clients.append(connection)
            return connection

    options.setdefault("subjects", tenants.subjects(client.tenant))
    return TenantOrganisation(client, client.tenant, **options)


def fail_fast_on_denied_requests(client: Client, who: str) -> None:
    """Make nats-py's own requests (JetStream API, KV) raise PermissionDenied when refused.

    The server answers a forbidden publish with an asynchronous ``-ERR`` only, so a JetStream
    call on another tenant's stream would otherwise wait out its 5 s timeout. agentlab's
    violation log already sees the ``-ERR``; this fails the waiting request with it.
    """
    nc, violations = client.nc, client._violations
    violations.identity = client.identity or who  # errors name the user, i.e. the tenant
    waiting: dict[str, list[asyncio.Future]] = {}
    chained = violations.on_publish_denied

    def on_denied(subject: str, error: BaseException) -> None:
        if chained is not None:
            chained(subject, error)
        for future in waiting.pop(subject, []):
            if not future.done():
                future.set_exception(error)

    violations.on_publish_denied = on_denied
    original = nc.request

    async def request(subject: str, payload: bytes = b"", timeout: float = 0.5,
                      old_style: bool = False, headers: dict[str, Any] | None = None) -> Any:
        try:
            violations.raise_if_known_denied("publish to", subject)
        except PermissionDenied:
            raise _denied(subject, violations.identity, who) from None
        key = subject.lower()
        denied = asyncio.get_running_loop().create_future()
        waiting.setdefault(key, []).append(denied)
        answer = asyncio.ensure_future(original(subject, payload, timeout=timeout,
                                                old_style=old_style, headers=headers))
        try:
            await asyncio.wait({answer, denied}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            answer.cancel()
            raise
        finally:
            if denied in waiting.get(key, []):
                waiting[key].remove(denied)
                if not waiting[key]:
                    del waiting[key]
        if answer.done():
            if denied.done() and not denied.cancelled():
                denied.exception()  # retrieved: the answer won the race
            denied.cancel()
            return answer.result()
        answer.cancel()
        denied.exception()
        raise _denied(subject, violations.identity, who) from None

    nc.request = request  # the JetStream context calls nc.request: it now comes here


def _denied(subject: str, identity: str | None, who: str) -> PermissionDenied:
    if not subject.startswith(("$JS.", "$KV.", "$O.")):
        return PermissionDenied("publish", subject, identity)
    return PermissionDenied(
        "publish", subject, identity, "",
        f"Tenant '{who}' may use the JetStream API of its own streams and buckets only "
        "(in the users model those are named <NAME>_<TENANT> and declared by the operator; "
        "in the accounts model every stream in the tenant's account is its own).")
