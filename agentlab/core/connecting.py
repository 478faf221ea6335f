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
from typing import TYPE_CHECKING, Any

import nats
import nats.errors

from ..errors import AuthenticationFailed, BadSubject, ServerUnreachable
from .permissions import ViolationLog
from .subjects import check_subscribe_subject

if TYPE_CHECKING:
    from .client import Client

__all__ = ["ConnectionEvents", "connect_nats", "default_url", "nats_options"]

log = logging.getLogger("agentlab")


def default_url() -> str | None:
    """``$AGENTLAB_NATS_URL``, if set: the server every lab and client uses instead of its own."""
    return os.environ.get("AGENTLAB_NATS_URL") or None


def nats_options(url: str, *, name: str, user: str | None, password: str | None,
                 token: str | None, creds: str | None, inbox_prefix: str | None,
                 reconnect_wait: float, connect_timeout: float) -> dict[str, Any]:
    """The keyword arguments of ``nats.connect`` for one agentlab connection."""
    options: dict[str, Any] = dict(
        # "nats://a:4222,nats://b:4222" (a cluster, as AGENTLAB_NATS_URL may hold it):
        # one connection that fails over between the servers.
        servers=[u.strip() for u in url.split(",") if u.strip()], name=name, user=user,
        password=password, token=token, user_credentials=creds,
        reconnect_time_wait=reconnect_wait, connect_timeout=connect_timeout,
        max_reconnect_attempts=1,
    )
    if inbox_prefix:
        # Every request's reply subject starts with it, and goes to the socket unchecked.
        check_subscribe_subject(inbox_prefix)
        if "*" in inbox_prefix.split(".") or ">" in inbox_prefix.split("."):
            raise BadSubject(f"inbox_prefix {inbox_prefix!r} has a wildcard; it must be a "
                             "concrete subject such as '_INBOX.acme'")
        options["inbox_prefix"] = inbox_prefix
    return options


class ConnectionEvents:
    """nats-py's callbacks for one connection, from before its Client exists to its close."""

    def __init__(self, name: str, violations: ViolationLog):
        self.name, self.violations = name, violations
        self.auth_failed: list[BaseException] = []
        self.connected = False
        self.client: Client | None = None  # set once the connection is made

    async def on_error(self, error: Exception) -> None:
        if isinstance(error, nats.errors.AuthorizationError) or \
                "authorization violation" in str(error).lower():
            self.auth_failed.append(error)
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
    try:
        nc = await nats.connect(error_cb=events.on_error, disconnected_cb=events.on_disconnect,
                                reconnected_cb=events.on_reconnect, **options)
    except (nats.errors.NoServersError, OSError, asyncio.TimeoutError) as exc:
        if events.auth_failed:
            raise AuthenticationFailed(url, user) from None
        raise ServerUnreachable(url, str(exc) or type(exc).__name__) from None
    except nats.errors.AuthorizationError:
        raise AuthenticationFailed(url, user) from None
    # Once connected, keep trying forever: agents must survive a server restart.
    nc.options["max_reconnect_attempts"] = -1
    events.connected = True
    return nc, events
