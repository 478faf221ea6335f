"""The list of nats-py internals agentlab relies on, the check of it, and the helpers that
reach the internals outside the fast path (server facts, nats-py's own requests)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.transport import TcpTransport, Transport

log = logging.getLogger("agentlab")

FAST_PATH = "the fast path"
# Every nats-py private attribute agentlab relies on: "Class.attribute" of a live nats-py
# object -> (its kind, what needs it). The connect-time check and the canary test read this.
INTERNALS: dict[str, tuple[str, str]] = {
    "Client._pending": ("list", FAST_PATH),  # nats-py's write buffer, kept across reconnects
    "Client._pending_data_size": ("int", FAST_PATH),
    "Client._transport": ("transport", FAST_PATH),
    "Client._flush_pending": ("coroutine function", FAST_PATH),
    "Client._flush_queue": ("queue", FAST_PATH),  # wakes nats-py's flusher task
    "Client._flusher_task": ("task", FAST_PATH),
    "Client._send_unsubscribe": ("coroutine function", FAST_PATH),
    "Client._remove_sub": ("function", FAST_PATH),
    "TcpTransport._io_writer": ("stream writer", FAST_PATH),  # its socket, for direct writes
    "Subscription._id": ("int", FAST_PATH),
    "Subscription._pending_queue": ("queue", FAST_PATH),
    "Subscription._stop_processing": ("function", FAST_PATH),
    "Client._server_info": ("dict", "server_info()"),
    # Its API requests call self._nc.request, which is how route_requests() reaches them.
    "JetStreamContext._nc": ("connection", "route_requests()"),
}
_KINDS: dict[str, Callable[[Any], bool]] = {
    "list": lambda value: isinstance(value, list),
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "dict": lambda value: isinstance(value, dict),
    "queue": lambda value: isinstance(value, asyncio.Queue),
    "task": lambda value: isinstance(value, asyncio.Future),
    "function": lambda value: callable(value) and not inspect.iscoroutinefunction(value),
    "coroutine function": inspect.iscoroutinefunction,
    "transport": lambda value: isinstance(value, Transport),
    "stream writer": lambda value: isinstance(value, asyncio.StreamWriter),
    "connection": lambda value: isinstance(value, NatsClient),
}
_ABSENT = object()
_warned: set[str] = set()


def check(obj: Any, owner: str) -> list[str]:
    """The ``INTERNALS`` of class ``owner`` that ``obj`` lacks or holds as another kind,
    e.g. ``["Client._pending"]`` for a client whose nats-py renamed its write buffer."""
    return [name for name, (kind, _) in INTERNALS.items()
            if name.partition(".")[0] == owner
            and not _KINDS[kind](getattr(obj, name.partition(".")[2], _ABSENT))]


def fast_path_missing(nc: NatsClient) -> list[str]:
    """What the fast path needs from this connected client and its socket and lacks.
    (Subscription's are checked on the first subscription, in ``RequestMux.start``.)"""
    missing = [name for name in check(nc, "Client") if INTERNALS[name][1] == FAST_PATH]
    transport = getattr(nc, "_transport", None)
    if isinstance(transport, TcpTransport):  # a websocket writes through its own layer
        missing += check(transport, "TcpTransport")
    return missing


def nats_py_version() -> str:
    try:
        return importlib.metadata.version("nats-py")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def warn_missing(missing: list[str], consequence: str) -> None:
    """One warning per internal found missing, however many connections find it."""
    if set(missing) <= _warned:
        return
    _warned.update(missing)
    log.warning("nats-py %s has no %s, which agentlab relies on (agentlab/core/_natspy/): "
                "%s. agentlab was tested with nats-py 2.16: run tests/test_natspy_canary.py "
                "on this version, or install 'nats-py>=2.16,<2.17'.", nats_py_version(),
                ", ".join(missing), consequence)


def server_info(nc: NatsClient) -> dict[str, Any]:
    """The INFO the server sent at the last (re)connect: ``auth_required``, ``cluster``...

    nats-py 2.16 has public properties for a few of its fields (``max_payload``,
    ``client_id``, ``connected_server_version``) but none for these; it keeps the INFO in
    ``_server_info``. Read it, do not change it. Empty (and a warning) if nats-py lost it.
    """
    info = getattr(nc, "_server_info", None)
    if isinstance(info, dict):
        return info
    warn_missing(["Client._server_info"], "agentlab cannot tell whether the server requires "
                 "a login or is clustered, so a refused publish is not raised at the call")
    return {}


def route_requests(nc: NatsClient, request: Callable[..., Any]) -> None:
    """Make ``request`` answer every ``nc.request(...)``, those nats-py makes itself included.

    nats-py has no public hook for it. Its JetStream, key-value and object-store contexts
    send their API requests with ``self._nc.request(...)``, looked up at each call, so an
    attribute set on the instance reaches them (tests/test_natspy_canary.py checks it).
    """
    # Shadowing the method with an instance attribute is the hook itself, which mypy flags.
    nc.request = request  # type: ignore[method-assign]
