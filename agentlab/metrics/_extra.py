"""The optional dependency of the exporter: prometheus-client, the ``metrics`` extra.

    try:
        import prometheus_client
    except ImportError as missing:
        raise MetricsExtraMissing() from missing     # says what to install
"""

from __future__ import annotations

from ..errors import AgentlabError

__all__ = ["MetricsExtraMissing"]


class MetricsExtraMissing(AgentlabError, ImportError):
    """prometheus-client, the ``metrics`` extra, is not installed."""

    def __init__(self) -> None:
        super().__init__("agentlab metrics needs prometheus-client: pip install "
                         "'agentlab-nats[metrics]' (or pip install prometheus-client).")
