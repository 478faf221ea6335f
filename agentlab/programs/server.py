"""``agentlab server``: an embedded nats-server in the foreground, until Ctrl-C or SIGTERM.

    agentlab server --store-dir ./data        # prints the URL; export AGENTLAB_NATS_URL=...
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from rich.console import Console

from ..core.server import EmbeddedServer

__all__ = ["serve_forever"]


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
        assert server.startup_seconds is not None  # a successful start measured itself
        console.print(
            f"[bold green]nats-server ready[/] in {server.startup_seconds * 1000:.0f} ms\n"
            f"  NATS URL:   [bold]{server.url}[/]\n  Monitoring: {server.monitor_url}\n"
            f"  Store:      {server.store_dir}\n"
            f"  Use it:     export AGENTLAB_NATS_URL={server.url}\nPress Ctrl-C to stop."
        )
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
