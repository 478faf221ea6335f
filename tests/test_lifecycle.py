"""The one lifecycle (agentlab/core/lifecycle.py): start and stop are idempotent, ``with``
and ``async with`` start and stop, and a start that fails leaves nothing behind, against the
session's real server."""

from __future__ import annotations

import asyncio
import threading

import pytest

from agentlab import ConsumerSpec, NoResponders, StreamNotFound, WrongThread
from agentlab.core.lifecycle import Service
from agentlab.org import DeadLetterOffice, HealthMonitor, SharedToolPool


class Echo(Service):
    """Answers requests on ``subject`` while running; counts its hooks' runs."""

    def __init__(self, client, subject: str, *, declare_on: str | None = None):
        self.client, self.subject, self.declare_on = client, subject, declare_on
        self._bridge = client._bridge
        self.starts = self.stops = 0
        self._sub = None

    async def _astart_service(self) -> None:
        self.starts += 1
        self._sub = await self.client.asubscribe(self.subject, lambda msg: b"pong",
                                                 reply_with_result=True)
        if self.declare_on:  # a real refusal, after the subscription was made
            await self.client.js.adeclare_consumer(self.declare_on, ConsumerSpec("echo"))

    async def _astop_service(self) -> None:
        self.stops += 1
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.aunsubscribe()


def answers(client, subject: str) -> bool:
    try:
        return client.request(subject, b"ping", timeout=2).data == b"pong"
    except NoResponders:
        return False


def test_start_twice_starts_once_and_stop_twice_stops_once(client, unique):
    echo = Echo(client, f"{unique}.echo")
    assert not echo.is_running and echo.service_state == "stopped"
    assert echo.start() is echo and echo.start() is echo
    assert echo.is_running and echo.running and echo.starts == 1
    assert answers(client, echo.subject)
    assert repr(echo) == "<Echo running>"
    echo.stop()
    echo.stop()
    assert echo.stops == 1 and not echo.is_running and not answers(client, echo.subject)
    echo.start()  # started again after a stop
    assert echo.starts == 2 and answers(client, echo.subject)
    echo.stop()


def test_starts_asked_from_two_threads_at_once_start_once(client, unique):
    echo = Echo(client, f"{unique}.echo")
    threads = [threading.Thread(target=echo.start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert echo.starts == 1 and echo.is_running
    echo.stop()


def test_with_and_async_with_start_and_stop(client, unique):
    with Echo(client, f"{unique}.sync") as echo:
        assert echo.is_running and answers(client, echo.subject)
    assert not echo.is_running and echo.stops == 1

    async def main() -> tuple[bool, bool]:
        async with Echo(client, f"{unique}.async") as inside:
            running = inside.is_running
            reply = await client.arequest(inside.subject, b"ping", timeout=2)
        assert await inside.astart() is inside  # and the awaitable twins
        await inside.astop()
        return running and reply.data == b"pong", inside.starts == inside.stops == 2

    assert asyncio.run(main()) == (True, True)


def test_a_start_that_fails_leaves_it_stopped_and_startable(client, unique):
    echo = Echo(client, f"{unique}.echo", declare_on=f"NO_SUCH_{unique}")
    with pytest.raises(StreamNotFound):
        echo.start()
    assert echo.service_state == "stopped" and echo.stops == 1  # the stop hook cleaned up
    assert not answers(client, echo.subject)  # the subscription it made is gone
    echo.stop()
    assert echo.stops == 1  # nothing was running: nothing to stop
    echo.declare_on = None
    assert echo.start().is_running and answers(client, echo.subject)
    echo.stop()


class Fragile(Echo):
    """Can stop working by itself, as a component whose connection closed under it."""

    broken = False

    @property
    def is_running(self) -> bool:
        return super().is_running and not self.broken

    async def _astart_service(self) -> None:
        self.broken = False
        await super()._astart_service()


def test_a_component_that_stopped_by_itself_is_released_and_started_afresh(client, unique):
    fragile = Fragile(client, f"{unique}.echo").start()
    fragile.broken = True
    assert not fragile.running and fragile.service_state == "running"  # still holds its sub
    fragile.start()
    assert (fragile.starts, fragile.stops) == (2, 1) and answers(client, fragile.subject)
    fragile.stop()


def test_blocking_calls_on_the_loop_name_their_awaitable_twin(client, unique):
    echo = Echo(client, f"{unique}.echo")

    async def on_the_loop() -> str:
        try:
            echo.start()
        except WrongThread as error:
            return str(error)
        return ""

    assert "astart(" in client._bridge.run(on_the_loop(), operation="test")
    assert not echo.is_running


def test_components_share_it(client, unique):
    """Components moved onto it: idempotent start returning self, state in the repr, and
    twins for those that had none."""
    monitor = HealthMonitor(client, interval=0.2, streams=[])
    assert monitor.start() is monitor.start() and "running" in repr(monitor)
    monitor.stop()
    monitor.stop()
    assert not monitor.running and "stopped" in repr(monitor)

    pool = SharedToolPool(client, {"upper": str.upper}, root=unique)  # had no async twins

    async def main() -> None:
        async with pool:
            assert pool.is_running and len(pool._subscriptions) == pool.workers
        assert not pool._subscriptions

    asyncio.run(main())
    assert "stopped" in repr(pool)

    with DeadLetterOffice(client, streams=()) as office:
        assert office.start(sweep=False) is office and office.is_running
    assert not office.is_running


def test_once_the_loop_is_gone_stop_and_close_return_at_once(lab, unique, monkeypatch):
    """At interpreter exit the loop's daemon thread is frozen: a widget's __del__ closing its
    observer must not wait for it (make bench's dashboard run hung there)."""
    from agentlab import BridgeStopped

    client = lab.connect(f"exit-{unique}")
    echo = Echo(client, f"{unique}.echo").start()
    bridge = client._bridge
    finished = threading.Thread(target=lambda: None)
    finished.start()
    finished.join()
    monkeypatch.setattr(bridge, "thread", finished)  # as the loop's thread looks at exit
    assert bridge.stopped
    echo.stop()                       # returns at once, marked stopped
    assert not echo.is_running
    client.close()                    # so does closing the connection
    with pytest.raises(BridgeStopped, match="process is exiting"):
        bridge.run(asyncio.sleep(0), operation="anything")
    monkeypatch.undo()                # the session's loop goes on for the other tests
    bridge.run(client.nc.close(), operation="close")  # the socket the "exit" left open
