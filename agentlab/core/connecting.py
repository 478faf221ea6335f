"""How a connection is made: nats-py's options, its callbacks, and the errors at connect.

    options = nats_options("nats://127.0.0.1:4222", name="cto", user="acme", password=...)
    nc, events = await connect_nats(url, "cto", "acme", options, ViolationLog("cto"))

``Client.aopen`` is the one caller; this module keeps the connection's birth apart from
what the connection does afterwards (``client.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import TYPE_CHECKING, Any

import nats
import nats.errors

from ..errors import AuthenticationFailed, BadSubject, ServerUnreachable
from ._natspy import server_info
from .permissions import ViolationLog
from .subjects import check_subscribe_subject
from .tls import TlsFailed, requires_client_certificate

if TYPE_CHECKING:
    from .client import Client

__all__ = ["PING_INTERVAL_ENV", "ConnectionEvents", "connect_nats", "default_url",
           "nats_options"]

log = logging.getLogger("agentlab")

# Seconds between a connection's PINGs; two unanswered ones and it reconnects, to the next
# URL of a cluster. A server that stops answering without closing the socket (a paused
# process, a network partition) is otherwise noticed only after nats-py's 2 minutes x 2.
PING_INTERVAL_ENV = "AGENTLAB_NATS_PING_INTERVAL"


def _ping_interval() -> float | None:
    value = os.environ.get(PING_INTERVAL_ENV)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{PING_INTERVAL_ENV}={value!r}: give the seconds between PINGs, a "
                         "number above 0 (e.g. 2), or unset it for nats-py's 120")
    return seconds


def default_url() -> str | None:
    """``$AGENTLAB_NATS_URL``, if set: the server every lab and client uses instead of its own."""
    return os.environ.get("AGENTLAB_NATS_URL") or None


def nats_options(url: str, *, name: str, user: str | None, password: str | None,
                 token: str | None, creds: str | None, inbox_prefix: str | None,
                 reconnect_wait: float, connect_timeout: float,
                 tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """The keyword arguments of ``nats.connect`` for one agentlab connection."""
    options: dict[str, Any] = dict(
        # "nats://a:4222,nats://b:4222" (a cluster, as AGENTLAB_NATS_URL may hold it):
        # one connection that fails over between the servers.
        servers=[u.strip() for u in url.split(",") if u.strip()], name=name, user=user,
        password=password, token=token, user_credentials=creds,
        reconnect_time_wait=reconnect_wait, connect_timeout=connect_timeout,
        max_reconnect_attempts=1,
    )
    if (ping := _ping_interval()) is not None:
        options.update(ping_interval=ping, max_outstanding_pings=2)
    if inbox_prefix:
        # Every request's reply subject starts with it, and goes to the socket unchecked.
        check_subscribe_subject(inbox_prefix)
        if "*" in inbox_prefix.split(".") or ">" in inbox_prefix.split("."):
            raise BadSubject(f"inbox_prefix {inbox_prefix!r} has a wildcard; it must be a "
                             "concrete subject such as '_INBOX.acme'")
        options["inbox_prefix"] = inbox_prefix
    if tls is not None:
        options["tls"] = tls
    return options


class ConnectionEvents:
    """nats-py's callbacks for one connection, from before its Client exists to its close."""

    def __init__(self, name: str, violations: ViolationLog):
        self.name, self.violations = name, violations
        self.auth_failed: list[BaseException] = []
        self.tls_failed: list[ssl.SSLError] = []
        self.tls_failure = asyncio.Event()
        self.connected = False
        self.client: Client | None = None  # set once the connection is made

    async def on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.AuthorizationError) or \
                "authorization violation" in str(error).lower():
            self.auth_failed.append(error)
        elif isinstance(error, ssl.SSLError) and not self.connected:
            self.tls_failed.append(error)
            self.tls_failure.set()
        elif not self.violations.record(error) and self.connected:
            # Before the first connection the failure is raised as ServerUnreachable.
            log.warning("connection %r: %s", self.name, error)

    async def on_disconnect(self) -> None:
        log.info("connection %r lost its server; reconnecting", self.name)
        if self.client is not None:
            self.client._outbound.detach()

    async def on_reconnect(self) -> None:
        log.info("connection %r reconnected", self.name)
        if self.client is not None:
            self.client._outbound.attach()  # a new socket: route its writes through our lock
            self.client._wake_reconnect_waiters()


async def connect_nats(url: str, name: str, user: str | None, options: dict[str, Any],
                       violations: ViolationLog) -> tuple[nats.NATS, ConnectionEvents]:
    """Connect with nats-py; a refusal or silence becomes an agentlab error naming ``url``."""
    events = ConnectionEvents(name, violations)
    connecting = asyncio.ensure_future(nats.connect(
        error_cb=events.on_error, disconnected_cb=events.on_disconnect,
        reconnected_cb=events.on_reconnect, **options))
    failure = asyncio.ensure_future(events.tls_failure.wait())
    try:
        # nats-py 2.16 never returns from a connect whose TLS upgrade failed (it waits for
        # the plain socket it handed to TLS to close), so the first TLS failure ends it.
        await asyncio.wait([connecting, failure], return_when=asyncio.FIRST_COMPLETED)
        if not connecting.done():
            connecting.cancel()
            raise TlsFailed(url, events.tls_failed[0]) from None
        nc = connecting.result()
    except (nats.errors.NoServersError, OSError, asyncio.TimeoutError) as exc:
        if events.auth_failed:
            raise AuthenticationFailed(url, user) from None
        if events.tls_failed:
            raise TlsFailed(url, events.tls_failed[0]) from None
        if "tls" in options and await requires_client_certificate(url):
            raise TlsFailed(url, None, closed_after_handshake=True) from None
        raise ServerUnreachable(url, str(exc) or type(exc).__name__) from None
    except nats.errors.AuthorizationError:
        raise AuthenticationFailed(url, user) from None
    finally:
        failure.cancel()
        if not connecting.done():  # cancelled from outside: no connection left behind
            connecting.cancel()
    promised = "tls" in options or any(u.strip().startswith("tls://") for u in url.split(","))
    if promised and not server_info(nc).get("tls_required"):
        # nats-py goes on in plain text when a server does not ask for TLS, tls:// or not.
        await nc.close()
        raise TlsFailed(url, None)
    # Once connected, keep trying forever: agents must survive a server restart.
    nc.options["max_reconnect_attempts"] = -1
    events.connected = True
    return nc, events
