"""Tenants: server configs that keep organisations apart, and connections as one of them.

    lab = agentlab.start(tenants=["acme", "globex"])      # one NATS account per tenant
    acme = lab.tenant("acme")                             # a TenantClient
    print(lab.tenants.config(redact=True))                # what the server was given

``config`` renders the three models (accounts, users, seed 000's verbatim) and holds the
generated credentials; ``client`` is the connection as one tenant.
"""

from .client import TenantClient, explain_tenant_refusals
from .config import MODELS, Credentials, TenantAssets, TenantLimits, Tenants, UnknownTenant

__all__ = ["MODELS", "Credentials", "TenantAssets", "TenantClient", "TenantLimits", "Tenants",
           "UnknownTenant", "explain_tenant_refusals"]
