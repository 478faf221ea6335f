"""One node of the local cluster: an EmbeddedServer that runs its config file, closed.

The node's file (``deploy/nats/node-1.conf``) is included unchanged by a small config of the
node's own (mode 0600, in its store), which then closes what the file leaves open on one
machine: the anonymous user (``no_auth_user``) becomes the lab's login, and the routes
between the nodes get a login of their own. nats-server lets a later definition of a key
replace the included one, so docker compose runs the same file open, as it always did.
With the cluster's certificates (``LocalCluster(tls=...)``) the small config also makes the
client port and the routes TLS only.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ..core.credentials import Login
from ..core.server import EmbeddedServer
from ..core.tls import LabCertificates
from .config import NodeConfig

__all__ = ["ClusterNode"]


class ClusterNode(EmbeddedServer):
    """One cluster node: its config file included by a closing one, loopback ports as flags."""

    def __init__(self, config: NodeConfig, store_dir: Path, cluster_port: int, *,
                 login: Login | None = None, route_login: Login | None = None,
                 certs: LabCertificates | None = None):
        login = login or Login.generate()
        # The nodes' /jsz is how LocalCluster sees leaders and copies: monitoring stays on.
        super().__init__(store_dir=store_dir, name=config.server_name, user=login.user,
                         password=login.password, monitor=True,
                         tls=None if certs is None else "mutual" if certs.mutual else "tls")
        self._certs = certs  # the cluster's: one CA, one certificate for every node
        self.config = config
        self.cluster_port = cluster_port
        self.route_login = route_login or Login.generate("route")
        self.routes: list[str] = []  # loopback URLs, set by LocalCluster
        self._monitor_port: int | None = None

    @property
    def config_path(self) -> Path:
        return self._config_file

    def _config(self) -> str:
        try:  # nats-server resolves an include against the including file's folder
            include = os.path.relpath(self.config.path, self._store)
        except ValueError:  # another drive (Windows)
            include = str(self.config.path)
        assert self._server_login is not None  # __init__ always gives a node its login
        certs = self._certs
        overrides = self.config.closed_overrides(
            self._server_login, self.route_login, self.routes,
            tls=certs.server_settings() if certs else None,
            route_tls=certs.server_settings(verify=False) if certs else None)
        return "\n".join([f"# {self.name}: {self.config.path}, closed to anyone without "
                          "the lab's login", f"include {json.dumps(include)}",
                          *(f"{key}: {value}" for key, value in overrides.items())]) + "\n"

    _writes_credentials = False  # the cluster writes one file, with every node's URL

    def _make_certificates(self) -> None:
        """Nothing: the cluster made one set for all its nodes (``certs=``)."""

    def _secrets(self) -> list[str]:
        return [*super()._secrets(), self.route_login.password]

    def _command(self, exe: Path) -> list[str]:
        store = self._store.as_posix()
        args = [str(exe), "-c", str(self.config_path),
                "-a", self.host, "-p", str(self.port or -1),
                "-m", str(self._monitor_port or -1),
                "--ports_file_dir", store, "-l", self._log_file.as_posix(), "-sd", store,
                "--cluster_listen", f"nats://{self.host}:{self.cluster_port}"]
        return args  # the routes are in the config: their URLs carry the route login

    def _wait_ready(self, deadline: float) -> None:
        super()._wait_ready(deadline)
        assert self.monitor_url is not None  # read from the ports file, as the client port
        # Keep the monitoring port too across restarts: a bookmarked /jsz stays valid.
        self._monitor_port = int(self.monitor_url.rsplit(":", 1)[1])

    def __repr__(self) -> str:
        return super().__repr__().replace("<EmbeddedServer", "<ClusterNode", 1)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()
