"""Every error agentlab raises, each one naming what went wrong and how to fix it.

All of them derive from :class:`AgentlabError`, and also from the built-in exception a
Python programmer would reach for first (``ValueError``, ``TimeoutError``, ...), so
``except TimeoutError`` works as well as ``except agentlab.RequestTimeout``.
"""

from __future__ import annotations


class AgentlabError(Exception):
    """Base class of every error agentlab raises."""


class BadSubject(AgentlabError, ValueError):
    """A subject or subject token that NATS would reject or misroute."""


class MessageDecodeError(AgentlabError, ValueError):
    """Bytes received on a subject that are not the JSON message that was expected."""

    def __init__(self, subject: str | None, reason: str, data: bytes = b""):
        self.subject = subject
        self.reason = reason
        self.data = data
        preview = data[:80].decode("utf-8", "replace")
        where = f"on subject '{subject}'" if subject else "(no subject)"
        super().__init__(
            f"Could not decode the message received {where}: {reason}. "
            f"First bytes: {preview!r}. The sender must publish UTF-8 JSON matching "
            "the schema (see agentlab.messages.export_schemas())."
        )


class PayloadTooLarge(AgentlabError, ValueError):
    """A payload over the server's ``max_payload`` (or a stream's ``max_msg_size``)."""

    def __init__(self, subject: str, size: int, limit: int, limit_name: str = "server's max_payload"):
        self.subject, self.size, self.limit = subject, size, limit
        super().__init__(
            f"Payload of {size:,} bytes for subject '{subject}' is over the {limit_name} of "
            f"{limit:,} bytes. Store large data in the JetStream object store and send a "
            "reference, or raise the limit in the server or stream config."
        )


class ServerUnreachable(AgentlabError, ConnectionError):
    """No NATS server answered at the URL."""

    def __init__(self, url: str, reason: str = ""):
        self.url = url
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"Could not connect to a NATS server at {url}{detail}. "
            "Start one with `agentlab server` (or `agentlab.start()` in Python), or unset "
            "AGENTLAB_NATS_URL to let agentlab start its own embedded server."
        )


class AuthenticationFailed(AgentlabError, PermissionError):
    """The server refused the credentials."""

    def __init__(self, url: str, identity: str | None):
        self.url, self.identity = url, identity
        who = f"user '{identity}'" if identity else "an anonymous connection"
        super().__init__(
            f"The NATS server at {url} refused {who}: authorization violation. "
            "Check the user name and password (or nkey/creds) for this tenant."
        )


class PermissionDenied(AgentlabError, PermissionError):
    """The server's permissions forbid this identity an action on a subject."""

    def __init__(self, action: str, subject: str, identity: str | None, server_text: str = "",
                 hint: str = ""):
        self.action, self.subject, self.identity = action, subject, identity
        who = f"user '{identity}'" if identity else "this connection"
        said = f" Server said: {server_text}." if server_text else ""
        fix = hint or (
            f"Allow '{subject}' in that user's {action} permissions, or use a subject inside "
            "the user's own namespace."
        )
        super().__init__(f"Permission denied: {who} may not {action} to '{subject}'.{said} {fix}")


class NoResponders(AgentlabError, LookupError):
    """A request went to a subject that nobody is subscribed to."""

    def __init__(self, subject: str):
        self.subject = subject
        super().__init__(
            f"No responders on '{subject}': nothing is subscribed to answer this request. "
            "Start a responder first (client.serve(subject, handler)) or check the subject."
        )


class RequestTimeout(AgentlabError, TimeoutError):
    """A responder exists (or may exist) but did not answer in time."""

    def __init__(self, subject: str, timeout: float, what: str = "request"):
        self.subject, self.timeout = subject, timeout
        super().__init__(
            f"The {what} on '{subject}' got no answer within {timeout:g} s. The responder "
            "may be busy or stuck; raise timeout= or look at the responder's logs."
        )


class NoMessage(AgentlabError, TimeoutError):
    """Waited for the next message on a subscription and none came."""

    def __init__(self, subject: str, timeout: float):
        self.subject, self.timeout = subject, timeout
        super().__init__(
            f"No message arrived on '{subject}' within {timeout:g} s. Is anything publishing "
            "to a subject this pattern matches? (agentlab.subjects.subject_matches can tell.)"
        )


class SubscriptionClosed(AgentlabError, RuntimeError):
    def __init__(self, subject: str):
        self.subject = subject
        super().__init__(
            f"The subscription on '{subject}' was closed (unsubscribed, or its connection "
            "closed), so no more messages will come. Subscribe again to keep reading."
        )


class WrongThread(AgentlabError, RuntimeError):
    """A blocking call made on agentlab's own event-loop thread, where it would deadlock."""

    def __init__(self, operation: str):
        self.operation = operation
        super().__init__(
            f"{operation}() blocks, and it was called on agentlab's event-loop thread "
            "(from an async handler?), where waiting would deadlock. "
            f"Use the awaitable twin instead: `await ...a{operation}(...)`."
        )


class ClientClosed(AgentlabError, RuntimeError):
    """An operation on a client (or lab) that has been closed."""

    def __init__(self, name: str):
        super().__init__(
            f"The connection '{name}' is closed. Open a new one with lab.connect(...) "
            "or call agentlab.start() again."
        )


class JetStreamError(AgentlabError):
    """The JetStream API refused a request; the message says which stream or consumer."""

    def __init__(self, message: str, code: int | None = None, err_code: int | None = None):
        self.code, self.err_code = code, err_code
        super().__init__(message)


class StreamNotFound(JetStreamError, LookupError):
    def __init__(self, stream: str):
        self.stream = stream
        super().__init__(
            f"Stream '{stream}' does not exist on this server. Declare it first with "
            "client.js.declare_stream(StreamSpec(name=...)); client.js.streams() lists the "
            "ones there.",
            404,
            10059,
        )


class ConsumerNotFound(JetStreamError, LookupError):
    def __init__(self, stream: str, consumer: str):
        self.stream, self.consumer = stream, consumer
        super().__init__(
            f"Consumer '{consumer}' does not exist on stream '{stream}'. Declare it first "
            "with client.js.declare_consumer(stream, ConsumerSpec(durable=...)).",
            404,
            10014,
        )


class NotAStream(JetStreamError, LookupError):
    """A JetStream publish to a subject no stream captures."""

    def __init__(self, subject: str):
        self.subject = subject
        super().__init__(
            f"No stream captures subject '{subject}', so nothing stored the message. "
            "Declare a stream whose subjects match it, or use plain publish() for "
            "fire-and-forget messages."
        )
