"""agentlab: AI agents talking over NATS and JetStream, from Jupyter or a script.

    import agentlab
    lab = agentlab.start()                     # a real nats-server with JetStream
    lab.publish("genbrain.agents.cto.inbox", {"hello": "cto"})
"""

from .core.client import Client
from .errors import (
    AgentlabError,
    AuthenticationFailed,
    BadSubject,
    ClientClosed,
    ConsumerNotFound,
    JetStreamError,
    JetStreamNotEnabled,
    JetStreamTimeout,
    JetStreamUnavailable,
    LeaderElection,
    MessageDecodeError,
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
from .core.jetstream import PubAck, PullConsumer
from .lab import Lab, connect, current_lab, start
from .wire.messages import AgentMessage
from .core.notebook import allow_asyncio_run
from .core.received import Message
from .core.server import EmbeddedServer
from .core.specs import DAY, HOUR, MINUTE, ConsumerSpec, StreamSpec
from .core.subjects import Subjects, subject_matches
from .core.subscription import Subscription

__version__ = "0.1.0"

__all__ = [
    "start", "connect", "current_lab", "Lab", "Client", "Subscription", "Message",
    "AgentMessage", "Subjects", "subject_matches", "StreamSpec", "ConsumerSpec", "PubAck",
    "PullConsumer", "EmbeddedServer", "allow_asyncio_run", "MINUTE", "HOUR", "DAY",
    "AgentlabError", "AuthenticationFailed", "BadSubject", "ClientClosed", "ConsumerNotFound",
    "JetStreamError", "JetStreamNotEnabled", "JetStreamTimeout", "JetStreamUnavailable",
    "LeaderElection", "PublishTimeout", "MessageDecodeError", "NoMessage", "NoResponders", "NotAStream",
    "PayloadTooLarge", "PermissionDenied", "RequestTimeout", "ServerUnreachable",
    "StreamNotFound", "SubscriptionClosed", "WrongThread",
]
