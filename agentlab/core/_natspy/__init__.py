"""nats-py's internals, in one place: the fast path between caller threads and the socket
(batched writes, a request mux) and the server facts nats-py keeps only privately.

Every private nats-py attribute agentlab uses is listed in ``INTERNALS`` and reached only
from this package, through a helper that says why. A connection checks the ones the fast
path needs when it is made (``Outbound.attach``, ``RequestMux.start``); if one is missing,
that connection sends through nats-py's public API instead (slower, never lossy) and one
warning names what is missing. tests/test_natspy_canary.py checks the same list against
the installed nats-py, and pyproject.toml pins nats-py to the minor series it passed on.

Why internals at all: speed. A thread hop per publish costs ~50x a raw publish, so caller
threads append ready-made protocol commands to a queue and the loop writes whole batches
with one call (see benchmarks/foundation.py for the figures).

A package, not one module, only for length: ``internals`` (the list, its check, the helpers
outside the fast path), ``outbound`` (the writes), ``mux`` (requests), ``protocol`` (the
commands, which touch no nats-py).
"""

from .internals import (
    FAST_PATH,
    INTERNALS,
    check,
    fast_path_missing,
    nats_py_version,
    route_requests,
    server_info,
)
from .mux import PendingReply, RequestMux
from .outbound import HIGH_WATER, Outbound, drain_subscription, flush_in_order
from .protocol import encode_headers, parse_pub, pub_command

__all__ = ["FAST_PATH", "HIGH_WATER", "INTERNALS", "Outbound", "PendingReply", "RequestMux",
           "check", "drain_subscription", "encode_headers", "fast_path_missing",
           "flush_in_order", "nats_py_version", "parse_pub", "pub_command", "route_requests",
           "server_info"]
