"""Turns the server's asynchronous permission errors into exceptions at the call that caused them.

nats-py reports ``-ERR 'Permissions Violation for Publish to "x"'`` only to ``error_cb``: the
publish itself returned long ago. Each connection keeps a short log of those errors; a call
that needs an answer marks the log, makes the server answer (a PING), then looks for a
violation on its own subject since the mark (DESIGN.md decision 5).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable
from typing import Any

from ..errors import PermissionDenied
from ._natspy import route_requests

_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.I)


class ViolationLog:
    def __init__(self, identity: str | None):
        self.identity = identity
        self._entries: deque[tuple[int, str, str, str]] = deque(maxlen=1000)
        self._seq = 0
        self._denied_publish: set[str] = set()
        self.on_publish_denied: Callable[[str, BaseException], None] | None = None
        # Extra advice for a refused subject (tenants explain their naming rules here).
        self.hint_for: Callable[[str], str] | None = None

    def denied(self, subject: str) -> PermissionDenied:
        hint = self.hint_for(subject) if self.hint_for is not None else ""
        return PermissionDenied("publish", subject, self.identity, "", hint)

    def record(self, error: BaseException) -> bool:
        """Keep ``error`` if it is a permissions violation; tell whether it was one."""
        text = str(error)
        found = _VIOLATION.search(text)
        if not found:
            return False
        kind = "publish" if found.group(1).lower() == "publish" else "subscribe"
        subject = found.group(2).lower()  # nats-py lowercases the server's text
        self._seq += 1
        self._entries.append((self._seq, kind, subject, text.removeprefix("nats: ")))
        if kind == "publish":
            self._denied_publish.add(subject)
            if self.on_publish_denied is not None:
                self.on_publish_denied(subject, PermissionDenied(
                    "publish", found.group(2), self.identity, text.removeprefix("nats: ")))
        return True

    def mark(self) -> int:
        return self._seq

    def raise_if_denied(self, action: str, subject: str, *, since: int, hint: str = "") -> None:
        kind = action.split()[0]
        wanted = subject.lower()
        for seq, entry_kind, entry_subject, text in self._entries:
            if seq > since and entry_kind == kind and entry_subject == wanted:
                raise PermissionDenied(kind, subject, self.identity, text, hint)

    def raise_if_known_denied(self, action: str, subject: str) -> None:
        """Permissions do not change during a connection: fail fast on a known refusal."""
        if subject.lower() in self._denied_publish:
            raise PermissionDenied(action.split()[0], subject, self.identity)


class FirstPublishCheck:
    """Checks the first publish to each subject, so a refusal raises at that publish.

    Only servers that require auth can forbid anything, so only their connections
    (``enabled``) pay for the round trip; a subject once allowed is not checked again.

        mark = check.mark_if_unchecked(subject)   # before sending: the -ERR may come first
        send(...)
        if mark is not None:
            flush(); check.confirm(subject, mark)  # PermissionDenied if it was refused
    """

    def __init__(self, violations: ViolationLog, enabled: bool):
        self.violations = violations
        self.enabled = enabled
        self._allowed: set[str] = set()

    def mark_if_unchecked(self, subject: str) -> int | None:
        """None if ``subject`` needs no check, else the violation log's mark to check from."""
        if not self.enabled or subject in self._allowed:
            return None
        return self.violations.mark()

    def confirm(self, subject: str, mark: int) -> None:
        """Raise PermissionDenied if the server refused ``subject`` since ``mark``; else
        remember that it is allowed. Call after a flush, when the server has answered."""
        self.violations.raise_if_denied("publish", subject, since=mark)
        if len(self._allowed) > 10_000:
            self._allowed.clear()
        self._allowed.add(subject)


def fail_fast_on_denied_requests(nc: Any, violations: ViolationLog) -> None:
    """Make nats-py's own requests (the JetStream API, KV, object stores) raise
    PermissionDenied when the server refuses them, instead of waiting out their timeout.

    The server answers a forbidden publish with an asynchronous ``-ERR`` only; the
    violation log sees it and fails the request waiting on that subject.
    """
    waiting: dict[str, list[asyncio.Future]] = {}
    chained = violations.on_publish_denied

    def on_denied(subject: str, error: BaseException) -> None:
        if chained is not None:
            chained(subject, error)
        for future in waiting.pop(subject, []):
            if not future.done():
                future.set_exception(error)

    violations.on_publish_denied = on_denied
    original = nc.request

    async def request(subject: str, payload: bytes = b"", timeout: float = 0.5,
                      old_style: bool = False, headers: dict[str, Any] | None = None) -> Any:
        if subject.lower() in violations._denied_publish:
            raise violations.denied(subject)
        key = subject.lower()
        denied = asyncio.get_running_loop().create_future()
        waiting.setdefault(key, []).append(denied)
        answer = asyncio.ensure_future(original(subject, payload, timeout=timeout,
                                                old_style=old_style, headers=headers))
        try:
            await asyncio.wait({answer, denied}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            answer.cancel()
            raise
        finally:
            if denied in waiting.get(key, []):
                waiting[key].remove(denied)
                if not waiting[key]:
                    del waiting[key]
        if answer.done():
            if denied.done() and not denied.cancelled():
                denied.exception()  # retrieved: the answer won the race
            denied.cancel()
            return answer.result()
        answer.cancel()
        denied.exception()
        raise violations.denied(subject) from None

    route_requests(nc, request)  # nats-py's JetStream, KV and object stores come here too
