"""The fast path between caller threads and the socket: batched writes, and requests a
caller thread writes itself. It reaches into nats-py (the ``Client._*`` entries of
internals.INTERNALS); a connection without them takes the public path in the same class."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

import nats.errors
from nats.aio.transport import TcpTransport

from .internals import fast_path_missing, warn_missing
from .protocol import parse_pub

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from ..bridge import Bridge

log = logging.getLogger("agentlab")

# Above this many queued bytes a caller thread waits for the loop to catch up, so a tight
# publish loop cannot grow memory without bound while the server is slow or away.
HIGH_WATER = 8 * 1024 * 1024


class Outbound:
    """Protocol commands from any thread, written to the socket in batches by the loop.

    A thread about to block on a reply may instead write its request itself
    (``send_now``), which saves waking the loop thread: two cross-thread wake-ups are most
    of the cost of a sync request. Every write to the socket, nats-py's included, holds
    ``_write_lock``, and the direct path is taken only when nothing else is waiting to be
    written, so bytes never interleave and one thread's messages stay in order.

    Without the internals this needs (``public``), the queued commands go through
    nats-py's ``publish()`` instead, one by one and in order.
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
        self._locked_transport: Any = None
        # Read once per (re)connect, not per publish: nats-py's property costs 5x an attribute.
        self.max_payload = nc.max_payload
        self.public = False
        self.missing: list[str] = []
        self._publishing = False  # public path: a batch is being handed to nats-py
        self._taken = self._sent = 0  # public path: commands taken from the queue, published
        self._batch_done: asyncio.Future | None = None
        self._publisher: asyncio.Future | None = None

    def attach(self) -> None:
        """On the loop, after (re)connecting: route nats-py's writes through our lock."""
        self.detach()
        self.max_payload = self._nc.max_payload
        if not self.public:
            self.fall_back(fast_path_missing(self._nc))
        if self.public:
            return
        transport: Any = self._nc._transport
        writer = transport._io_writer if type(transport) is TcpTransport else None
        if writer is None or writer.get_extra_info("sslcontext") is not None:
            return  # TLS or websocket: bytes must go through their layer, so no direct path
        raw = writer.get_extra_info("socket")
        if raw is None:
            return
        direct = socket.socket(fileno=os.dup(raw.fileno()))
        direct.setblocking(False)
        if transport is not self._locked_transport:  # nats-py keeps it across reconnects
            lock = self._write_lock
            write, writelines = transport.write, transport.writelines

            def locked_write(data: bytes) -> Any:
                with lock:
                    return write(data)

            def locked_writelines(data: Any) -> Any:
                with lock:
                    return writelines(data)

            transport.write, transport.writelines = locked_write, locked_writelines
            self._locked_transport = transport
        self._direct_transport, self._direct_socket = transport, direct

    def fall_back(self, missing: list[str]) -> None:
        """Use nats-py's public API from now on if anything is ``missing``."""
        if not missing:
            return
        self.detach()
        self.missing, self.public = self.missing + missing, True
        # An instance attribute, so the fast drain() costs not even a check per batch (mypy
        # flags any assignment over a method; this one is the point).
        self.drain = self._drain_public  # type: ignore[method-assign]
        warn_missing(missing, "this connection sends through nats-py's public API instead "
                              "(slower, nothing lost)")

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
            transport = nc._transport  # set whenever nc.is_connected
            if nc.is_connected and transport is not None and not nc._pending:
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

    # -- the public path -------------------------------------------------------------------
    def _drain_public(self) -> None:
        """drain() without internals: hand what is queued to ``nc.publish``, one batch at a
        time; what is queued meanwhile waits (and its bytes hold callers at HIGH_WATER)."""
        self._scheduled = False
        if self._publishing or not self._queue:
            return
        items = [self._queue.popleft() for _ in range(len(self._queue))]
        self._queued_bytes = 0
        self._publishing, self._taken = True, self._taken + len(items)
        self._publisher = asyncio.ensure_future(self._publish(items))  # held: tasks are weak

    async def _publish(self, items: list[bytes]) -> None:
        nc = self._nc
        try:
            for command in items:
                subject, reply, headers, payload = parse_pub(command)
                while True:
                    try:
                        await nc.publish(subject, payload, reply=reply, headers=headers)
                        break
                    except nats.errors.OutboundBufferLimitError:
                        await asyncio.sleep(0.05)  # reconnecting, nats-py's buffer full: wait
                    except nats.errors.ConnectionClosedError:
                        break  # as on the fast path: a closed connection sends nothing more
                    except Exception:
                        log.exception("publish to %r through nats-py failed", subject)
                        break
                self._sent += 1
        finally:
            self._publishing = False
            self._room.set()
            done, self._batch_done = self._batch_done, None
            if done is not None and not done.done():
                done.set_result(None)
        self._drain_public()

    async def _settle_public(self) -> None:
        """Return once every command queued so far has been given to nats-py."""
        target = self._taken + len(self._queue)
        self._drain_public()
        while self._sent < target:
            if self._batch_done is None:
                self._batch_done = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._batch_done)


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
    backlog first restores "the server has processed all I sent". The public path waits
    instead until nats-py's flusher has written it (``pending_data_size`` is public).
    """
    if outbound.public:
        try:
            await asyncio.wait_for(_written_public(nc, outbound), timeout)
        except asyncio.TimeoutError:
            raise nats.errors.TimeoutError from None
    else:
        outbound.drain()
        transport = nc._transport  # set whenever nc.is_connected
        if nc.is_connected and transport is not None and nc._pending:
            with outbound._write_lock:
                transport.writelines(nc._pending)
                nc._pending = []
                nc._pending_data_size = 0
    await nc.flush(timeout=max(1, round(timeout)))


async def _written_public(nc: NatsClient, outbound: Outbound) -> None:
    await outbound._settle_public()
    spins = 0
    while nc.is_connected and nc.pending_data_size:  # nats-py's flusher has yet to write
        spins += 1
        await asyncio.sleep(0 if spins < 20 else 0.001)


async def drain_subscription(nc: NatsClient, outbound: Outbound, sub: Any,
                             timeout: float = 5.0) -> None:
    """Unsubscribe without losing what the server already routed to ``sub``.

    nats-py's own ``drain()`` can PING before its UNSUB reaches the socket (see
    ``flush_in_order``), then drop messages still on their way. Here the UNSUB goes out
    first, the PONG proves the server has stopped routing to us, and the messages that
    arrived meanwhile are handled before the subscription is removed. The public path has
    only nats-py's ``drain()``, with that narrow window.
    """
    if outbound.public:
        await sub.drain()
        return
    await nc._send_unsubscribe(sub._id)
    await flush_in_order(nc, outbound, timeout)
    if sub._pending_queue is not None:
        await asyncio.wait_for(sub._pending_queue.join(), timeout)
    sub._stop_processing()
    nc._remove_sub(sub._id)


def _write_buffer_size(transport: Any) -> int:
    writer = getattr(transport, "_io_writer", None)
    if writer is None:
        return 0
    try:
        return writer.transport.get_write_buffer_size()
    except AttributeError:
        return 0
