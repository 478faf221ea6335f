"""The sync bridge: one private asyncio loop on a daemon thread, shared by the whole process.

    result = get_bridge().run(some_coroutine(), operation="request")

A nats-py client is bound to the loop it connected on, so every NATS operation happens
here. Plain methods block the *calling* thread (a script, a Jupyter cell, an ipywidgets
callback) until the loop answers; their ``a``-prefixed twins await the same work from any
other running loop. Blocking on the bridge's own thread would deadlock, so it raises.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ..errors import BridgeStopped, WrongThread
from ..telemetry import tracing

T = TypeVar("T")
log = logging.getLogger("agentlab")


class Bridge:
    """An event loop running forever on a daemon thread, plus a pool for sync handlers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="agentlab-loop", daemon=True)
        self.thread.start()
        self._ready.wait()
        # Sync user handlers run here, never on the loop, so a slow handler cannot stall I/O.
        self.handler_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(32, (os.cpu_count() or 2) * 4), thread_name_prefix="agentlab-handler"
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    @property
    def stopped(self) -> bool:
        """True once the loop can run nothing more: its thread ended, or the interpreter is
        finalizing (daemon threads are frozen then, so a wait for the loop would never end:
        a widget's ``__del__`` at exit closing its observer, say)."""
        return sys.is_finalizing() or not self.thread.is_alive()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule a plain callable on the loop from any thread; does not wait."""
        if self.in_loop_thread():
            self.loop.call_soon(fn, *args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], *, operation: str,
            timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result on this thread.

        A KeyboardInterrupt (Jupyter's interrupt button) cancels the coroutine on the loop and
        propagates, leaving every connection usable.
        """
        if self.in_loop_thread():
            coro.close()
            raise WrongThread(operation)
        if self.stopped:
            coro.close()
            raise BridgeStopped(operation)
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise
        except BaseException:
            # KeyboardInterrupt lands here while we wait: stop the work we started.
            future.cancel()
            raise

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the bridge loop from whatever loop is running now."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    async def arun_handler(self, handler: Callable[..., Any], *args: Any) -> Any:
        """Call a user handler: coroutine functions on the loop, plain ones in the pool.

        A plain callable that returns an awaitable (a lambda or partial around an async
        function) has that awaitable finished on the loop.
        """
        if asyncio.iscoroutinefunction(handler) or asyncio.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 (an async __call__, not callable())
        ):
            return await handler(*args)
        if tracing.tracer() is not None:
            # The pool's threads do not inherit the caller's context, so the span the
            # handler runs in (and all it publishes) would be lost: carry it over.
            handler = functools.partial(contextvars.copy_context().run, handler)
        return await maybe_await(await self.loop.run_in_executor(self.handler_pool, handler,
                                                                 *args))


async def maybe_await(value: Any) -> Any:
    """``value`` itself, or what it gives once awaited if it is awaitable: for what a user's
    callable returned, which may be a plain value or a coroutine."""
    return await value if inspect.isawaitable(value) else value


_bridge: Bridge | None = None
_bridge_lock = threading.Lock()


def get_bridge() -> Bridge:
    """The process-wide bridge, started on first use."""
    global _bridge
    if _bridge is None:
        with _bridge_lock:
            if _bridge is None:
                _bridge = Bridge()
    return _bridge


def _forget_bridge_after_fork() -> None:
    # A forked child has the loop object but not its thread; start afresh on first use.
    global _bridge
    _bridge = None


# os.register_at_fork exists only where os.fork does (not on Windows, nor some embedded or
# WASI builds): there a child process never inherits the bridge, so there is nothing to forget.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_bridge_after_fork)
