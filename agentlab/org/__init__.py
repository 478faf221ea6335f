"""The reference organisation of the seed articles: agents, their streams and what they share.

    from agentlab.org import Organisation
    org = Organisation(lab, "acme").start()     # CEO, CTO and CFO agents, working
    org.assign("Launch the product")

Everything a notebook, a test or a program needs from the organisation is named here;
importing this package also registers every organisation wire model for ``agentlab schemas``.
The layers it sits on are drawn in docs/architecture.md.
"""

from .agent import Agent, task_consumer_spec
from .audit import AuditRecord, replay
from .autoscale import Autoscaler, ScalingDecision
from .context import TaskContext
from .deadletters import DeadLetterNotFound, DeadLetterOffice, letter_summary
from .delegation import apublish_task, publish_task
from .desk import HeldTask, NotHeld, TaskDesk
from .health import AgentHealth, HealthMonitor, QueueMetrics, ScalingSignal, SystemMetrics
from .intents import IntentQueue, publish_intent
from .leases import LEASE_BUCKET, Lease, LeaseHolder, LeasesUnavailable, TaskLeases
from .ledger import LEDGER_BUCKET, LedgerRootConflict, TaskLedger
from .meetings import (
    Meeting,
    MeetingEntry,
    MeetingFeed,
    MeetingInvitation,
    aattend_meetings,
    attend_meetings,
)
from .models import (
    AgentAction,
    AgentStatus,
    DeadLetter,
    ErrorReply,
    FailureRecord,
    Heartbeat,
    Heartbeats,
    Task,
    TaskCompleted,
)
from .organisation import Organisation
from .roles import (
    REFERENCE_ROLES,
    TransientFailure,
    ceo_handler,
    cfo_handler,
    cto_handler,
    default_roles,
)
from .saga import Saga, SagaRequest, SagaResult, SagaStep, StepFailure
from .services import DelegateAccepted, DelegateRequest
from .sharedtools import SharedToolError, SharedToolPool, acall_shared_tool, call_shared_tool
from .streams import (
    DLQ_STREAM,
    EVENTS_STREAM,
    INTENT_STREAM,
    MEETINGS_STREAM,
    TASK_STREAM,
    TOOL_REQUEST_STREAM,
    TOOL_RESULT_STREAM,
    declare_reference_streams,
    declare_replicated_streams,
    reference_assets,
    reference_streams,
)
from .tools import (
    PayloadMissing,
    RetryableToolError,
    ToolCall,
    ToolClient,
    ToolError,
    ToolFailure,
    ToolResult,
    ToolTimeout,
    ToolWorkerPool,
)
from .triggers import Event, aemit_event, aon_event, emit_event, event_subject, on_event
from .workloop import retry_delay

__all__ = [
    # the organisation and its agents
    "Organisation", "Agent", "TaskContext", "REFERENCE_ROLES", "default_roles", "ceo_handler",
    "cto_handler", "cfo_handler", "TransientFailure", "retry_delay", "publish_task",
    "apublish_task", "task_consumer_spec", "TaskDesk", "HeldTask", "NotHeld",
    # wire models
    "Task", "TaskCompleted", "AgentAction", "Heartbeat", "Heartbeats", "DeadLetter", "Event",
    "MeetingInvitation", "MeetingEntry", "SagaRequest", "ToolCall", "ToolResult",
    "QueueMetrics", "AgentHealth", "SystemMetrics", "ScalingSignal", "AgentStatus",
    "ErrorReply", "FailureRecord", "DelegateRequest", "DelegateAccepted",
    # streams (the one place their names are written) and the ledger
    "TASK_STREAM", "EVENTS_STREAM", "MEETINGS_STREAM", "TOOL_REQUEST_STREAM",
    "TOOL_RESULT_STREAM", "DLQ_STREAM", "INTENT_STREAM", "reference_streams",
    "declare_reference_streams", "declare_replicated_streams", "reference_assets", "TaskLedger",
    "LEDGER_BUCKET", "LedgerRootConflict", "TaskLeases", "Lease", "LeaseHolder",
    "LeasesUnavailable", "LEASE_BUCKET",
    # patterns
    "DeadLetterOffice", "DeadLetterNotFound", "letter_summary", "HealthMonitor", "Autoscaler",
    "ScalingDecision",
    "Meeting", "MeetingFeed", "attend_meetings", "aattend_meetings", "ToolClient",
    "ToolWorkerPool", "ToolError", "ToolFailure", "ToolTimeout", "RetryableToolError",
    "PayloadMissing", "SharedToolPool", "SharedToolError", "call_shared_tool",
    "acall_shared_tool", "Saga", "SagaStep", "SagaResult", "StepFailure", "IntentQueue",
    "publish_intent", "emit_event", "aemit_event", "on_event", "aon_event", "event_subject",
    "AuditRecord", "replay",
]
