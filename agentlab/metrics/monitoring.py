"""The NATS server's own monitoring endpoint (``/varz``, ``/jsz``, ``/connz`` ...), if it has one.

    endpoint = find_monitoring(client)                     # a MonitoringEndpoint, or None
    endpoint = find_monitoring(client, "http://127.0.0.1:8222")
    print(monitoring_line(client))   # "Monitoring: http://127.0.0.1:8222 (/varz /jsz /connz)"

A NATS connection does not say where the server's HTTP monitoring listens (INFO carries no
such field), so the candidates are tried in order: the URL given, ``$AGENTLAB_MONITOR_URL``,
the lab's own (``agentlab.start()``'s embedded server knows its random port), then
nats-server's conventional port 8222 on the server's host and the client port + 4000 (the
compose file maps 4222/8222, 4223/8223, 4224/8224). A candidate counts only if its
``/varz`` names the ``server_id`` this connection is talking to: a guess that reaches
another server (another node, another project's) is never shown as this one's.

No prometheus-client here: ``agentlab status`` uses this without the ``metrics`` extra.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core._natspy import server_info

if TYPE_CHECKING:
    from ..core.client import Client

__all__ = ["MONITOR_URL_ENV", "MonitoringEndpoint", "find_monitoring", "monitoring_line"]

MONITOR_URL_ENV = "AGENTLAB_MONITOR_URL"
NATS_MONITOR_PORT = 8222      # nats-server -m 8222, the port its docs and images use
COMPOSE_PORT_OFFSET = 4000    # docker-compose.yml: client 4223 -> monitoring 8223
PROBE_TIMEOUT = 0.5
ENDPOINTS = "/varz /jsz /connz"


@dataclass(frozen=True)
class MonitoringEndpoint:
    """A monitoring endpoint that answered, and which server it speaks for."""

    url: str                  # without a trailing slash: url + "/jsz" is the JetStream page
    server_name: str
    server_id: str
    ours: bool                # it is the server this connection is talking to

    def __str__(self) -> str:
        return f"{self.url} ({ENDPOINTS})"


def _varz(url: str, timeout: float) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/varz", timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):  # refused, timed out, not HTTP, not JSON
        return None
    return body if isinstance(body, dict) and "server_id" in body else None


def _guesses(client: Client) -> list[str]:
    connected = getattr(client.nc, "connected_url", None)
    host = getattr(connected, "hostname", None) or "127.0.0.1"
    port = getattr(connected, "port", None)
    host = f"[{host}]" if ":" in host else host
    ports = [NATS_MONITOR_PORT] + ([port + COMPOSE_PORT_OFFSET] if isinstance(port, int)
                                   and port + COMPOSE_PORT_OFFSET < 65536 else [])
    return [f"http://{host}:{p}" for p in dict.fromkeys(ports)]


def _normal(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.path.endswith(("/varz", "/jsz", "/connz", "/healthz")):
        url = url.rsplit("/", 1)[0]  # a page's URL was given: the endpoint is its base
    return url


def _candidates(client: Client, url: str | None) -> tuple[list[str], list[str]]:
    """(URLs someone named, URLs guessed)."""
    named = [u for u in (url, os.environ.get(MONITOR_URL_ENV),
                         getattr(client, "monitor_url", None)) if isinstance(u, str) and u]
    return [_normal(u) for u in named], _guesses(client)


def find_monitoring(client: Client, url: str | None = None, *,
                    timeout: float = PROBE_TIMEOUT) -> MonitoringEndpoint | None:
    """The monitoring endpoint of the server ``client`` is connected to, or None.

    A URL named (``url``, ``$AGENTLAB_MONITOR_URL``, the lab's) that answers is returned
    even if it speaks for another server (``ours`` is then False); a guessed one only if it
    is this server's."""
    ours = str(server_info(client.nc).get("server_id") or "")
    named, guessed = _candidates(client, url)
    for candidate in dict.fromkeys(named + guessed):
        varz = _varz(candidate, timeout)
        if varz is None:
            continue
        endpoint = MonitoringEndpoint(candidate, str(varz.get("server_name") or ""),
                                      str(varz["server_id"]), varz["server_id"] == ours)
        if endpoint.ours or candidate in named:
            return endpoint
    return None


def monitoring_line(client: Client, url: str | None = None, *,
                    timeout: float = PROBE_TIMEOUT) -> str:
    """One line for ``agentlab status``: where the monitoring endpoint is, or that there is
    none and how to get one."""
    if url is None and getattr(client, "embedded", False) and \
            getattr(client, "monitor_url", None) is None:
        return "Monitoring: off (start(monitor=True))"  # a lab's own server, started without
    endpoint = find_monitoring(client, url, timeout=timeout)
    if endpoint is not None and endpoint.ours:
        return f"Monitoring: {endpoint}"
    if endpoint is not None:
        other = endpoint.server_name or endpoint.server_id
        return (f"Monitoring: {endpoint} answers for another server ({other}), not the one "
                "this connection reached")
    named, guessed = _candidates(client, url)
    tried = ", ".join(dict.fromkeys(named + guessed))
    return (f"Monitoring: none found (tried {tried}). agentlab's servers serve none unless "
            "asked (agentlab server --monitor, agentlab.start(monitor=True)); any nats-server "
            "serves it when started with -m PORT (or http_port: PORT in its config); pass "
            f"--monitor-url URL or set {MONITOR_URL_ENV} if it listens elsewhere.")
