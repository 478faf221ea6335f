"""The login of a server agentlab runs: generated per server, kept in this process and in one
file (mode 0600) for the processes and terminals that are given its path.

    login = Login.generate()                        # user "agentlab", a random password
    path = write_credentials(store / "credentials.json", url, login)
    env = {"AGENTLAB_NATS_URL": url, CREDENTIALS_ENV: str(path)}   # for a subprocess
    login_for(url)                                  # what a connection to url logs in with

The file has the shape of a ``nats`` CLI context (``~/.config/nats/context/<name>.json``:
``description``, ``url``, ``user``, ``password``), so ``nats --context agentlab ...`` works once
it is copied there; a TLS server's file also names its CA, and for mutual TLS the client
certificate and key (the context's ``ca``, ``cert``, ``key``; read by ``tls.tls_for``). A
password is never in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AgentlabError

if TYPE_CHECKING:
    from .tls import TlsFiles

__all__ = ["CREDENTIALS_ENV", "DEFAULT_USER", "CredentialsUnreadable", "Login", "ScopedLogin",
           "credentials_env_for", "credentials_file_for", "endpoints", "forget_login",
           "known_login", "login_for", "read_context", "read_credentials", "remember_login",
           "write_credentials", "write_private"]

CREDENTIALS_ENV = "AGENTLAB_NATS_CREDENTIALS"
DEFAULT_USER = "agentlab"


@dataclass(frozen=True)
class Login:
    """A user name and its password; ``repr`` never shows the password."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def generate(cls, user: str = DEFAULT_USER) -> Login:
        return cls(user, secrets.token_urlsafe(24))  # 192 random bits

    def kwargs(self) -> dict[str, str]:
        """``user=`` and ``password=`` for ``nats.connect`` or ``Client.open`` (secrets)."""
        return {"user": self.user, "password": self.password}

    def __repr__(self) -> str:
        return f"Login(user={self.user!r}, password='***')"


@dataclass(frozen=True)
class ScopedLogin:
    """A login that may do only what ``permissions`` allow (nats-server's ``{publish: {allow:
    [...]}, subscribe: {allow: [...]}}``), over ``connection_types`` only: the browser agent's
    is ``("WEBSOCKET",)``, so its password is no use to a plain NATS client."""

    login: Login
    permissions: Mapping[str, Any]
    connection_types: tuple[str, ...] = ("STANDARD",)

    def render(self) -> str:
        """Its entry in a server config's ``authorization { users = [...] }``: a secret.
        No permissions given: it may do anything (over its connection types)."""
        entry: dict[str, Any] = {"user": self.login.user, "password": self.login.password}
        if self.permissions:
            entry["permissions"] = self.permissions
        entry["allowed_connection_types"] = list(self.connection_types)
        return json.dumps(entry)


def endpoints(url: str, *, own_login_ok: bool = True) -> list[str]:
    """``host:port`` of every server in a (comma-separated) NATS URL, whatever its scheme
    (``nats://``, ``tls://``); [] if one carries its own login (``nats://user:pass@host``)
    unless ``own_login_ok``, and if a port is not a number."""
    out = []
    for part in (u.strip() for u in url.split(",")):
        if not part:
            continue
        parsed = urllib.parse.urlsplit(part if "://" in part else f"nats://{part}")
        if (parsed.username or parsed.password) and not own_login_ok:
            return []
        try:
            port = parsed.port or 4222
        except ValueError:
            return []
        out.append(f"{(parsed.hostname or '').lower()}:{port}")
    return out


def _endpoints(url: str) -> list[str]:
    # A URL with a login of its own (nats://user:pass@host): that login is the one to use.
    return endpoints(url, own_login_ok=False)


# The servers this process runs, by endpoint: a connection to one of them needs no login
# passed in (the process holds the secret anyway), and a process it starts gets the path
# of the server's credentials file.
_known: dict[str, tuple[Login, Path | None]] = {}
_known_lock = threading.Lock()


def remember_login(url: str, login: Login, path: Path | None = None) -> None:
    with _known_lock:
        for endpoint in _endpoints(url):
            kept = _known.get(endpoint)
            # A cluster node restarted (no file of its own): the cluster's file still holds.
            same = kept is not None and kept[0] == login
            _known[endpoint] = (login, path or (kept[1] if kept and same else None))


def forget_login(url: str, login: Login) -> None:
    with _known_lock:
        for endpoint in _endpoints(url):
            if endpoint in _known and _known[endpoint][0] == login:
                del _known[endpoint]


def known_login(url: str) -> Login | None:
    """The login of a server this process runs at ``url`` (its first endpoint that is one)."""
    with _known_lock:
        return next((_known[e][0] for e in _endpoints(url) if e in _known), None)


def credentials_env_for(url: str) -> dict[str, str]:
    """``{AGENTLAB_NATS_CREDENTIALS: path}`` for a process this one starts to use ``url``: the
    file of a server this process runs there, else the file this process was given if it is
    for ``url``; empty if neither."""
    with _known_lock:
        path = next((_known[e][1] for e in _endpoints(url) if e in _known and _known[e][1]),
                    None)
    found = str(path) if path else credentials_file_for(url)
    return {CREDENTIALS_ENV: found} if found else {}


def login_for(url: str, default_url: str | None = None) -> Login | None:
    """What a connection to ``url`` logs in with when it is given no login: the server's own
    if this process runs it, else the file ``$AGENTLAB_NATS_CREDENTIALS`` names when ``url``
    is that file's URL (or ``$AGENTLAB_NATS_URL``), else None (anonymous)."""
    found = known_login(url)
    if found is not None:
        return found
    applies = context_for(url, default_url)
    return _login_in(*applies) if applies is not None else None


def credentials_file_for(url: str) -> str | None:
    """``$AGENTLAB_NATS_CREDENTIALS`` if the file it names is for the server(s) at ``url``."""
    applies = context_for(url)
    return applies[0] if applies is not None else None


def context_for(url: str, default_url: str | None = None, *,
                own_login_ok: bool = False) -> tuple[str, dict[str, Any]] | None:
    """The file ``$AGENTLAB_NATS_CREDENTIALS`` names and its context, if it is for the
    server(s) at ``url`` (or ``url`` is ``default_url``, ``$AGENTLAB_NATS_URL``); a URL with
    a login of its own uses that login, so the file is not for it unless ``own_login_ok``."""
    path = os.environ.get(CREDENTIALS_ENV)
    if not path or not endpoints(url, own_login_ok=own_login_ok):
        return None
    context = read_context(path)
    file_url = str(context.get("url") or "")
    if url == default_url or set(endpoints(url, own_login_ok=own_login_ok)) <= \
            set(endpoints(file_url, own_login_ok=own_login_ok)):
        return path, context
    return None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (0600), atomically."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temp, 0o600)  # O_CREAT's mode does not apply to a file left behind
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_credentials(path: Path, url: str, login: Login | None,
                      description: str = "agentlab embedded nats-server",
                      tls: TlsFiles | None = None) -> Path:
    """The login (and the TLS files a client uses: ``ca``, ``cert``, ``key``) as a nats CLI
    context file, mode 0600."""
    context = {"description": description, "url": url}
    if login is not None:
        context |= {"user": login.user, "password": login.password}
    if tls is not None:
        context |= tls.context_fields()
    write_private(path, json.dumps(context, indent=2) + "\n")
    return path


def read_context(path: str | Path) -> dict[str, Any]:
    """A nats CLI context file (a credentials file ``write_credentials`` wrote) as a dict."""
    try:
        context = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        if not isinstance(context, dict):
            raise TypeError("not a JSON object")
        return context
    except (OSError, ValueError, TypeError) as error:
        raise CredentialsUnreadable(path, error) from None


def read_credentials(path: str | Path) -> tuple[str, Login | None]:
    """(url, login) from a credentials file ``write_credentials`` wrote (or any nats CLI
    context with ``url``, ``user`` and ``password``); the login is None in a context that
    has no user (a server that TLS alone closes)."""
    context = read_context(path)
    return str(context.get("url") or ""), _login_in(path, context)


def _login_in(path: str | Path, context: dict[str, Any]) -> Login | None:
    try:
        return Login(str(context["user"]), str(context["password"])) \
            if "user" in context else None
    except KeyError as error:
        raise CredentialsUnreadable(path, error) from None


class CredentialsUnreadable(AgentlabError, ValueError):
    """The credentials file named (``$AGENTLAB_NATS_CREDENTIALS``) cannot be read."""

    def __init__(self, path: str | Path, error: BaseException):
        self.path = str(path)
        reason = type(error).__name__ if isinstance(error, (KeyError, TypeError)) else error
        super().__init__(
            f"Cannot read the NATS credentials file {path} ({reason}). It is the file "
            f"`agentlab server` (or lab.client_env()) names in ${CREDENTIALS_ENV}: the "
            "server that wrote it may have stopped (a temporary store is deleted with it). "
            f"Export {CREDENTIALS_ENV} again with the path it prints, or unset it.")
