"""``agentlab certs DIR``: the certificates of a TLS deployment (docker-compose.tls.yml).

    agentlab certs deploy/nats/certs          # then: docker compose -f docker-compose.yml
                                              #       -f docker-compose.tls.yml up -d

A CA made for the deployment (its key is not written: nobody can sign another certificate
with it), a server certificate naming the nodes' service names and the loopback names (it
serves the routes too), a client certificate, and two nats CLI contexts that name them:
``context.json`` for containers (``tls://nats-1:4222,...``, paths relative to the folder, so
it can be mounted anywhere) and ``host-context.json`` for this machine (the ports the compose
file publishes on 127.0.0.1, absolute paths). Keys and contexts are mode 0600; the folder is
0700 and nothing secret is printed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.credentials import write_private
from ..core.tls import LabCertificates

__all__ = ["COMPOSE_NODES", "HOST_PORTS", "write_deployment_certs"]

COMPOSE_NODES = ("nats-1", "nats-2", "nats-3")
HOST_PORTS = (4222, 4223, 4224)  # docker-compose.yml publishes the nodes' 4222 there


def write_deployment_certs(directory: str | Path, *, hosts: tuple[str, ...] = COMPOSE_NODES,
                           days: int = 365) -> LabCertificates:
    """Write the CA, the certificates and the two contexts into ``directory``."""
    certs = LabCertificates.generate(directory, mutual=True, hosts=hosts, days=days,
                                     name="agentlab deployment")
    names = {"ca": certs.CA, "cert": certs.CLIENT_CERT, "key": certs.CLIENT_KEY}
    inside = {"description": "agentlab compose cluster over mutual TLS (from a container)",
              "url": ",".join(f"tls://{host}:4222" for host in hosts), **names}
    outside = {"description": "agentlab compose cluster over mutual TLS (from the host)",
               "url": ",".join(f"tls://127.0.0.1:{port}" for port in HOST_PORTS),
               **{key: str(certs.directory / name) for key, name in names.items()}}
    write_private(certs.directory / "context.json", json.dumps(inside, indent=2) + "\n")
    write_private(certs.directory / "host-context.json", json.dumps(outside, indent=2) + "\n")
    return certs


def run(directory: str) -> int:
    from rich.console import Console
    from rich.markup import escape

    certs = write_deployment_certs(directory)
    where = escape(str(certs.directory))
    Console().print(
        f"[bold green]Wrote a CA and mutual TLS certificates[/] to {where} (keys mode 0600; "
        "the CA's key is not kept).\n"
        "  docker compose -f docker-compose.yml -f docker-compose.tls.yml up -d\n"
        "  From this machine:\n"
        "    export AGENTLAB_NATS_URL=" + ",".join(f"tls://127.0.0.1:{p}" for p in HOST_PORTS)
        + f"\n    export AGENTLAB_NATS_CREDENTIALS={where}/host-context.json\n"
        f"  The nats CLI: cp {where}/host-context.json "
        "~/.config/nats/context/agentlab-tls.json\n"
        "    nats --context agentlab-tls stream ls", highlight=False, soft_wrap=True)
    return 0
