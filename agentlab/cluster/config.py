"""The node config files: where they are, the NATS config format they are written in, and
what agentlab reads from each (server name, ports, cluster name, routes).

    config = NodeConfig.read(node_config_paths()[0])   # deploy/nats/node-1.conf
    config.route_targets()                             # [("nats-1", 6222), ...]
"""

from __future__ import annotations

import copy
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.credentials import Login

__all__ = ["CONFIG_DIR_ENV", "NodeConfig", "config_dir", "node_config_paths", "parse_conf"]

CONFIG_DIR_ENV = "AGENTLAB_NATS_CONFIG_DIR"
# agentlab/cluster/config.py -> the repository root, which holds deploy/nats/
_REPOSITORY = Path(__file__).resolve().parents[2]


def config_dir() -> Path:
    """Where the node configs are: ``$AGENTLAB_NATS_CONFIG_DIR``, else the repository's
    ``deploy/nats`` next to this package (a checkout, or an editable install of it)."""
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return _REPOSITORY / "deploy" / "nats"


def node_config_paths(directory: Path | None = None) -> list[Path]:
    """``node-1.conf``, ``node-2.conf``, ... in ``directory``, in node order."""
    directory = Path(directory) if directory else config_dir()
    found = [(int(m.group(1)), p) for p in directory.glob("node-*.conf")
             if (m := re.fullmatch(r"node-(\d+)\.conf", p.name))]
    if not found:
        raise FileNotFoundError(
            f"No node configs (node-1.conf, ...) in {directory}. They ship with the agentlab "
            f"repository in deploy/nats/: run from a checkout (pip install -e .), or set "
            f"{CONFIG_DIR_ENV} to a folder that holds them.")
    return [p for _, p in sorted(found)]


class _ConfParser:
    """The part of the NATS config format that the node files use: ``key: value`` (also
    ``=`` or a space), ``{ maps }``, ``[ arrays ]``, quoted or bare strings, numbers,
    booleans, ``#`` and ``//`` comments. ``include`` and ``$variables`` are refused."""

    _BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}

    def __init__(self, text: str, source: str):
        self.s, self.i, self.source = text, 0, source

    def fail(self, what: str) -> ValueError:
        line = self.s.count("\n", 0, self.i) + 1
        return ValueError(f"{self.source}, line {line}: {what}")

    def _comment_here(self) -> bool:
        s, i = self.s, self.i
        at_word_start = i == 0 or s[i - 1] in " \t\r\n,;{}[]"
        return at_word_start and (s[i] == "#" or s.startswith("//", i))

    def skip(self, separators: str = "") -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r" or c in separators:
                self.i += 1
            elif self._comment_here():
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            else:
                return

    def document(self) -> dict[str, Any]:
        return self.mapping(closing=None)

    def mapping(self, closing: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            self.skip("\n,;")
            if self.i >= len(self.s):
                if closing:
                    raise self.fail(f"missing '{closing}'")
                return out
            if closing and self.s[self.i] == closing:
                self.i += 1
                return out
            match = re.compile(r"[A-Za-z0-9_.$-]+|\"[^\"\n]*\"|'[^'\n]*'").match(self.s, self.i)
            if not match:
                raise self.fail(f"expected a key, found {self.s[self.i]!r}")
            key = match.group().strip("\"'")
            self.i = match.end()
            if key == "include":
                raise self.fail("'include' is not supported in the node configs")
            self.skip()
            if self.i < len(self.s) and self.s[self.i] in ":=":
                self.i += 1
                self.skip()
            if key in out:
                raise self.fail(f"'{key}' is set twice")
            out[key] = self.value()

    def value(self) -> Any:
        if self.i >= len(self.s):
            raise self.fail("a value is missing")
        c = self.s[self.i]
        if c == "{":
            self.i += 1
            return self.mapping(closing="}")
        if c == "[":
            self.i += 1
            items: list[Any] = []
            while True:
                self.skip("\n,")
                if self.i >= len(self.s):
                    raise self.fail("missing ']'")
                if self.s[self.i] == "]":
                    self.i += 1
                    return items
                items.append(self.value())
        if c in "\"'":
            end = self.s.find(c, self.i + 1)
            if end < 0:
                raise self.fail("unterminated string")
            text, self.i = self.s[self.i + 1:end], end + 1
            return text
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in "\n,;}]" and not self._comment_here():
            self.i += 1
        raw = self.s[start:self.i].strip()
        if raw.startswith("$"):
            raise self.fail("variables ($NAME) are not supported in the node configs")
        if re.fullmatch(r"-?\d+", raw):
            return int(raw)
        return self._BOOLS.get(raw.lower(), raw)


def parse_conf(text: str, source: str = "<config>") -> dict[str, Any]:
    """A nats-server config (the subset the node files use) as nested dicts and lists."""
    return _ConfParser(text, source).document()


def _host_port(value: Any, default_host: str = "0.0.0.0") -> tuple[str, int]:
    if isinstance(value, int):
        return default_host, value
    host, _, port = str(value).rpartition(":")
    return host or default_host, int(port)


@dataclass(frozen=True)
class NodeConfig:
    """What agentlab needs to know of one node's config file (the rest it leaves alone)."""

    path: Path
    server_name: str
    client_port: int
    http_port: int
    cluster_name: str
    cluster_port: int
    routes: tuple[str, ...]  # as written, e.g. nats-route://nats-2:6222
    settings: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def read(cls, path: str | Path) -> NodeConfig:
        path = Path(path).resolve()
        conf = parse_conf(path.read_text(encoding="utf-8"), str(path))

        def need(mapping: dict[str, Any], key: str, where: str = "") -> Any:
            if key not in mapping:
                raise ValueError(f"{path}: '{where}{key}' is missing")
            return mapping[key]

        cluster, js = need(conf, "cluster"), need(conf, "jetstream")
        if not isinstance(cluster, dict) or not isinstance(js, dict):
            raise ValueError(f"{path}: 'cluster' and 'jetstream' must be {{ blocks }}")
        if "store_dir" in js:
            raise ValueError(
                f"{path}: leave jetstream.store_dir out of the node config. Whoever runs the "
                "node passes it with --store_dir (docker-compose.yml: /data; agentlab: a "
                "directory per node), and nats-server refuses it in both places at once.")
        client = conf.get("listen", conf.get("port", 4222))
        http = conf.get("http", conf.get("http_port"))
        if http is None:
            raise ValueError(f"{path}: set http_port, the monitoring port agentlab reads")
        routes = need(cluster, "routes", "cluster.")
        return cls(path=path, server_name=str(need(conf, "server_name")),
                   client_port=_host_port(client)[1], http_port=_host_port(http)[1],
                   cluster_name=str(need(cluster, "name", "cluster.")),
                   cluster_port=_host_port(cluster.get("listen", cluster.get("port", 6222)))[1],
                   routes=tuple(str(r) for r in routes), settings=conf)

    def closed_overrides(self, login: Login, route_login: Login, routes: list[str], *,
                         tls: dict[str, Any] | None = None,
                         route_tls: dict[str, Any] | None = None) -> dict[str, str]:
        """What a config that includes this file sets after it (each key replaces the
        file's) so that only ``login`` gets in: the user the file lets in anonymously
        (``no_auth_user``) becomes ``login``, in its account, with its permissions; a file
        without accounts gets an ``authorization`` block. The routes (``routes``: URLs
        without a login) get ``route_login``, in the config rather than on a command line
        where every user of the host could read it. ``tls`` and ``route_tls`` (nats-server
        ``tls { }`` blocks) make the client port and the routes TLS only. Values are JSON,
        which the format takes."""
        settings = self.settings
        out: dict[str, str] = {}
        accounts, anonymous = settings.get("accounts"), settings.get("no_auth_user")
        if anonymous:
            holders = [name for name, account in (accounts or {}).items()
                       if isinstance(account, dict) and any(
                           isinstance(u, dict) and u.get("user") == anonymous
                           for u in account.get("users") or [])]
            if not holders:
                raise ValueError(f"{self.path}: no_auth_user {anonymous!r} is no account's "
                                 "user, so agentlab cannot tell where its login belongs")
            closed: dict[str, Any] = copy.deepcopy(accounts or {})
            closed[holders[0]]["users"] = [
                {**u, "user": login.user, "password": login.password}
                if isinstance(u, dict) and u.get("user") == anonymous else u
                for u in closed[holders[0]]["users"]]
            out["accounts"] = json.dumps(closed)
            out["no_auth_user"] = '""'  # unset: a client without the login is refused
        elif accounts or "authorization" in settings:
            raise ValueError(f"{self.path}: it declares logins of its own and no "
                             "no_auth_user, so agentlab cannot tell which login is the lab's")
        else:
            out["authorization"] = json.dumps(login.kwargs())
        cluster = dict(settings["cluster"])
        cluster["routes"] = [urllib.parse.urlsplit(route)._replace(
            netloc=f"{route_login.user}:{route_login.password}@"
                   f"{urllib.parse.urlsplit(route).netloc}").geturl() for route in routes]
        cluster["authorization"] = route_login.kwargs()
        if route_tls is not None:
            cluster["tls"] = route_tls  # a route's certificate is checked both ways
        out["cluster"] = json.dumps(cluster)
        if tls is not None:
            out["tls"] = json.dumps(tls)
        return out

    def route_targets(self) -> list[tuple[str, int]]:
        """``(host, port)`` of each route: in docker compose, a service name and its port."""
        out = []
        for route in self.routes:
            url = urllib.parse.urlsplit(route)
            if not url.hostname or not url.port:
                raise ValueError(f"{self.path}: route {route!r} needs a host and a port")
            out.append((url.hostname, url.port))
        return out
