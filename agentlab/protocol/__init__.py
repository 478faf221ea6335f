"""The protocols that let the NATS world find and call agentlab's agents.

    services    the NATS micro services on a server (ADR-32 $SRV.PING/INFO/STATS) as a
                report; every agent and tool pool registers itself (org/services.py)
    synadia     the Synadia Agent Protocol v0.3, both ways, with agentlab's durability behind it
    asyncapi    the AsyncAPI 3.0 document of the organisation's subjects and messages
    channels    every subject, once: what asyncapi, docs/protocol.md and the tap test read

    from agentlab.protocol import service_report
    service_report(lab)                         # every service instance, with its counters

``synadia`` needs the optional SDKs (``pip install 'agentlab-nats[synadia]'``), so it is
imported by name: ``from agentlab.protocol.synadia import serve_organisation``.
"""

from .asyncapi import asyncapi_document, write_document
from .channels import CHANNELS, Channel
from .services import (
    DISCOVERY_TIMEOUT,
    ServiceReport,
    ServiceRow,
    acollect_service_answers,
    aservice_report,
    collect_service_answers,
    service_report,
)

__all__ = ["CHANNELS", "DISCOVERY_TIMEOUT", "Channel", "ServiceReport", "ServiceRow",
           "acollect_service_answers", "aservice_report", "asyncapi_document",
           "collect_service_answers", "service_report", "write_document"]
