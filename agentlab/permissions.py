"""Turns the server's asynchronous permission errors into exceptions at the call that caused them.

nats-py reports ``-ERR 'Permissions Violation for Publish to "x"'`` only to ``error_cb``: the
publish itself returned long ago. Each connection keeps a short log of those errors; a call
that needs an answer marks the log, makes the server answer (a PING), then looks for a
violation on its own subject since the mark (DESIGN.md decision 5).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable

from .errors import PermissionDenied

_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.I)


class ViolationLog:
    def __init__(self, identity: str | None):
        self.identity = identity
        self._entries: deque[tuple[int, str, str, str]] = deque(maxlen=1000)
        self._seq = 0
        self._denied_publish: set[str] = set()
        self.on_publish_denied: Callable[[str, BaseException], None] | None = None

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
