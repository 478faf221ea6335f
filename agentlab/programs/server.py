"""``agentlab server``: an embedded nats-server in the foreground, until Ctrl-C or SIGTERM.

    agentlab server --store-dir ./data        # prints the URL; export AGENTLAB_NATS_URL=...

The server admits only its login (generated; ``credentials.json`` in its store, mode 0600):
the banner names that file for ``AGENTLAB_NATS_CREDENTIALS`` and the nats CLI, never the
password. ``--monitor`` turns the HTTP monitoring endpoint on. ``--tls`` (``--tls mutual``)
serves TLS only; the same file then names the CA (and the client certificate and key).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..core.server import EmbeddedServer

__all__ = ["serve_forever"]


def banner(server: EmbeddedServer) -> str:
    """What ``agentlab server`` prints once the server is ready: where it is and how to use it
    from another terminal (the credentials file's path, never the password)."""
    assert server.startup_seconds is not None  # a successful start measured itself
    env = server.client_env()
    exports = "\n".join(f"    export {key}={escape(value)}" for key, value in env.items())
    path = escape(str(server.credentials_path))
    files = server.tls_files
    tls = "off (agentlab server --tls [mutual])"
    if files is not None:
        tls = f"TLS only, CA {escape(str(files.ca))}"
        if files.cert is not None:
            tls += (f"\n               mutual: client certificate {escape(str(files.cert))}, "
                    "key beside it (mode 0600)")
        tls += ("\n               (the credentials file names them too: its "
                f"{'ca, cert and key' if files.cert is not None else 'ca'})")
    return (f"[bold green]nats-server ready[/] in {server.startup_seconds * 1000:.0f} ms\n"
            f"  NATS URL:    [bold]{server.url}[/]\n"
            f"  Login:       user {server.login().get('user')}, password in {path} "
            "(mode 0600)\n"
            f"  TLS:         {tls}\n"
            f"  Monitoring:  {server.monitor_url or 'off (agentlab server --monitor)'}\n"
            f"  Store:       {escape(str(server.store_dir))}\n"
            f"  Use it from another terminal (agentlab, notebooks, workers):\n{exports}\n"
            f"  The nats CLI: cp {path} ~/.config/nats/context/agentlab.json\n"
            "    nats --context agentlab stream ls\n"
            "Press Ctrl-C to stop.")


def serve_forever(**kwargs: Any) -> int:
    """Run an EmbeddedServer(**kwargs) in the foreground until Ctrl-C or SIGTERM.

    Returns 0 after a requested stop, non-zero if the server died on its own; a server
    that cannot start raises ServerStartError.
    """
    console, server = Console(), EmbeddedServer(**kwargs)
    on_main = threading.current_thread() is threading.main_thread()  # signals need main
    if on_main:
        def _on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _on_term)
    try:
        server.start()
        # soft_wrap: an export line wrapped at the terminal's width would not paste whole.
        console.print(banner(server), highlight=False, soft_wrap=True)
        code = None
        while code is None:
            code = server.wait(0.5)
        console.print(f"[bold red]nats-server exited on its own[/] (code {code}):\n"
                      + "\n".join(server.log_tail(10)))
        return code or 1
    except KeyboardInterrupt:
        console.print("Stopping nats-server...")
        return 0
    finally:
        server.stop()
        if on_main:  # None means a handler installed from C: fall back to the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
