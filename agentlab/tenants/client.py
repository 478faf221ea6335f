"""A connection as one tenant: more connections with the same credentials, its organisation,
and JetStream permission errors raised at the call (DESIGN.md decision 5).

    acme = lab.tenant("acme")              # a TenantClient
    cto = acme.connect("cto")              # another connection as acme (Client.connect)
    org = Organisation(acme).start()       # the reference org, every agent connected as acme
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.client import Client

if TYPE_CHECKING:
    from .config import Tenants

__all__ = ["TenantClient", "explain_tenant_refusals"]


class TenantClient(Client):
    """A connection as one tenant; ``connect()`` opens more with the same credentials."""

    tenant: str = ""
    tenants: Tenants | None = None

    def _adopt(self, sibling: Client) -> None:
        assert isinstance(sibling, TenantClient)
        sibling.tenant, sibling.tenants = self.tenant, self.tenants
        explain_tenant_refusals(sibling, self.tenant)


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
