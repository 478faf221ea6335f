"""How old is the oldest message a consumer has not processed yet? Measured, not estimated.

    oldest_unprocessed(client, "AGENT_TASKS", "cto")     # (stream seq, stored at) or None

Everything at or below a consumer's ack floor is acknowledged, so the first message *above*
the ack floor that matches the consumer's filter is the oldest one still unprocessed
(delivered and awaiting its ack, or not delivered yet). We ask the stream for it with one
direct get, ``{"seq": ack_floor.stream_seq + 1, "next_by_subj": <filter>}``
(``$JS.API.DIRECT.GET``, or ``$JS.API.STREAM.MSG.GET`` when the stream does not allow direct
gets), once per filter subject, and take the earliest; its stored timestamp gives the age.
A consumer with nothing pending and nothing awaiting an ack is not asked about at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from nats.js.api import ConsumerInfo

from ..errors import MessageNotFound, StreamNotFound

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["oldest_unprocessed", "afind_oldest_unprocessed"]


def oldest_unprocessed(client: Client, stream: str, consumer: str | ConsumerInfo
                       ) -> tuple[int, datetime] | None:
    """``(stream sequence, stored at)`` of the consumer's oldest unacknowledged message, or
    None when it has nothing left to process. See the module docstring for the method."""
    async def run() -> tuple[int, datetime] | None:
        info = consumer if isinstance(consumer, ConsumerInfo) else \
            await client.js.aconsumer_info(stream, consumer)
        stream_info = await client.js.astream_info(stream)
        return await afind_oldest_unprocessed(client, stream, info,
                                             bool(stream_info.config.allow_direct))

    return client._bridge.run(run(), operation="oldest_unprocessed")


async def afind_oldest_unprocessed(client: Client, stream: str, info: ConsumerInfo,
                                  direct: bool) -> tuple[int, datetime] | None:
    """The same, on the loop, from a ConsumerInfo already fetched; ``direct``: whether the
    stream allows direct gets."""
    if not (info.num_pending or info.num_ack_pending):
        return None  # everything delivered has been acknowledged
    config = info.config
    filters: Sequence[str] = config.filter_subjects or \
        ([config.filter_subject] if config.filter_subject else [">"])
    start = (info.ack_floor.stream_seq if info.ack_floor else 0) + 1
    found: list[tuple[int, datetime]] = []
    for subject in filters:
        try:
            msg = await client.js.aget_message(stream, start, subject=subject, direct=direct)
        except (MessageNotFound, StreamNotFound):
            continue  # nothing above the ack floor on this subject (acked since we looked)
        if msg.time is not None:
            found.append((msg.seq, msg.time))
    return min(found) if found else None
