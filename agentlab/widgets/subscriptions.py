"""A live view of subscriptions: who received what, as wildcards match and queue groups share.

    SubscriptionsView(observer, [star, rest])        # two patterns, which message each got
    SubscriptionsView(observer, workers)             # a queue group sharing the work

``subscriptions`` is read at every update, so subscriptions appended to the same list later
(a worker joining) appear too. The counts are the subscriptions' own; the messages are the
observer's (agentlab.observe.subscriptions says how the two meet).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..observe.observer import Observer
from ..observe.subscriptions import (
    SubscriptionsSnapshot,
    subscriptions_html,
    subscriptions_snapshot,
)
from .views import _View

__all__ = ["SubscriptionsView"]


class SubscriptionsView(_View):
    """Each subscription's connection, pattern, queue group and counts, and which of the last
    ``limit`` messages reached which pattern or queue group."""

    def __init__(self, observer: Observer, subscriptions: Sequence[Any], *, limit: int = 12,
                 **kwargs: Any):
        self.subscriptions = subscriptions
        self.limit = limit
        super().__init__(observer, **kwargs)

    def snapshot(self) -> SubscriptionsSnapshot:
        return subscriptions_snapshot(self.observer.flow(limit=4 * self.limit, hide_noise=True),
                                      list(self.subscriptions), limit=self.limit)

    def _key(self) -> Any:
        return self.observer.version[0], tuple(
            (getattr(s, "received", 0), getattr(s, "handled", 0)) for s in self.subscriptions)

    def render(self) -> str:
        return subscriptions_html(self.snapshot())
