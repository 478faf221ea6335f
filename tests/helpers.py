"""Helpers shared by the test modules that drive reference agents on a real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition", *,
             interval: float = 0.02) -> Any:
    """Poll ``condition()`` until it is truthy and return that value; AssertionError naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def stored(client, stream: str, subject: str) -> int:
    """How many messages ``stream`` holds on exactly ``subject`` (the work queue's depth)."""
    js = client.nc.jetstream()
    info = client._bridge.run(js.stream_info(stream, subjects_filter=subject), operation="info")
    return (info.state.subjects or {}).get(subject, 0)
