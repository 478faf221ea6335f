"""A NATS connection you can use from a script, a notebook cell or a widget callback.

    client = agentlab.connect(name="ceo")            # or lab.connect("ceo")
    client.publish("genbrain.agents.cto.inbox", {"hello": "cto"})
    answer = client.request("genbrain.agents.cto.inbox", "ping", timeout=1)

Every blocking method has an awaitable twin with an ``a`` prefix (``await client.arequest``)
for top-level ``await`` in Jupyter and for async handlers.

Why this module is longer than ~400 lines: it is the one connection class, and each verb's
sync form sits beside its awaitable twin so that the two cannot drift apart. What is not a
verb of a live connection lives elsewhere: opening one in ``connecting.py``, the bytes on the
socket in ``_natspy/``, permission errors in ``permissions.py``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import nats
import nats.errors
from opentelemetry.trace import SpanKind

from ..errors import (
    ClientClosed,
    PayloadTooLarge,
    PermissionDenied,
    RequestTimeout,
    ServerUnreachable,
    WrongThread,
)
from ..telemetry import tracing
from ..telemetry.configure import configure_from_env_once
from ..wire.messages import to_bytes
from ._natspy import (
    Outbound,
    PendingReply,
    RequestMux,
    encode_headers,
    flush_in_order,
    pub_command,
    server_info,
)
from .bridge import Bridge, get_bridge
from .connecting import connect_nats, default_url, nats_options
from .credentials import known_login, login_for
from .permissions import FirstPublishCheck, ViolationLog, fail_fast_on_denied_requests
from .received import Message
from .subjects import check_publish_subject, check_reply_subject
from .subscription import Subscription
from .tls import tls_for

log = logging.getLogger("agentlab")

Handler = Callable[[Message], Any]
RequestSpec = tuple[str, Any]


class Client:
    """One named connection to a NATS server, living on agentlab's bridge loop."""

    def __init__(self, nc: nats.NATS, *, name: str, url: str, identity: str | None,
                 bridge: Bridge, violations: ViolationLog, unrestricted: bool = False):
        self.name = name
        self.url = url
        self.identity = identity
        self.nc = nc
        self._bridge = bridge
        self._violations = violations
        self._outbound = Outbound(bridge, nc)
        self._requests = RequestMux(bridge, nc, self._outbound)
        violations.on_publish_denied = self._requests.fail_subject
        # A login that may be refused something: not the own login of a server this process
        # runs (``unrestricted``), which may do anything, as an anonymous one once could.
        auth_required = bool(server_info(nc).get("auth_required")) and not unrestricted
        self._publish_check = FirstPublishCheck(violations, enabled=auth_required)
        if auth_required:
            fail_fast_on_denied_requests(nc, violations)
        self._subscriptions: list[Subscription] = []
        self._clients: list[Client] = []  # opened with connect(): closed with this one
        self._login: dict[str, Any] = {}  # what aopen() was given, for connect()
        self._closed = False
        self._reconnect_waiters: list[asyncio.Future] = []
        # When this connection was made: a server restarted before it, never after it
        # without a reconnect (nc.stats["reconnects"]). Agents use it to spot tasks that a
        # restarted server may hand out again (agentlab.org.agent).
        self.connected_at = time.time()
        from .jetstream import JetStream  # local import: jetstream builds on this module

        self.js = JetStream(self)

    # -- connecting ----------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | None = None, *, name: str = "agentlab", user: str | None = None,
                password: str | None = None, token: str | None = None,
                creds: str | None = None, inbox_prefix: str | None = None,
                reconnect_wait: float = 0.25, connect_timeout: float = 2.0,
                tls: ssl.SSLContext | None = None) -> Client:
        """Connect to ``url`` (default: ``$AGENTLAB_NATS_URL``).

        Without a login (user, password, token, creds) it logs in as the server's own user
        when this process runs that server (an ``EmbeddedServer``, ``start()``'s), else with
        the credentials file ``$AGENTLAB_NATS_CREDENTIALS`` names if ``url`` is its server.
        Without ``tls`` (an ``ssl.SSLContext``) it trusts, likewise, the CA of a server this
        process runs, else the ``ca`` (and ``cert``, ``key``) of that credentials file.
        """
        bridge = get_bridge()
        coro = cls.aopen(url, name=name, user=user, password=password, token=token,
                            creds=creds, inbox_prefix=inbox_prefix,
                            reconnect_wait=reconnect_wait, connect_timeout=connect_timeout,
                            tls=tls)
        return bridge.run(coro, operation="connect")

    @classmethod
    async def aopen(cls, url: str | None = None, *, name: str = "agentlab",
                       user: str | None = None, password: str | None = None,
                       token: str | None = None, creds: str | None = None,
                       inbox_prefix: str | None = None, reconnect_wait: float = 0.25,
                       connect_timeout: float = 2.0,
                       tls: ssl.SSLContext | None = None) -> Client:
        url = url or default_url()
        if not url:
            raise ServerUnreachable("(no URL)",
                                    "AGENTLAB_NATS_URL is not set and no lab is running")
        bridge = get_bridge()
        own = known_login(url)  # a server this process runs: its login may do anything
        if user is None and password is None and token is None and creds is None:
            # No login given: the server's own, or $AGENTLAB_NATS_CREDENTIALS' (for its URL).
            found = own or login_for(url, default_url())
            if found is not None:
                user, password = found.user, found.password
        unrestricted = own is not None and (user, password) == (own.user, own.password)
        if tls is None:
            files = tls_for(url, default_url())
            tls = files.context() if files is not None else None
        options = nats_options(url, name=name, user=user, password=password, token=token,
                               creds=creds, inbox_prefix=inbox_prefix,
                               reconnect_wait=reconnect_wait, connect_timeout=connect_timeout,
                               tls=tls)
        client = await bridge.arun(cls._open(bridge, url, name, user, options, unrestricted))
        client._login = dict(user=user, password=password, token=token, creds=creds,
                             inbox_prefix=inbox_prefix, reconnect_wait=reconnect_wait,
                             connect_timeout=connect_timeout, tls=tls)
        return client

    @classmethod
    async def _open(cls, bridge: Bridge, url: str, name: str, user: str | None,
                    options: dict[str, Any], unrestricted: bool = False) -> Client:
        # The first connection of a process sets tracing up from OTEL_* variables, if any:
        # every agentlab program and a notebook's start() connect before they publish.
        configure_from_env_once()
        violations = ViolationLog(name)
        nc, events = await connect_nats(url, name, user, options, violations)
        client = cls(nc, name=name, url=url, identity=user, bridge=bridge, violations=violations,
                     unrestricted=unrestricted)
        events.client = client
        client._outbound.attach()
        try:
            mark = violations.mark()
            await client._requests.start(nc)
            await flush_in_order(nc, client._outbound, options["connect_timeout"])
            violations.raise_if_denied(
                "subscribe to", client._requests.prefix + "*", since=mark,
                hint="Requests need a reply inbox: allow subscribe to '_INBOX.>' for this "
                     "user, or connect with inbox_prefix= set to a subject the user may use.")
        except BaseException:
            await nc.close()  # or nats-py would go on reconnecting in the background
            raise
        return client

    # -- publishing ----------------------------------------------------------------------
    def publish(self, subject: str, data: Any = b"", *, headers: dict[str, str] | None = None,
                reply: str = "") -> None:
        """Send ``data`` (bytes, str, dict/list as JSON, or a pydantic model). Does not wait.

        Messages from one thread reach the server in the order they were published.
        """
        tracer = tracing.tracer()
        if tracer is None:
            self._publish(subject, data, headers, reply)
            return
        span, headers = tracing.start_send(tracer, "publish", subject, headers)
        with tracing.ending(span):
            self._publish(subject, data, headers, reply)

    def _publish(self, subject: str, data: Any, headers: dict[str, str] | None,
                 reply: str) -> None:
        command = self._command(subject, data, headers, reply)
        mark = self._publish_check.mark_if_unchecked(subject)
        self._outbound.send(command)
        if mark is None:
            return
        if self._bridge.in_loop_thread():
            # Cannot wait here; `await apublish()` raises instead of logging.
            asyncio.ensure_future(self._verify_in_background(subject, mark))
            return
        if not self.nc.is_connected:
            # Reconnecting: the message waits in the reconnect buffer, and the check follows
            # it there instead of holding this call until the server is back.
            self._bridge.submit(self._verify_in_background(subject, mark))
            return
        try:
            self.flush()
        except RequestTimeout:
            if self.nc.is_connected:
                raise
            return  # the server went away mid-check; the message is buffered, checked later
        self._publish_check.confirm(subject, mark)

    async def _verify_in_background(self, subject: str, mark: int) -> None:
        try:
            await self._aflush(5.0)
            self._publish_check.confirm(subject, mark)
        except PermissionDenied as denied:
            log.error("%s", denied)
        except Exception:  # closed or timed out: nothing to report about permissions
            pass

    def reply(self, subject: str, data: Any = b"", headers: dict[str, str] | None = None) -> None:
        """Answer on a reply subject (a request's inbox, a JetStream ack). Never waits.

        Reply subjects are the requester's, not this identity's namespace, so they skip the
        first-use permission round trip that publish() makes; safe from the loop thread.
        """
        self._outbound.send(self._command(subject, data, headers, ""))

    async def anext_reconnect(self) -> None:
        """Return once this connection has been made again (after a server restart, say),
        or closed."""
        waiter = asyncio.get_running_loop().create_future()
        self._reconnect_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._reconnect_waiters:
                self._reconnect_waiters.remove(waiter)

    def _wake_reconnect_waiters(self) -> None:
        waiters, self._reconnect_waiters = self._reconnect_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- more connections like this one ---------------------------------------------------
    # A sibling of a Lab is a plain Client; any other kind (a tenant's) opens its own kind.
    _sibling_kind: type[Client] | None = None

    def connect(self, name: str, **login: Any) -> Client:
        """Another connection to the same server(s), named ``name``, closed with this one.

            cto = lab.connect("cto")            # one connection per agent, as processes would

        It logs in as this one does (user, password, token or creds file, inbox prefix) and is
        of the same kind: a tenant's connection opens another of the tenant's. Pass ``user=``
        and ``password=`` (or ``token=``, ``creds=``) to log in as someone else.
        """
        return self._bridge.run(self.aconnect(name, **login), operation="connect")

    async def aconnect(self, name: str, **login: Any) -> Client:
        if self._closed:
            raise ClientClosed(self.name)
        if login:  # someone else: only the connection settings are this one's
            login = {"reconnect_wait": self._login.get("reconnect_wait", 0.25),
                     "connect_timeout": self._login.get("connect_timeout", 2.0),
                     "tls": self._login.get("tls")} | login
        kind = self._sibling_kind or type(self)
        sibling = await kind.aopen(self.url, name=name, **(login or self._login))
        if self._closed:  # closed while the sibling connected: it would outlive its parent
            await sibling.aclose()
            raise ClientClosed(self.name)
        self._adopt(sibling)
        self._clients = [c for c in self._clients if not c.is_closed] + [sibling]
        return sibling

    def _adopt(self, sibling: Client) -> None:
        """Give a new sibling what this kind of connection carries beyond its login."""

    def _ack_reply(self, subject: str, verb: bytes) -> None:
        """reply() for a JetStream ack: the subject is the server's own ``$JS.ACK...``.

        Every ack subject is unique, so the subject check's cache never hits; skipping it
        saves a full token scan per acknowledged message.
        """
        if self._closed:
            raise ClientClosed(self.name)
        self._outbound.send(pub_command(subject, verb, "", b""))

    async def apublish(self, subject: str, data: Any = b"", *,
                       headers: dict[str, str] | None = None, reply: str = "") -> None:
        tracer = tracing.tracer()
        if tracer is None:
            await self._apublish(subject, data, headers, reply)
            return
        span, headers = tracing.start_send(tracer, "publish", subject, headers)
        with tracing.ending(span):
            await self._apublish(subject, data, headers, reply)

    async def _apublish(self, subject: str, data: Any, headers: dict[str, str] | None,
                        reply: str) -> None:
        command = self._command(subject, data, headers, reply)
        mark = self._publish_check.mark_if_unchecked(subject)
        self._outbound.send(command)
        if mark is None:
            return
        if not self.nc.is_connected:  # reconnecting: as in publish()
            check = self._verify_in_background(subject, mark)
            if self._bridge.in_loop_thread():
                asyncio.ensure_future(check)
            else:
                self._bridge.submit(check)
            return
        try:
            await self.aflush()
        except RequestTimeout:
            if self.nc.is_connected:
                raise
            return
        self._publish_check.confirm(subject, mark)

    def _payload(self, subject: str, data: Any, header_block: bytes = b"") -> bytes:
        """``data`` encoded for ``subject``, once the client, the subject and the size allow."""
        if self._closed:
            raise ClientClosed(self.name)
        check_publish_subject(subject)
        payload = to_bytes(data)
        limit = self._outbound.max_payload
        # The server counts headers too; over the limit it closes the connection, and the
        # message, still in the reconnect buffer, would close every new connection as well.
        size = len(payload) + len(header_block)
        if size > limit:
            raise PayloadTooLarge(subject, size, limit, "server's max_payload" + (
                " (headers included)" if header_block else ""))
        return payload

    def _command(self, subject: str, data: Any, headers: dict[str, str] | None,
                 reply: str) -> bytes:
        block = encode_headers(headers) if headers else b""
        payload = self._payload(subject, data, block)
        # The reply goes into the protocol line as it is: unchecked, a space or a line break
        # in it would end this command and start another (a protocol injection).
        return pub_command(subject, payload, check_reply_subject(reply) if reply else "", block)

    # -- request / reply -------------------------------------------------------------------
    def request(self, subject: str, data: Any = b"", *, timeout: float = 2.0,
                headers: dict[str, str] | None = None) -> Message:
        """Send a request and wait for the first reply."""
        tracer = tracing.tracer()
        if tracer is None:
            return self._request(subject, data, timeout, headers)
        span, headers = tracing.start_send(tracer, "request", subject, headers,
                                           kind=SpanKind.CLIENT)
        with tracing.ending(span):
            return self._request(subject, data, timeout, headers)

    def _request(self, subject: str, data: Any, timeout: float,
                 headers: dict[str, str] | None) -> Message:
        """request() without a span of its own: for a caller that made one (client.js)."""
        if self._bridge.in_loop_thread():
            raise WrongThread("request")
        token, pending = self._send_request(subject, data, headers, None)
        try:
            arrived = pending.wait(timeout)
        except BaseException:  # KeyboardInterrupt: give up on this request, keep the client
            self._requests.forget(token)
            raise
        return self._finish(token, pending, arrived, timeout)

    async def arequest(self, subject: str, data: Any = b"", *, timeout: float = 2.0,
                       headers: dict[str, str] | None = None) -> Message:
        tracer = tracing.tracer()
        if tracer is None:
            return await self._arequest(subject, data, timeout, headers)
        span, headers = tracing.start_send(tracer, "request", subject, headers,
                                           kind=SpanKind.CLIENT)
        with tracing.ending(span):
            return await self._arequest(subject, data, timeout, headers)

    async def _arequest(self, subject: str, data: Any, timeout: float,
                        headers: dict[str, str] | None) -> Message:
        token, pending = self._send_request(subject, data, headers, asyncio.get_running_loop())
        try:
            arrived = await pending.await_result(timeout)
        except BaseException:  # cancelled: the reply, if it ever comes, is dropped
            self._requests.forget(token)
            raise
        return self._finish(token, pending, arrived, timeout)

    def gather(self, requests: Sequence[RequestSpec], *, timeout: float = 2.0
               ) -> list[Message | Exception]:
        """Send several requests at once and collect every answer (or its error), in order.

        One slow or missing responder costs ``timeout`` once, not once per request.
        """
        if self._bridge.in_loop_thread():
            raise WrongThread("gather")
        sent: list[tuple[str, PendingReply]] = []
        try:
            for subject, data in requests:  # a bad subject raises after others went out
                sent.append(self._send_request(subject, data, None, None))
            deadline = time.monotonic() + timeout
            arrived = [p.wait(max(0.0, deadline - time.monotonic())) for _, p in sent]
        except BaseException:  # KeyboardInterrupt too: no waiter is left behind
            self._forget_all(sent)
            raise
        return [self._settle(t, p, ok, timeout)
                for (t, p), ok in zip(sent, arrived, strict=True)]

    async def agather(self, requests: Sequence[RequestSpec], *, timeout: float = 2.0
                      ) -> list[Message | Exception]:
        loop = asyncio.get_running_loop()
        sent: list[tuple[str, PendingReply]] = []
        try:
            for subject, data in requests:
                sent.append(self._send_request(subject, data, None, loop))
            done = await asyncio.gather(*(p.await_result(timeout) for _, p in sent))
        except BaseException:  # cancelled too, as gather() on an interrupt
            self._forget_all(sent)
            raise
        return [self._settle(t, p, ok, timeout) for (t, p), ok in zip(sent, done, strict=True)]

    def _forget_all(self, sent: list[tuple[str, PendingReply]]) -> None:
        for token, _ in sent:
            self._requests.forget(token)

    def _send_request(self, subject: str, data: Any, headers: dict[str, str] | None,
                      loop: asyncio.AbstractEventLoop | None) -> tuple[str, PendingReply]:
        block = encode_headers(headers) if headers else b""
        payload = self._payload(subject, data, block)
        self._violations.raise_if_known_denied("publish to", subject)
        return self._requests.send(subject, payload, block, loop)

    def _settle(self, token: str, pending: PendingReply, arrived: bool,
                timeout: float) -> Message | Exception:
        try:
            return self._finish(token, pending, arrived, timeout)
        except (RequestTimeout, PermissionDenied, LookupError) as error:
            return error

    def _finish(self, token: str, pending: PendingReply, arrived: bool, timeout: float) -> Message:
        if not arrived:
            self._requests.forget(token)
            raise RequestTimeout(pending.subject, timeout)
        result = pending.result
        if isinstance(result, Exception):
            raise result
        return Message.from_nats(result, self)

    # -- subscribing ---------------------------------------------------------------------
    def subscribe(self, subject: str, handler: Handler | None = None, *, queue: str = "",
                  reply_with_result: bool = False) -> Subscription:
        """Receive messages on ``subject`` (wildcards allowed).

        With a ``handler`` (sync or async), it is called for each message; an exception is
        logged with the subject and the subscription carries on. Without one, iterate:
        ``for msg in sub`` or ``sub.next(timeout=1)``. ``queue`` makes members of the same
        group share the messages instead of each getting a copy.
        """
        if self._bridge.in_loop_thread():
            raise WrongThread("subscribe")
        sub = Subscription(self, subject, handler, queue=queue, reply_with_result=reply_with_result)
        return self._bridge.run(self._start_subscription(sub), operation="subscribe")

    async def asubscribe(self, subject: str, handler: Handler | None = None, *, queue: str = "",
                         reply_with_result: bool = False) -> Subscription:
        sub = Subscription(self, subject, handler, queue=queue, reply_with_result=reply_with_result)
        return await self._bridge.arun(self._start_subscription(sub))

    def serve(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        """Answer requests on ``subject`` with whatever ``handler`` returns."""
        return self.subscribe(subject, handler, queue=queue, reply_with_result=True)

    async def aserve(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        return await self.asubscribe(subject, handler, queue=queue, reply_with_result=True)

    async def _start_subscription(self, sub: Subscription) -> Subscription:
        if self._closed:
            raise ClientClosed(self.name)
        mark = self._violations.mark()
        await sub._start()
        await flush_in_order(self.nc, self._outbound, 5.0)
        try:
            self._violations.raise_if_denied("subscribe to", sub.subject, since=mark)
        except PermissionDenied:
            await sub._stop()
            raise
        self._subscriptions.append(sub)
        return sub

    # -- lifecycle ---------------------------------------------------------------------
    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the server has received everything published so far."""
        self._bridge.run(self._aflush(timeout), operation="flush")

    async def aflush(self, timeout: float = 5.0) -> None:
        await self._bridge.arun(self._aflush(timeout))

    async def _aflush(self, timeout: float) -> None:
        if self._closed:
            raise ClientClosed(self.name)
        try:
            await flush_in_order(self.nc, self._outbound, timeout)
        except nats.errors.TimeoutError:
            raise RequestTimeout("(flush)", timeout, what="flush") from None

    def drain(self) -> None:
        """Finish in-flight handler work, deliver what was published, then close."""
        self._bridge.run(self._aclose(drain=True), operation="drain")

    async def adrain(self) -> None:
        await self._bridge.arun(self._aclose(drain=True))

    def close(self) -> None:
        if self._closed or self._bridge.in_loop_thread():
            # From the loop thread (an async handler) closing must not block: schedule it.
            if not self._closed:
                self._bridge.submit(self._aclose(drain=False))
            return
        if self._bridge.stopped:  # the process is exiting; the socket closes with it
            self._closed = True
            return
        self._bridge.run(self._aclose(drain=False), operation="close")

    async def aclose(self) -> None:
        await self._bridge.arun(self._aclose(drain=False))

    async def _aclose(self, drain: bool) -> None:
        if self._closed:
            return
        self._closed = True
        for sibling in self._clients:  # the connections opened from this one go first
            await sibling._aclose(drain=False)
        self._clients.clear()
        self._wake_reconnect_waiters()  # they look at is_closed and end
        try:
            await flush_in_order(self.nc, self._outbound, 1.0)
            if drain:
                await self.nc.drain()
        except (nats.errors.Error, asyncio.TimeoutError):
            pass
        finally:
            try:
                await self.nc.close()
            except OSError:  # the socket broke under nats-py's goodbye; closed all the same
                pass
            self._outbound.detach()
            for sub in self._subscriptions:
                sub._closed = True
                if sub._mailbox is not None:
                    sub._mailbox.close()  # ends `for msg in sub` loops

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def max_payload(self) -> int:
        return self.nc.max_payload

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ("closed" if self._closed else
                 "connected" if self.nc.is_connected else "reconnecting")
        who = f" as {self.identity}" if self.identity else ""
        return f"<agentlab.Client {self.name!r}{who} {self.url} {state}>"
