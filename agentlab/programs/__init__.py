"""The programs built on the layers below: what the ``agentlab`` command runs.

    cli            ``agentlab server | demo | status | dlq | audit | schemas | mcp | metrics |
                   dashboard | certs``
    server         ``agentlab server``: an embedded nats-server in the foreground
    demo           the tour of the whole organisation (``agentlab demo``, ``make demo``)
    basics         the first steps, one at a time (``agentlab demo --basics``)
    worker         one agent in a process of its own (``python -m agentlab.programs.worker``)
    tenant_audit   every cross-tenant action tried on live servers (``agentlab audit``)
    mcp_hub        the MCP agent hub (``agentlab mcp``)
    dashboard      the dashboard as a web page of its own, served by Voila (``agentlab dashboard``)
    certs          a CA and certificates for the compose deployment's TLS (``agentlab certs``)

    from agentlab.programs import audit
    print(audit(lab.url, lab.tenants))

Names load on first use, so that the command starts without importing the organisation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what __getattr__ below loads, named for type checkers and linters
    from .tenant_audit import AuditReport, aaudit, audit, audit_models

__all__ = ["AuditReport", "aaudit", "audit", "audit_models"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".tenant_audit", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
