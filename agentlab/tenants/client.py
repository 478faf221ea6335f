"""A connection as one tenant: more connections with the same credentials, its organisation,
and JetStream permission errors raised at the call (DESIGN.md decision 5).

    acme = lab.tenant("acme")              # a TenantClient
    cto = acme.connect("cto")              # another connection as acme
    org = acme.organisation().start()      # the reference org, every agent connected as acme
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ..core.client import Client
from ..errors import PermissionDenied

if TYPE_CHECKING:
    from .config import Tenants

__all__ = ["TenantClient", "explain_tenant_refusals", "tenant_organisation"]


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

    async def _aopen_like(self, name: str) -> TenantClient:
        return await self.aconnect(name)  # the tenant's inbox prefix too

    def organisation(self, **options: Any) -> Any:
        """The reference organisation of this tenant (accounts model), agents connected as it."""
        return tenant_organisation(self, **options)


def tenant_organisation(client: TenantClient, **options: Any) -> Any:
    """``Organisation(client, client.tenant)`` whose agents each connect as the tenant."""
    from ..org.organisation import Organisation

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


def explain_tenant_refusals(client: Client, who: str) -> None:
    """Refusals name the tenant, and JetStream ones say which streams a tenant may use.

    (Requests already fail fast on any server that requires auth: see
    agentlab.core.permissions.fail_fast_on_denied_requests.)
    """
    client._violations.identity = client.identity or who
    client._violations.hint_for = lambda subject: _tenant_hint(subject, who)


def _tenant_hint(subject: str, who: str) -> str:
    if not subject.startswith(("$JS.", "$KV.", "$O.")):
        return ""
    return (f"Tenant '{who}' may use the JetStream API of its own streams and buckets only "
            "(in the users model those are named <NAME>_<TENANT> and declared by the "
            "operator; in the accounts model every stream in the tenant's account is its own).")
