"""``agentlab.start()``: a running NATS server with JetStream and a connection to it, in one call.

    lab = agentlab.start()            # embedded server, or $AGENTLAB_NATS_URL if set
    lab.publish("genbrain.agents.cto.inbox", "hello")
    cto = lab.connect("cto")          # more named connections to the same server
    lab.close()                       # closes them all and stops the embedded server

The embedded server admits only the lab's login (generated per lab, never printed): every
connection the lab opens uses it, ``lab.client_env()`` hands it to another process (as a
path, ``AGENTLAB_NATS_CREDENTIALS``), ``lab.login()`` to an outside client:
``await nats.connect(lab.url, **lab.login())``.
"""

from __future__ import annotations

import asyncio
import atexit
import ssl
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .core._natspy import server_info
from .core.bridge import get_bridge
from .core.client import Client
from .core.connecting import default_url
from .core.credentials import CREDENTIALS_ENV, credentials_file_for
from .core.server import EmbeddedServer
from .core.tls import tls_mode
from .errors import ServerUnreachable

if TYPE_CHECKING:
    from .cluster import LocalCluster
    from .reports.msgtrace import MessageTraceView
    from .tenants.client import TenantClient
    from .tenants.config import Tenants

_current: Lab | None = None
_current_lock = threading.RLock()  # start(fresh=True) closes the old lab while holding it


class Lab(Client):
    """The lab's own connection, plus the embedded server it started (if any)."""

    server: EmbeddedServer | LocalCluster | None = None  # what start() started, if anything
    tenants: Tenants | None = None  # start(tenants=...): the declared tenants and credentials
    replicas: int = 1  # start(cluster=3): the copies each reference stream keeps
    _cluster_request: int | None = None
    _tls_request: str | None = None
    _sibling_kind = Client  # lab.connect("cto") opens a plain connection, not another lab

    @property
    def cluster(self) -> LocalCluster | None:
        """The local cluster started by ``start(cluster=3)``: stop_node(), stream_leader()..."""
        from .cluster import LocalCluster

        return self.server if isinstance(self.server, LocalCluster) else None

    def tenant(self, tenant: str, name: str | None = None) -> TenantClient:
        """A connection as ``tenant``, with the credentials generated for it: lab.tenant("acme").

        ``lab.tenant("tools")`` connects as the shared tool pool's identity.
        """
        client = self._tenants().connect(self.url, tenant, name=name)
        self._clients.append(client)
        return client

    async def atenant(self, tenant: str, name: str | None = None) -> TenantClient:
        client = await self._tenants().aconnect(self.url, tenant, name=name)
        self._clients.append(client)
        return client

    def _tenants(self) -> Tenants:
        if self.tenants is None:
            raise ValueError("This lab declared no tenants: agentlab.start(tenants=['acme', "
                             "'globex'], fresh=True) starts one that does.")
        return self.tenants

    def trace_message(self, subject: str, data: Any = b"", *,
                      headers: dict[str, str] | None = None, trace_only: bool = False,
                      timeout: float = 2.0) -> MessageTraceView:
        """Publish one message with NATS message tracing on (nats-server 2.11+,
        ``Nats-Trace-Dest``) and show the servers' hops: how it entered, the stream that
        stored it, each subscriber and route it left by, and the stream's consumers.

            lab.trace_message("genbrain.agents.cto.tasks", {"title": "ship it"})

        It displays itself (a diagram and a table in Jupyter, text in a terminal);
        ``.trace`` holds the data. ``trace_only=True`` traces without delivering or storing
        the message (``Nats-Trace-Only``).
        """
        from .reports.msgtrace import trace_message

        return trace_message(self, subject, data, headers=headers, trace_only=trace_only,
                             timeout=timeout)

    async def atrace_message(self, subject: str, data: Any = b"", *,
                             headers: dict[str, str] | None = None, trace_only: bool = False,
                             timeout: float = 2.0) -> MessageTraceView:
        from .reports.msgtrace import atrace_message

        return await atrace_message(self, subject, data, headers=headers,
                                    trace_only=trace_only, timeout=timeout)

    @property
    def monitor_url(self) -> str | None:
        """The server's HTTP monitoring endpoint; None unless ``start(monitor=True)`` (a
        local cluster always has one: it reads its nodes' /jsz)."""
        return self.server.monitor_url if self.server else None

    @property
    def websocket_url(self) -> str | None:
        """Where browsers reach the embedded server (``start(websocket=True)``), else None."""
        server = self.server
        return server.websocket_url if isinstance(server, EmbeddedServer) else None

    @property
    def credentials_path(self) -> str | None:
        """The file (mode 0600, a nats CLI context) holding the embedded server's login."""
        if self.server is not None:
            path = self.server.credentials_path
            return str(path) if path else None
        return credentials_file_for(self.url)  # an outside server: the file this process has

    def login(self) -> dict[str, str]:
        """``user=`` and ``password=`` for an outside client of this lab's server:
        ``await nats.connect(lab.url, **lab.login())``. Secrets: never print or log them,
        never leave them in a notebook's output."""
        return {key: self._login[key] for key in ("user", "password")
                if self._login.get(key) is not None}

    def tls_context(self) -> ssl.SSLContext | None:
        """The ``ssl.SSLContext`` the lab's connections use (the lab's CA; for mutual TLS its
        client certificate too), for an outside client: ``await nats.connect(lab.url,
        tls=lab.tls_context(), **lab.login())``. None for a plain-text server."""
        context = self._login.get("tls")
        return context if isinstance(context, ssl.SSLContext) else None

    def client_env(self) -> dict[str, str]:
        """The environment another process needs to use this lab's server, for
        ``subprocess.Popen(..., env={**os.environ, **lab.client_env()})``:
        ``AGENTLAB_NATS_URL`` and ``AGENTLAB_NATS_CREDENTIALS`` (the path of the credentials
        file, never the password). Every agentlab program reads both."""
        env = {"AGENTLAB_NATS_URL": self.url}
        if self.credentials_path:
            env[CREDENTIALS_ENV] = self.credentials_path
        return env

    @property
    def embedded(self) -> bool:
        return self.server is not None

    def close(self) -> None:
        """Close every connection opened from this lab, then stop the embedded server."""
        super().close()  # closes every connection opened from it first
        self._stop_server()

    async def aclose(self) -> None:
        await super().aclose()
        # Stopping the process waits for it: off the loop, which other labs' clients share.
        await asyncio.get_running_loop().run_in_executor(None, self._stop_server)

    def _stop_server(self) -> None:
        global _current
        if self.server is not None:
            self.server.stop()
        with _current_lock:
            if _current is self:
                _current = None

    def __repr__(self) -> str:
        where = f"embedded server pid {self.server.pid}" if self.server else "external server"
        if self.cluster is not None:
            where = f"local cluster of {len(self.cluster.nodes)} nodes"
        state = "closed" if self.is_closed else "running"
        return f"<agentlab.Lab {self.url} ({where}) {state}>"

    def _repr_html_(self) -> str:
        kind = "embedded" if self.server else "external"
        if self.cluster is not None:
            kind = (f"local cluster: {', '.join(self.cluster.names)} "
                    f"(streams: {self.replicas} replicas)")
        rows = [("NATS URL", self.url), ("server", kind),
                ("login", f"user {self.identity}, in {self.credentials_path}"
                          if self.identity and self.credentials_path else
                          f"user {self.identity}" if self.identity else "none"),
                ("TLS", {"mutual": "mutual (client certificates required)",
                         "tls": "on (the lab's own CA)"}.get(self._tls_request or "",
                         "on" if self.url.startswith("tls://") else "off")),
                ("monitoring", self.monitor_url or
                 ("off (start(monitor=True))" if self.server else "n/a")),
                ("state", "closed" if self.is_closed else "running")]
        cells = "".join(f"<tr><th style='text-align:left'>{k}</th>"
                        f"<td style='text-align:left'><code>{v}</code></td></tr>"
                        for k, v in rows)
        return (f"<table><caption style='text-align:left'><b>agentlab lab</b></caption>{cells}"
                "</table>")


def start(*, url: str | None = None, fresh: bool = False, name: str = "lab",
          store_dir: str | None = None, max_memory: str = "256MB", max_file: str = "1GB",
          max_payload: str | None = None, server_config: str = "",
          user: str | None = None, password: str | None = None,
          tenants: Tenants | Sequence[str] | None = None, cluster: int | None = None,
          max_buffered_msgs: int | None = None, max_buffered_size: str | None = None,
          monitor: bool = False, websocket: bool = False,
          tls: bool | str | None = None) -> Lab:
    """Start (or reuse) the lab.

    Without ``url`` and without ``$AGENTLAB_NATS_URL``, starts an embedded nats-server with
    JetStream on 127.0.0.1 (stopped by ``lab.close()``, at exit, or when the kernel dies).
    Calling ``start()`` again in the same process returns the running lab; ``fresh=True``
    closes it and starts a new one.

    The embedded server is closed: it admits only the lab's login, a user ``agentlab`` and
    a random password, or ``user=`` and ``password=`` (both) when given. With a URL they are
    the login for that server. ``monitor=True`` turns the server's HTTP monitoring endpoint
    on (``lab.monitor_url``); it is off by default, since it lists every connection and
    subscription to anyone on the host.

    ``tenants=["acme", "globex"]`` (or a :class:`agentlab.tenants.config.Tenants`) renders the
    config isolating them into the server's and connects the lab as the operator; then
    ``lab.tenant("acme")`` connects as a tenant. No identity is left without a password.

    ``cluster=3`` starts a local three-node cluster instead, from the node configs that
    docker-compose.yml mounts (``lab.cluster``: agentlab.cluster.LocalCluster), waits for a
    meta leader and declares the reference streams with 3 replicas. With a URL it connects
    there and declares them too (with 1 replica if that server is not clustered).

    ``max_buffered_msgs`` / ``max_buffered_size`` set the embedded server's JetStream ingest
    limits (see :class:`agentlab.EmbeddedServer`): a publish storm past them is refused.

    ``tls=True`` serves TLS only (``tls://`` URL; a client that stays in plain text is refused),
    with a CA and certificates made for this lab: every connection of the lab, and every
    process given ``lab.client_env()``, trusts that CA and no other. ``tls="mutual"`` also
    requires the client certificate the CA signed (in the same files). Both work with
    ``cluster=3``, whose routes are TLS too. With a URL, ``tls=`` checks that server asks
    for TLS (the CA then comes from ``$AGENTLAB_NATS_CREDENTIALS``' ``ca``).

    ``websocket=True`` also serves NATS over WebSocket on 127.0.0.1 (``lab.websocket_url``),
    for a browser agent (``agentlab.widgets.BrowserAgent``), which logs in with a login of
    its own; the lab's login is refused there. With ``tls=`` too, that listener stays plain
    ``ws://`` on loopback: a browser cannot trust a per-lab CA.
    """
    global _current
    mode = tls_mode(tls)  # a bad value is refused before anything starts
    if websocket and (url or default_url()) is not None:
        raise ValueError(f"websocket=True asks the embedded server for a WebSocket listener, "
                         f"but this lab connects to {url or default_url()} (url= or "
                         "$AGENTLAB_NATS_URL): configure that server's websocket block, or "
                         "unset the URL.")
    if tenants is not None:
        from .tenants.config import Tenants

        tenants = Tenants.of(tenants)
        if tenants.assets is None:
            from .org.streams import reference_assets

            tenants.assets = reference_assets()
        server_config = tenants.config() + server_config
        operator = tenants.credentials("operator")
        user, password = operator.user, operator.password
    with _current_lock:
        if _current is not None and not _current.is_closed:
            if not fresh:
                if tenants is not None and tenants != _current.tenants:
                    raise ValueError("A lab with other tenants is running: pass fresh=True.")
                if websocket and _current.websocket_url is None:
                    raise ValueError("A lab without a WebSocket listener is running: pass "
                                     "fresh=True (with websocket=True).")
                if tls is not None and mode != _current._tls_request:
                    raise ValueError(f"A lab with tls={_current._tls_request or False!r} is "
                                     "running: pass fresh=True.")
                if cluster is not None and cluster != _current._cluster_request:
                    raise ValueError(f"A lab that is not a {cluster}-node cluster is running: "
                                     "pass fresh=True.")
                return _current
            _current.close()
        url = url or default_url()
        server: EmbeddedServer | LocalCluster | None = None
        if url is None and (user is None) != (password is None):
            raise ValueError("start(user=..., password=...) sets the embedded server's login: "
                             "give both (or neither, for a generated one, which every "
                             "connection of the lab uses by itself).")
        if url is None and cluster is not None:
            if websocket:
                raise ValueError("websocket=True applies to a single embedded server; the "
                                 "cluster runs the node configs of deploy/nats as they are.")
            if tenants is not None or server_config or max_buffered_msgs or max_buffered_size:
                raise ValueError("cluster= runs the node configs of deploy/nats as they are; "
                                 "tenants=, server_config= and the ingest limits apply to a "
                                 "single server (the node configs set their own).")
            from .cluster import LocalCluster

            server = LocalCluster(cluster, store_dir=store_dir, user=user,
                                  password=password, tls=mode).start()
            url = server.url
        elif url is None:
            # With tenants= the config brings the logins (the operator's is the lab's).
            server = EmbeddedServer(store_dir=store_dir, max_memory=max_memory,
                                    max_file=max_file, max_payload=max_payload,
                                    extra_config=server_config,
                                    max_buffered_msgs=max_buffered_msgs,
                                    max_buffered_size=max_buffered_size, user=user,
                                    password=password, monitor=monitor,
                                    websocket=websocket, tls=mode).start()
            url = server.url
        login = server.login() if server is not None else {"user": user, "password": password}
        try:
            lab = Lab.open(url, name=name, **login)
        except BaseException:
            if server is not None:
                server.stop()
            raise
        assert isinstance(lab, Lab)
        lab.server, lab.tenants, lab._cluster_request = server, tenants, cluster
        lab._tls_request = mode
        if mode is not None and server is None and not server_info(lab.nc).get("tls_required"):
            lab.close()
            raise ValueError(f"tls={tls!r}, but the server at {url} (from url= or "
                             "$AGENTLAB_NATS_URL) does not ask for TLS. Unset the URL to let "
                             "agentlab start a TLS server, or configure that server's tls block.")
        if cluster is not None:
            from .org.streams import declare_replicated_streams

            try:
                lab.replicas = declare_replicated_streams(lab, cluster)[1]
            except BaseException:
                lab.close()
                raise
        if tenants is not None and server is None and not server_info(lab.nc).get(
                "auth_required"):
            lab.close()
            raise ValueError(
                f"tenants= needs a server that agentlab configures, but {url} (from url= or "
                "$AGENTLAB_NATS_URL) requires no login, so every tenant would see every "
                "other's messages. Unset AGENTLAB_NATS_URL to let agentlab start an embedded "
                "server with the tenants' accounts, or start that server with the config "
                "from agentlab.tenants.config.Tenants([...]).config().")
        if tenants is not None:
            try:
                tenants.setup(lab)  # users model: the operator declares the tenants' streams
            except BaseException:
                lab.close()
                raise
        _current = lab
        return lab


def current_lab() -> Lab | None:
    """The running lab of this process, if any."""
    return _current if _current is not None and not _current.is_closed else None


def connect(url: str | None = None, *, name: str = "agentlab", **auth: Any) -> Client:
    """A connection to ``url``, else ``$AGENTLAB_NATS_URL``, else the running lab's server."""
    url = url or default_url()
    if url is None:
        lab = current_lab()
        if lab is None:
            raise ServerUnreachable("(no URL)", "no lab is running and AGENTLAB_NATS_URL "
                                                "is not set; call agentlab.start() first")
        return lab.connect(name, **auth)
    return Client.open(url, name=name, **auth)


@atexit.register
def _close_at_exit() -> None:
    lab = current_lab()
    if lab is not None and get_bridge().thread.is_alive():
        try:
            lab.close()
        except Exception:  # the process is ending; the server module still stops the server
            pass
