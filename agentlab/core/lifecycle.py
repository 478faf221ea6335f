"""One lifecycle for every long-running component: start, stop, ``with``, and their twins.

    class Watcher(Service):
        def __init__(self, client):
            self._bridge = client._bridge            # the hooks run on this loop
        async def _astart_service(self) -> None:     # subscribe, spawn loops ...
        async def _astop_service(self) -> None:      # ... and undo it (after a failed start too)

    watcher = Watcher(client).start()    # returns self; start() again is a no-op
    watcher.stop()                       # stop() again is a no-op; start() again starts afresh
    with Watcher(client) as watcher: ... # and `async with`, astart(), astop()

Both hooks run on the bridge loop, one at a time (a lock held across each), so a start and
a stop asked from two threads at once never interleave. A start that raises has the stop
hook run to release what it had made, and leaves the component stopped. A component that
can stop working by itself (its connection closed under it) says so in ``is_running``;
start() then releases what it still holds and starts it afresh.

A component whose start or stop takes options (``Agent.stop(timeout=)``) keeps its own
``stop``/``astop`` as two one-line methods that pass them to ``_stop_service(...)``; the
options reach the hook, whose defaults are what a failed start's cleanup uses.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import TYPE_CHECKING, Any

from typing_extensions import Self

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("agentlab")

STOPPED, STARTING, RUNNING, STOPPING = "stopped", "starting", "running", "stopping"


class Service(abc.ABC):
    """The start/stop lifecycle, written once; a component provides the two hooks."""

    _bridge: Bridge
    # Class-level defaults: a component need not call Service.__init__.
    _service_state: str = STOPPED
    _service_lock: asyncio.Lock | None = None

    # -- the hooks a component provides ------------------------------------------------
    @abc.abstractmethod
    async def _astart_service(self, *options: Any) -> None:
        """Start on the bridge loop: subscribe, declare, spawn the component's tasks."""

    @abc.abstractmethod
    async def _astop_service(self, *options: Any) -> None:
        """Stop on the bridge loop: release all that the start made (also after it failed)."""

    # -- the public lifecycle --------------------------------------------------------------
    def start(self) -> Self:
        """Start (a no-op if running). Returns self, for ``x = Thing(client).start()``."""
        return self._bridge.run(self._start_service(), operation="start")

    async def astart(self) -> Self:
        return await self._bridge.arun(self._start_service())

    def stop(self) -> None:
        """Stop (a no-op if stopped). It can be started again."""
        self._stop_blocking()

    def _stop_blocking(self, *options: Any) -> None:
        """``stop()`` for components whose stop takes options (``Agent.stop(timeout)``)."""
        if self._bridge.stopped:  # the process is exiting: what ran on the loop is gone
            self._service_state = STOPPED
            return
        self._bridge.run(self._stop_service(*options), operation="stop")

    async def astop(self) -> None:
        await self._bridge.arun(self._stop_service())

    @property
    def service_state(self) -> str:
        """One of "stopped", "starting", "running" and "stopping"."""
        return self._service_state

    @property
    def is_running(self) -> bool:
        return self._service_state == RUNNING

    @property
    def running(self) -> bool:
        """The same as ``is_running`` (the name these components had first)."""
        return self.is_running

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._service_state}>"

    # -- written once ------------------------------------------------------------------
    async def _start_service(self, *options: Any) -> Self:
        """Run the start hook unless running already; on the bridge loop."""
        async with self._lifecycle_lock():
            if self._service_state == RUNNING:
                if self.is_running:
                    return self
                # It stopped working by itself (its connection closed): release what it
                # still holds, then start afresh.
                await self._astop_service()
            self._service_state = STARTING
            try:
                await self._astart_service(*options)
            except BaseException:  # denied, unreachable, interrupted: leave nothing half-made
                try:
                    await self._astop_service()
                except Exception as error:
                    log.info("%s: cleaning up after a failed start failed too (%s)",
                             type(self).__name__, error)
                finally:
                    self._service_state = STOPPED
                raise
            self._service_state = RUNNING
        return self

    async def _stop_service(self, *options: Any) -> None:
        """Run the stop hook unless stopped already; on the bridge loop."""
        async with self._lifecycle_lock():
            if self._service_state == STOPPED:
                return
            self._service_state = STOPPING
            try:
                await self._astop_service(*options)
            finally:
                self._service_state = STOPPED

    def _mark_stopped(self) -> None:
        """For a component that stopped by itself (``Agent.kill()``, as a crash would) and
        released what it held: a later stop() is then a no-op and start() starts afresh."""
        self._service_state = STOPPED

    def _lifecycle_lock(self) -> asyncio.Lock:
        # Made on first use, on the bridge loop (every hook runs there, so no race here).
        if self._service_lock is None:
            self._service_lock = asyncio.Lock()
        return self._service_lock


__all__ = ["Service", "STOPPED", "STARTING", "RUNNING", "STOPPING"]
