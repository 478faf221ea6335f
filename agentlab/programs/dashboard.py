"""``agentlab dashboard``: the dashboard as a web page of its own (Voila), with its controls.

    agentlab dashboard                      # an embedded nats-server and the organisation
    AGENTLAB_NATS_URL=nats://... agentlab dashboard --port 8866    # a running organisation

Voila serves ``dashboard_app.ipynb`` (next to this module, in the package): for each page
opened it runs that notebook in a kernel of its own and shows its widgets only, no code.
The kernel finds the server through the environment this command gives it, as every
agentlab process does (``lab.client_env()``: ``AGENTLAB_NATS_URL`` and the credentials
file ``AGENTLAB_NATS_CREDENTIALS`` names, never the password), and calls ``app()``.

Without ``$AGENTLAB_NATS_URL`` (or ``--url``) this command starts an embedded nats-server
and each page's kernel runs the reference organisation on it, so the stop/start buttons
have agents to scale. With a URL the page watches the organisation running there and gives
it tasks (``--start-organisation`` runs agents in the page's kernel too). Voila listens on
127.0.0.1 only and the URL printed carries no secret. On Binder the same notebook opens at
``/voila/render/agentlab/programs/dashboard_app.ipynb`` (Voila's server extension) and,
with no URL set, starts its own server.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

__all__ = ["APP_NOTEBOOK", "app", "run_dashboard"]

APP_NOTEBOOK = Path(__file__).with_name("dashboard_app.ipynb")
ORG_ENV = "AGENTLAB_DASHBOARD_ORG"                      # the organisation's name
ORGANISATION_ENV = "AGENTLAB_DASHBOARD_ORGANISATION"    # "start" its agents, or "join" it
MISSING_VOILA = ("agentlab dashboard needs Voila: pip install 'agentlab-nats[dashboard]' "
                 "(or make install, which installs it for the tests)")
READY_WITHIN = 60.0  # seconds for Voila to listen


def app() -> Any:
    """The dashboard of the notebook Voila runs: a lab from the environment (an embedded
    server when none is given), the organisation started or joined, the four views."""
    from ..lab import start
    from ..org.organisation import Organisation
    from ..widgets import Dashboard

    lab = start(name="dashboard")
    name = os.environ.get(ORG_ENV, "acme")
    wanted = os.environ.get(ORGANISATION_ENV) or ("start" if lab.embedded else "join")
    org = None
    if wanted == "start":
        org = Organisation(lab, name, ack_wait=5, heartbeat_interval=1,
                           monitor_interval=1).start()
    return Dashboard(lab, org, org_name=name)


def run_dashboard(*, url: str | None, org: str, port: int,
                  start_organisation: bool | None) -> int:
    """Serve the dashboard until Ctrl-C or SIGTERM; 2 when Voila is missing or fails."""
    if importlib.util.find_spec("voila") is None:
        Console(stderr=True).print(f"[bold red]{MISSING_VOILA}[/]")
        return 2
    from ..core.connecting import default_url
    from ..core.server import _die_with_parent, _prctl, _spawn
    from ..lab import start

    say = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        url = url or default_url()
        # Opened here first, so that a wrong URL or login fails now, with agentlab's error,
        # not in the page's kernel; an embedded server lives as long as this command.
        lab = start(url=url, name="dashboard-server")
        stack.callback(lab.close)
        embedded = url is None
        run_org = start_organisation if start_organisation is not None else embedded
        token = secrets.token_urlsafe(24)
        env = {**os.environ, **lab.client_env(), ORG_ENV: org,
               ORGANISATION_ENV: "start" if run_org else "join", "JUPYTER_TOKEN": token}
        port = port or _free_port()
        token_file, opener = _write_token(port, token, stack)
        # As the worker processes are spawned: a session of its own (Ctrl-C reaches this
        # command, which stops Voila in order), and on Linux Voila (and its kernels' agents)
        # go when this command is killed outright.
        voila = _spawn(
            [sys.executable, "-m", "voila", str(APP_NOTEBOOK), f"--port={port}",
             "--no-browser", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
             "--theme=light", "--Voila.auto_token=True"],
            env=env, cwd=APP_NOTEBOOK.parent, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=functools.partial(_die_with_parent, os.getpid()) if _prctl else None)
        stack.callback(_stop, voila)
        if not _listening(port, voila):
            say.print(f"[bold red]agentlab dashboard: Voila did not start on 127.0.0.1:{port}"
                      " (is the port taken? --port another one)[/]")
            return 2
        where = "an embedded nats-server" if embedded else escape(_without_login(lab.url))
        agents = "its agents run in the page's kernel" if run_org else "watching it"
        Console().print(f"agentlab dashboard: org {org} on {where} ({agents})\n"
                        f"  open [bold]http://127.0.0.1:{port}/[/] with the token in "
                        f"{token_file}\n  or open file://{opener} (it carries the token)\n"
                        "Press Ctrl-C to stop.", highlight=False, soft_wrap=True)
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        try:
            while not stop.wait(0.5) and voila.poll() is None:
                pass
        except KeyboardInterrupt:
            pass
        if voila.poll() not in (None, 0) and not stop.is_set():
            say.print(f"[bold red]agentlab dashboard: Voila stopped on its own (exit status "
                      f"{voila.returncode}); its messages are above[/]")
            return 2
        return 0
    return 0


def _write_token(port: int, token: str, stack: contextlib.ExitStack) -> tuple[Path, Path]:
    """The token, and a page that opens the dashboard with it, in a folder only this user
    can read (mkdtemp: 0700), removed when the command ends."""
    from ..core.credentials import write_private

    folder = Path(tempfile.mkdtemp(prefix="agentlab-dashboard-"))
    stack.callback(shutil.rmtree, folder, ignore_errors=True)
    token_file, opener = folder / "token", folder / "open.html"
    write_private(token_file, token + "\n")
    target = f"http://127.0.0.1:{port}/?token={token}"
    write_private(opener, f'<!doctype html><meta http-equiv="refresh" content="0;url={target}">'
                          f'<a href="{target}">the agentlab dashboard</a>\n')
    return token_file, opener


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int, process: subprocess.Popen[bytes]) -> bool:
    """Voila accepts connections (asked without a page: a page starts a kernel)."""
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as s:
            s.settimeout(1)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # Voila shuts its kernels down, and with them their agents
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _without_login(url: str) -> str:
    import re

    return re.sub(r"//[^/@]*@", "//", url)
