"""The fast path between caller threads and the socket: batched writes and a request mux.

This is the only module that touches nats-py internals (``_pending``, ``_transport``,
``_flush_pending``, ``_inbox_prefix``); the pinned nats-py range in pyproject.toml and
tests/test_client.py guard it. The reason is speed: a thread hop per publish costs ~50x a
raw publish, so caller threads append ready-made protocol commands to a queue and the
loop writes whole batches with one call (see benchmarks/foundation.py for the figures).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import select
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from nats.aio.transport import TcpTransport

from ..errors import NoResponders

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg

    from .bridge import Bridge

_CRLF = b"\r\n"
# RFC 7230 token characters, as nats-py checks header names (anything else could break the line).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_LINE = b"NATS/1.0\r\n"
# Above this many queued bytes a caller thread waits for the loop to catch up, so a tight
# publish loop cannot grow memory without bound while the server is slow or away.
HIGH_WATER = 8 * 1024 * 1024


def encode_headers(headers: dict[str, str]) -> bytes:
    parts = [_HEADER_LINE]
    for key, value in headers.items():
        key = str(key).strip()
        value = str(value)
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(
                f"Header name {key!r} is invalid: a header name is printable ASCII letters, "
                "digits and !#$%&'*+-.^_`|~ (no ':', spaces or line breaks), e.g. 'X-Trace-Id'.")
        if "\r" in value or "\n" in value:
            raise ValueError(f"Header {key!r} has a line break in its value; remove it.")
        parts.append(f"{key}: {value}\r\n".encode())
    parts.append(_CRLF)
    return b"".join(parts)


def pub_command(subject: str, payload: bytes, reply: str = "", header_block: bytes = b"") -> bytes:
    if header_block:
        size = len(header_block)
        line = f"HPUB {subject} {reply} {size} {size + len(payload)}\r\n".encode()
        return b"".join((line, header_block, payload, _CRLF))
    if reply:
        return b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, _CRLF))
    return b"".join((f"PUB {subject} {len(payload)}\r\n".encode(), payload, _CRLF))


class Outbound:
    """Protocol commands from any thread, written to the socket in batches by the loop.

    A thread about to block on a reply may instead write its request itself
    (``send_now``), which saves waking the loop thread: two cross-thread wake-ups are most
    of the cost of a sync request. Every write to the socket, nats-py's included, holds
    ``_write_lock``, and the direct path is taken only when nothing else is waiting to be
    written, so bytes never interleave and one thread's messages stay in order.
    """

    def __init__(self, bridge: Bridge, nc: NatsClient):
        self._bridge = bridge
        self._nc = nc
        self._queue: deque[bytes] = deque()
        self._scheduled = False
        self._queued_bytes = 0
        self._room = threading.Event()
        self._room.set()
        self._transport_full = False
        self._write_lock = threading.RLock()
        self._direct_transport: Any = None
        self._direct_socket: socket.socket | None = None

    def attach(self) -> None:
        """On the loop, after (re)connecting: route nats-py's writes through our lock."""
        self.detach()
        transport = self._nc._transport
        writer = getattr(transport, "_io_writer", None)
        if type(transport) is not TcpTransport or writer is None or \
                writer.get_extra_info("sslcontext") is not None:
            return  # TLS or websocket: bytes must go through their layer, so no direct path
        raw = writer.get_extra_info("socket")
        if raw is None:
            return
        direct = socket.socket(fileno=os.dup(raw.fileno()))
        direct.setblocking(False)
        lock = self._write_lock
        write, writelines = transport.write, transport.writelines

        def locked_write(data: bytes) -> Any:
            with lock:
                return write(data)

        def locked_writelines(data: Any) -> Any:
            with lock:
                return writelines(data)

        transport.write, transport.writelines = locked_write, locked_writelines
        self._direct_transport, self._direct_socket = transport, direct

    def detach(self) -> None:
        with self._write_lock:
            sock, self._direct_socket, self._direct_transport = self._direct_socket, None, None
        if sock is not None:
            sock.close()

    def send_now(self, command: bytes) -> None:
        """Write from this thread if the socket is idle; otherwise queue as ``send`` does."""
        if not self._bridge.in_loop_thread() and self._write_directly(command):
            return
        self.send(command)

    def _write_directly(self, command: bytes) -> bool:
        nc = self._nc
        with self._write_lock:
            sock = self._direct_socket
            if (sock is None or self._queue or self._scheduled or self._transport_full
                    or nc._pending or not nc.is_connected
                    or nc._transport is not self._direct_transport
                    or _write_buffer_size(nc._transport) != 0):
                return False
            try:
                sent = sock.send(command)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return False  # the connection is going; the loop's path buffers across it
            view = memoryview(command)[sent:]
            while view:  # rare: a full kernel buffer. The rest must go before anyone else's.
                select.select([], [sock], [], 1.0)
                try:
                    view = view[sock.send(view):]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    break
            return True

    def send(self, command: bytes) -> None:
        self._queue.append(command)
        self._queued_bytes += len(command)
        if not self._scheduled:
            self._scheduled = True
            self._bridge.call_soon(self.drain)
        if self._queued_bytes > HIGH_WATER and not self._bridge.in_loop_thread():
            self._room.clear()
            self._room.wait(5.0)

    def drain(self) -> None:
        """Write everything queued so far; runs on the loop."""
        # Pop and write under the lock: a direct writer must not slip in between.
        with self._write_lock:
            self._scheduled = False
            queue = self._queue
            if not queue or self._transport_full:
                return
            items = [queue.popleft() for _ in range(len(queue))]
            self._queued_bytes = 0
            nc = self._nc
            if nc.is_connected and not nc._pending:
                transport = nc._transport
                transport.writelines(items)
                if _write_buffer_size(transport) > HIGH_WATER:
                    self._transport_full = True
                    asyncio.ensure_future(self._wait_for_socket(transport))
            else:
                # Reconnecting (or nats-py has its own backlog): join nats-py's buffer, which
                # it keeps across a reconnect and flushes in order.
                nc._pending.extend(items)
                nc._pending_data_size += sum(map(len, items))
                _kick_flusher(nc)
        self._room.set()

    async def _wait_for_socket(self, transport: Any) -> None:
        try:
            await transport.drain()
        except Exception:  # the connection broke; nats-py reconnects and we buffer meanwhile
            pass
        finally:
            self._transport_full = False
            self.drain()


def _kick_flusher(nc: NatsClient) -> None:
    """Have nats-py's flusher write its buffer soon; what ``_flush_pending()`` does, minus a
    task per call (this runs once per loop iteration under load)."""
    queue, flusher = nc._flush_queue, nc._flusher_task
    if not nc.is_connected or queue is None:
        return  # the reconnect writes the buffer out
    if flusher is None or flusher.done():
        asyncio.ensure_future(nc._flush_pending())  # its fallback writes inline
        return
    if queue.empty():  # otherwise a wake-up is queued already and will see these too
        try:
            queue.put_nowait(asyncio.get_running_loop().create_future())
        except asyncio.QueueFull:
            pass


async def flush_in_order(nc: NatsClient, outbound: Outbound, timeout: float) -> None:
    """PING/PONG after everything queued so far, including nats-py's own buffer.

    nats-py 2.16's ``flush()`` writes its PING straight to the socket, possibly ahead of
    commands still in ``_pending`` (a SUB, say), so its PONG would prove nothing. Writing the
    backlog first restores "the server has processed all I sent".
    """
    outbound.drain()
    if nc.is_connected and nc._pending:
        with outbound._write_lock:
            nc._transport.writelines(nc._pending)
            nc._pending = []
            nc._pending_data_size = 0
    await nc.flush(timeout=max(1, round(timeout)))


async def drain_subscription(nc: NatsClient, outbound: Outbound, sub: Any,
                             timeout: float = 5.0) -> None:
    """Unsubscribe without losing what the server already routed to ``sub``.

    nats-py's own ``drain()`` can PING before its UNSUB reaches the socket (see
    ``flush_in_order``), then drop messages still on their way. Here the UNSUB goes out
    first, the PONG proves the server has stopped routing to us, and the messages that
    arrived meanwhile are handled before the subscription is removed.
    """
    await nc._send_unsubscribe(sub._id)
    await flush_in_order(nc, outbound, timeout)
    if sub._pending_queue is not None:
        await asyncio.wait_for(sub._pending_queue.join(), timeout)
    sub._stop_processing()
    nc._remove_sub(sub._id)


def _write_buffer_size(transport: Any) -> int:
    writer = getattr(transport, "_io_writer", None)
    try:
        return writer.transport.get_write_buffer_size()  # type: ignore[union-attr]
    except AttributeError:
        return 0


class PendingReply:
    """One request in flight; completed by the loop, awaited by a thread or a coroutine."""

    __slots__ = ("subject", "result", "_lock", "_loop", "_future")

    def __init__(self, subject: str, loop: asyncio.AbstractEventLoop | None):
        self.subject = subject
        self.result: Any = None
        self._loop = loop
        if loop is None:
            self._lock = threading.Lock()
            self._lock.acquire()
            self._future = None
        else:
            self._lock = None
            self._future = loop.create_future()

    def complete(self, result: Any, on_loop: asyncio.AbstractEventLoop) -> None:
        if self._lock is not None:
            self.result = result
            self._lock.release()
        elif self._loop is on_loop:
            _settle(self._future, result)
        else:
            self._loop.call_soon_threadsafe(_settle, self._future, result)  # type: ignore[union-attr]

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=timeout)  # type: ignore[union-attr]

    async def await_result(self, timeout: float) -> bool:
        try:
            self.result = await asyncio.wait_for(asyncio.shield(self._future), timeout)  # type: ignore[arg-type]
        except asyncio.TimeoutError:
            return False
        return True


def _settle(future: asyncio.Future, result: Any) -> None:
    if not future.done():
        future.set_result(result)


class RequestMux:
    """Every request on a connection shares one wildcard reply subscription, as nats-py does."""

    def __init__(self, bridge: Bridge, nc: NatsClient, outbound: Outbound):
        self._bridge = bridge
        self._outbound = outbound
        self._waiters: dict[str, PendingReply] = {}
        self._tokens = itertools.count(1)
        prefix = bytes(nc._inbox_prefix).decode()
        self.prefix = f"{prefix}.{nc._nuid.next().decode()}."

    async def start(self, nc: NatsClient) -> None:
        await nc.subscribe(self.prefix + "*", cb=self._on_reply)

    def send(self, subject: str, payload: bytes, header_block: bytes = b"",
             loop: asyncio.AbstractEventLoop | None = None) -> tuple[str, PendingReply]:
        token = str(next(self._tokens))
        pending = PendingReply(subject, loop)
        self._waiters[token] = pending
        self._outbound.send_now(pub_command(subject, payload, self.prefix + token, header_block))
        return token, pending

    def forget(self, token: str) -> None:
        self._waiters.pop(token, None)

    async def _on_reply(self, msg: Msg) -> None:
        pending = self._waiters.pop(msg.subject[len(self.prefix):], None)
        if pending is None:
            return
        result: Any = msg
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            result = NoResponders(pending.subject)
        pending.complete(result, self._bridge.loop)

    def fail_subject(self, subject: str, error: BaseException) -> None:
        """The server refused a publish to ``subject``: fail its waiting requests now."""
        for token, pending in list(self._waiters.items()):
            if pending.subject.lower() == subject:
                self._waiters.pop(token, None)
                pending.complete(error, self._bridge.loop)
