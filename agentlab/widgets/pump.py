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
        # Reentrant: copying the view set can trigger a garbage collection in which a view's
        # Widget.__del__ closes it, and so calls unregister() on this thread, lock held.
        self._lock = threading.RLock()
        self._copying = False
        self._closed_while_copying: list[Any] = []
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
            if self._copying:  # in the pump's own copy (see __init__): the set is in use
                self._closed_while_copying.append(view)
            else:
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
                self._copying = True
                try:
                    views = list(self._views)
                finally:
                    self._copying = False
                closed, self._closed_while_copying = self._closed_while_copying, []
                for view in closed:
                    self._views.discard(view)
                views = [view for view in views if view not in closed]
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
