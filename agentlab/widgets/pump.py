"""The UI pump: one daemon thread that refreshes every live view, at most ~10 times a second.

    pump = get_pump()        # started by the first view, stops when the last one closes

Views never touch NATS (DESIGN.md decision 7). Each tick the pump asks every view whether
what it shows has changed (a cheap key: the recorder's version, the poll count) and, if
so and its own minimum interval has passed, renders new HTML from a snapshot and sets the
widget's value inside ``hold_sync()``. Setting a trait from this thread sends a comm
message; ipykernel (6+) sends those through its thread-safe IOPub socket. No ``with
output:`` blocks run here.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any, Protocol

log = logging.getLogger("agentlab")


class Pumped(Protocol):
    def _pump_tick(self, now: float) -> None: ...


class UIPump:
    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.ticks = 0
        self.errors = 0
        self._views: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def register(self, view: Pumped) -> None:
        with self._lock:
            self._views.add(view)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="agentlab-ui-pump",
                                                daemon=True)
                self._thread.start()

    def unregister(self, view: Pumped) -> None:
        with self._lock:
            self._views.discard(view)

    @property
    def views(self) -> list[Any]:
        return list(self._views)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            with self._lock:
                views = list(self._views)
                if not views:
                    self._thread = None
                    return
            for view in views:
                try:
                    view._pump_tick(time.time())
                except Exception:  # one broken view must not stop the others
                    self.errors += 1
                    if self.errors <= 3:
                        log.exception("agentlab UI pump: updating %r failed", view)
            self.ticks += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


_pump: UIPump | None = None
_pump_lock = threading.Lock()


def get_pump() -> UIPump:
    global _pump
    with _pump_lock:
        if _pump is None:
            _pump = UIPump()
        return _pump
