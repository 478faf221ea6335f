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
import re
import threading
import time
import weakref
from collections import deque
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


class ViewRecord:
    """What one live view showed while it lived: its kind, its widget's model id, how often
    its HTML changed, and how many different contents it showed. Clocks (a poll's time, the
    seconds since something) are left out of the comparison: a view whose only change is the
    time it was polled showed one content. Records outlive their views (a test reads them at
    the end of a notebook)."""

    __slots__ = ("kind", "model_id", "created", "updates", "_contents")
    _CLOCKS = re.compile(r"\d\d:\d\d:\d\d(\.\d+)?|poll #\d+|\+\s*\d+\.\d+s|"
                         r"seen \d+\.\d s ago|\d+ events/s")

    def __init__(self, kind: str, model_id: str):
        self.kind, self.model_id, self.created = kind, model_id, time.time()
        self.updates = 0
        self._contents: set[int] = set()

    def saw(self, html: str) -> None:
        self.updates += 1
        if len(self._contents) < 10_000:
            self._contents.add(hash(self._CLOCKS.sub("", html)))

    @property
    def contents(self) -> int:
        """How many different contents the view showed (clocks aside)."""
        return len(self._contents)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_id": self.model_id, "updates": self.updates,
                "contents": self.contents}

    def __repr__(self) -> str:
        return f"<ViewRecord {self.kind} updates={self.updates} contents={self.contents}>"


_records: deque[ViewRecord] = deque(maxlen=1000)


def record_view(view: Any) -> ViewRecord:
    """A new record of ``view`` in this process's list of live views (``view_records()``)."""
    record = ViewRecord(type(view).__name__, str(getattr(view, "model_id", "") or ""))
    _records.append(record)
    return record


def view_records() -> list[ViewRecord]:
    """Every live view made in this process (the last 1,000), oldest first."""
    return list(_records)


_pump: UIPump | None = None
_pump_lock = threading.Lock()


def get_pump() -> UIPump:
    global _pump
    with _pump_lock:
        if _pump is None:
            _pump = UIPump()
        return _pump
