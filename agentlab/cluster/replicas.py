"""The reference streams declared with replicas, retried while a new cluster settles."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..errors import JetStreamError

if TYPE_CHECKING:
    from ..core.client import Client
    from ..core.subjects import Subjects

__all__ = ["declare_replicated_streams"]

log = logging.getLogger("agentlab")

_RETRYABLE = ("temporarily unavailable", "insufficient resources", "no suitable peers",
              "timed out", "timeout", "leader")


def declare_replicated_streams(client: Client, replicas: int = 3,
                               subjects: Subjects | None = None, timeout: float = 20
                               ) -> tuple[list[str], int]:
    """The reference streams with ``replicas`` copies each; returns (names, replicas used).

    A server that is not clustered cannot keep more than one copy: there, one is used (and
    a warning logged). Just after a cluster forms, JetStream may not place replicas yet; the
    declaration is retried until ``timeout``.
    """
    from ..errors import RequestTimeout
    from ..org.streams import declare_reference_streams

    if replicas > 1 and not client.nc._server_info.get("cluster"):
        log.warning("The server at %s is not part of a cluster: the streams get 1 replica, "
                    "not %d.", client.url, replicas)
        replicas = 1
    deadline = time.monotonic() + timeout
    while True:
        try:
            return declare_reference_streams(client, subjects, replicas=replicas), replicas
        except (JetStreamError, RequestTimeout) as error:
            retry = isinstance(error, RequestTimeout) or \
                any(word in str(error).lower() for word in _RETRYABLE)
            if not retry or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
