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
            "the schema (see agentlab.wire.messages.export_schemas())."
        )


class PayloadTooLarge(AgentlabError, ValueError):
    """A payload over the server's ``max_payload`` (or a stream's ``max_msg_size``)."""

    def __init__(self, subject: str, size: int, limit: int,
                 limit_name: str = "server's max_payload"):
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
        fix = ("Check the user name and password (or nkey/creds) for this tenant." if identity
               else "agentlab's servers admit only their own login: open connections from "
               "the lab (lab.connect(...)), give an outside client **lab.login(), or give "
               "another process lab.client_env() (AGENTLAB_NATS_URL and "
               "AGENTLAB_NATS_CREDENTIALS, the file `agentlab server` prints).")
        super().__init__(f"The NATS server at {url} refused {who}: authorization violation. "
                         + fix)


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
            "to a subject this pattern matches? (agentlab.core.subjects.subject_matches can tell.)"
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


class BridgeStopped(AgentlabError, RuntimeError):
    """agentlab's event loop has stopped (the process is exiting): nothing more can run on it."""

    def __init__(self, operation: str):
        self.operation = operation
        super().__init__(
            f"{operation}() cannot run: agentlab's event loop has stopped, because the Python "
            "process is exiting. Nothing is left to wait for; a new process starts a new loop.")


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


class MessageNotFound(JetStreamError, LookupError):
    """No message at that sequence of a stream (or, with a subject, none at or after it)."""

    def __init__(self, stream: str, seq: int, subject: str | None = None):
        self.stream, self.seq, self.subject = stream, seq, subject
        where = f"at or after sequence {seq} on '{subject}'" if subject else f"at sequence {seq}"
        super().__init__(
            f"Stream '{stream}' has no message {where}: it was never stored there, or was "
            "deleted, acknowledged out of a work queue, expired or purged since. "
            "client.js.stream_info(stream).state shows the first and last sequence stored.",
            404,
            10037,
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


class JetStreamUnavailable(JetStreamError, ConnectionError):
    """No JetStream answered: the server is restarting, or JetStream is not running there."""

    def __init__(self, action: str, why: str = "no responders"):
        self.action = action
        super().__init__(
            f"No JetStream responded when asked to {action} ({why}): the server is "
            "restarting, or JetStream is not enabled on it. Retry in a moment; if it "
            "persists, run nats-server with JetStream on (-js, or a jetstream {} block in "
            "its config).",
            503,
        )


class LeaderElection(JetStreamUnavailable):
    """JetStream is electing a leader (of a stream, or of the cluster's JetStream itself)."""

    def __init__(self, action: str, said: str, stream: str | None = None,
                 err_code: int | None = None):
        self.action, self.stream = action, stream
        of = f" for stream '{stream}'" if stream else ""
        JetStreamError.__init__(
            self,
            f"JetStream is electing a leader{of} and could not {action} ({said}); retry in a "
            "moment. A cluster elects one within seconds of losing a node, as long as most "
            "of the replicas are running.",
            503,
            err_code,
        )


class JetStreamTimeout(JetStreamError, TimeoutError):
    """A JetStream API request got no answer in time."""

    def __init__(self, action: str, timeout: float):
        self.action, self.timeout = action, timeout
        super().__init__(
            f"JetStream did not answer within {timeout:g} s when asked to {action} (the "
            "request timed out). A cluster electing a leader (for a few seconds after it "
            "loses a node), a restarting or overloaded server does this: retry in a moment, "
            "and if it persists look at the server's health (its /jsz monitoring page).",
            408,
        )


class JetStreamNotEnabled(JetStreamError, RuntimeError):
    """The server, or this connection's account, has no JetStream."""

    def __init__(self, action: str, said: str, err_code: int | None = None):
        self.action = action
        super().__init__(
            f"JetStream is not enabled here, so it could not {action} ({said}). Turn it on "
            "in the server (-js, or a jetstream {} block) and for the account "
            "(`jetstream: enabled` in its config), or connect as a user of an account that "
            "has it.",
            503,
            err_code,
        )


class PublishTimeout(RequestTimeout, JetStreamError):
    """A JetStream publish got no receipt in time: the message may or may not be stored."""

    def __init__(self, subject: str, timeout: float):
        self.subject, self.timeout = subject, timeout
        self.code, self.err_code = 408, None
        AgentlabError.__init__(
            self,
            f"No stream acknowledged the message published on '{subject}' within "
            f"{timeout:g} s, so it may or may not be stored. A stream electing a leader (for "
            "a few seconds after a cluster loses a node), a restarting or overloaded server "
            "does this: publish it again with the same msg_id (if the first copy was stored, "
            "the stream drops the resend as a duplicate), or raise timeout=.",
        )


# -- what the JetStream API's error codes (nats-server's errors.json) mean to a user ----------
STREAM_NOT_FOUND, CONSUMER_NOT_FOUND, NO_MESSAGE_FOUND = 10059, 10014, 10037
# "JetStream system temporarily unavailable", "cluster can not handle request", "incomplete
# results": a cluster without a (meta) leader for the moment.
_ELECTING = {10004, 10008, 10009}
_NOT_ENABLED = {10039, 10076}  # for this account, on this server
JETSTREAM_HINTS = {
    10099: "A work-queue stream allows only one consumer without a filter. Give each consumer "
           "its own, non-overlapping filter_subject.",
    10100: "On a work-queue stream each consumer must filter a different, non-overlapping "
           "subject. Give this consumer its own filter_subject.",
    10166: "Declare the stream with allow_msg_ttl=True to publish with ttl=.",
    10167: "The stream's ingest queue is full: nats-server holds at most max_buffered_msgs "
           "messages and max_buffered_size bytes per stream received but not yet stored "
           "(its jetstream {} block; defaults 100,000 and 128 MB) and refused this one, so it "
           "is not stored. Publish it again after a pause (with the same msg_id, if it has "
           "one), keep fewer publishes waiting for their receipts, or raise the limits "
           "(agentlab.start(max_buffered_msgs=..., max_buffered_size=...)).",
    10071: "Nats-Msg-Id must not be empty.",
    10077: "This stream keeps one message per subject and refuses any later one (discard: new "
           "per subject): that subject has its message. In TASK_LEDGER it means the task is "
           "recorded already; the first record stands.",
}


def jetstream_api_error(code: int | None, err_code: int | None, description: str | None,
                        action: str, stream: str, consumer: str | None = None,
                        hint: str = "") -> JetStreamError:
    """The error for a JetStream API refusal of ``action`` on ``stream`` (and ``consumer``)."""
    # Only the server's own 10059 means the stream does not exist: a stream without a
    # leader, or a JetStream that is away, says something else (or nothing at all).
    if err_code == STREAM_NOT_FOUND:
        return StreamNotFound(stream)
    if err_code == CONSUMER_NOT_FOUND and consumer:
        return ConsumerNotFound(stream, consumer)
    unavailable = jetstream_unavailable(code, err_code, description, action)
    if unavailable is not None:
        return unavailable
    hint = hint or JETSTREAM_HINTS.get(err_code or 0, "")
    return JetStreamError(f"JetStream could not {action}: {description} "
                          f"(err_code {err_code}). {hint}".rstrip(), code, err_code)


def jetstream_unavailable(code: int | None, err_code: int | None, description: str | None,
                          action: str) -> JetStreamError | None:
    """The answers that mean JetStream cannot do anything for now (or here), whatever was
    asked; None for the others."""
    if code is None and err_code is None:
        return JetStreamUnavailable(action)  # nats-py's ServiceUnavailableError: no responders
    said = f"{code} {description} (err_code {err_code})"
    if err_code in _NOT_ENABLED:
        return JetStreamNotEnabled(action, said, err_code)
    if err_code in _ELECTING:
        return LeaderElection(action, said, err_code=err_code)
    return None
