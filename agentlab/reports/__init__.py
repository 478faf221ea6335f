"""Stream and consumer reports of any server, with the ``nats`` CLI's columns.

    from agentlab.reports import stream_report, consumer_report
    stream_report(lab)                                   # a table in Jupyter and a terminal
    consumer_report(lab, "AGENT_TASKS").row("cto").oldest_unprocessed_age   # seconds

They know streams and consumers, not agents, so every layer above the core may use them: the
organisation's health monitor, the observer, the CLI's ``agentlab status``.
"""

from .render import format_bytes, format_count, format_duration, natural_width
from .report import (
    ConsumerReport,
    ConsumerRow,
    StreamReport,
    StreamRow,
    aconsumer_report,
    astream_report,
    consumer_report,
    status_reports,
    stream_report,
)
from .unprocessed import afind_oldest_unprocessed, oldest_unprocessed

__all__ = ["ConsumerReport", "ConsumerRow", "StreamReport", "StreamRow", "aconsumer_report",
           "astream_report", "consumer_report", "afind_oldest_unprocessed", "format_bytes",
           "format_count", "format_duration", "natural_width", "oldest_unprocessed",
           "status_reports", "stream_report"]
