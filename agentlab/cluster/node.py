"""One node of the local cluster: an EmbeddedServer that runs its config file unchanged."""

from __future__ import annotations

import socket
from pathlib import Path

from ..core.server import EmbeddedServer
from .config import NodeConfig

__all__ = ["ClusterNode"]


class ClusterNode(EmbeddedServer):
    """One cluster node: its config file run unchanged, with loopback overrides as flags."""

    def __init__(self, config: NodeConfig, store_dir: Path, cluster_port: int):
        super().__init__(store_dir=store_dir, name=config.server_name)
        self.config = config
        self.cluster_port = cluster_port
        self.routes: list[str] = []  # loopback URLs, set by LocalCluster
        self._monitor_port: int | None = None

    @property
    def config_path(self) -> Path:
        return self.config.path

    def _write_config(self) -> None:
        pass  # the node's file is used as it is

    def _command(self, exe: Path) -> list[str]:
        store = self._store.as_posix()
        args = [str(exe), "-c", str(self.config.path),
                "-a", "127.0.0.1", "-p", str(self.port or -1),
                "-m", str(self._monitor_port or -1),
                "--ports_file_dir", store, "-l", self._log_file.as_posix(), "-sd", store,
                "--cluster_listen", f"nats://127.0.0.1:{self.cluster_port}"]
        if self.routes:
            args += ["--routes", ",".join(self.routes)]
        return args

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
