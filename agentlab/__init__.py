"""agentlab: AI agents talking over NATS and JetStream, from Jupyter or a script.

    import agentlab
    lab = agentlab.start()                     # a real nats-server with JetStream
    lab.publish("genbrain.agents.cto.inbox", {"hello": "cto"})

This is the front door: everything of the core a notebook or a script needs is named here.
The reference organisation's front door is ``agentlab.org``; the layers behind both are drawn
in docs/architecture.md.
"""

from .core.client import Client
from .core.credentials import Login, ScopedLogin
from .core.jetstream import PubAck, PullConsumer
from .core.notebook import allow_asyncio_run
from .core.received import Message
from .core.server import EmbeddedServer, NatsServerNotFound, find_nats_server
from .core.specs import DAY, HOUR, MINUTE, ConsumerSpec, KiB, MiB, StreamSpec
from .core.stores import KeyValueBucket, ObjectBucket
from .core.subjects import Subjects, subject_matches
from .core.subscription import Subscription
from .core.tls import TlsFailed
from .errors import (
    AgentlabError,
    AuthenticationFailed,
    BadSubject,
    BridgeStopped,
    ClientClosed,
    ConsumerNotFound,
    JetStreamError,
    JetStreamNotEnabled,
    JetStreamTimeout,
    JetStreamUnavailable,
    LeaderElection,
    MessageDecodeError,
    MessageNotFound,
    NoMessage,
    NoResponders,
    NotAStream,
    PayloadTooLarge,
    PermissionDenied,
    PublishTimeout,
    RequestTimeout,
    ServerUnreachable,
    StreamNotFound,
    SubscriptionClosed,
    WrongThread,
)
from .lab import Lab, connect, current_lab, start
from .tenants import TenantClient, Tenants
from .wire.messages import AgentMessage, WireModel, register_wire_model

__version__ = "0.1.0"  # the only place the version is written: pyproject.toml reads it

__all__ = [
    # a lab and its connections
    "start", "connect", "current_lab", "Lab", "Client", "Subscription", "Message",
    "EmbeddedServer", "find_nats_server", "NatsServerNotFound", "Tenants", "TenantClient",
    "allow_asyncio_run", "Login", "ScopedLogin",
    # subjects, messages, JetStream
    "Subjects", "subject_matches", "AgentMessage", "WireModel", "register_wire_model",
    "StreamSpec", "ConsumerSpec", "PubAck", "PullConsumer", "KeyValueBucket", "ObjectBucket",
    "MINUTE", "HOUR", "DAY", "KiB", "MiB",
    # errors (each also a built-in type: see the README's table)
    "AgentlabError", "AuthenticationFailed", "BadSubject", "BridgeStopped", "ClientClosed",
    "ConsumerNotFound",
    "JetStreamError", "JetStreamNotEnabled", "JetStreamTimeout", "JetStreamUnavailable",
    "LeaderElection", "MessageDecodeError", "MessageNotFound", "NoMessage", "NoResponders",
    "NotAStream",
    "PayloadTooLarge", "PermissionDenied", "PublishTimeout", "RequestTimeout",
    "ServerUnreachable", "StreamNotFound", "SubscriptionClosed", "TlsFailed", "WrongThread",
]
