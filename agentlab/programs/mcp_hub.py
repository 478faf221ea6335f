"""``agentlab mcp``: the MCP agent hub, for Claude Desktop, an IDE or any MCP client.

    agentlab mcp                          # stdio; an embedded server and the organisation
    agentlab mcp --llm-plays cto          # ... without a CTO agent: the LLM works its queue
    AGENTLAB_NATS_URL=nats://... agentlab mcp --http 8765     # a running organisation, HTTP

Without ``$AGENTLAB_NATS_URL`` (or ``--url``) it starts an embedded nats-server and the
reference organisation on it, so a client that launches it gets a working organisation at
once. With a URL it joins the organisation running there (``--start-organisation`` runs one
there too), logging in with the credentials file ``$AGENTLAB_NATS_CREDENTIALS`` names, if
it is that server's (``lab.client_env()`` sets both). Streamable HTTP binds to 127.0.0.1
only. On stdio, stdout is the MCP channel:
everything agentlab says goes to stderr.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console

__all__ = ["run_hub"]

MISSING_SDK = ("agentlab mcp needs the MCP Python SDK: pip install 'agentlab-nats[mcp]' "
               "(or make install, which installs it for the tests)")


def run_hub(*, url: str | None, org: str, http_port: int | None, llm_plays: Sequence[str],
            start_organisation: bool | None, ack_wait: float, hold: float,
            name: str = "mcp") -> int:
    """Serve the hub until the client closes stdio, or Ctrl-C / SIGTERM (HTTP)."""
    try:
        from ..mcp.hub import AgentHub
        from ..mcp.server import hub_server
    except ImportError as error:
        if "mcp" not in str(error):
            raise
        Console(stderr=True).print(f"[bold red]{MISSING_SDK}[/]")
        return 2
    say = Console(stderr=True)
    with contextlib.ExitStack() as stack:
        with _stdout_to_stderr(http_port is None):
            lab, embedded = _open_lab(url, stack)
            if start_organisation if start_organisation is not None else embedded:
                _start_organisation(lab, org, llm_plays, ack_wait, stack)
            hub = AgentHub(lab.connect(f"{org}-{name}-hub"), org=org, name=name, hold=hold,
                           ack_wait=ack_wait).start()
            stack.callback(hub.stop)
            server = hub_server(hub)
        where = "an embedded nats-server" if embedded else lab.url
        plays = f"; the LLM plays {', '.join(llm_plays)}" if llm_plays else ""
        if http_port is None:
            say.print(f"agentlab MCP hub: org {org} on {where}{plays}; serving MCP on stdio")
            server.run("stdio")  # until the client closes the session
            return 0
        say.print(f"agentlab MCP hub: org {org} on {where}{plays}\n"
                  f"  MCP (streamable HTTP): http://127.0.0.1:{http_port}/mcp\n"
                  "Press Ctrl-C to stop.")
        _stop_on_sigterm()
        try:
            server.run("streamable-http", host="127.0.0.1", port=http_port)
        except KeyboardInterrupt:
            pass
        return 0


@contextlib.contextmanager
def _stdout_to_stderr(stdio: bool) -> Iterator[None]:
    # While the lab and the organisation start, a stray print would corrupt the MCP stream.
    if not stdio:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def _open_lab(url: str | None, stack: contextlib.ExitStack) -> tuple[Any, bool]:
    from ..core.connecting import default_url
    from ..lab import start

    url = url or default_url()
    lab = start(url=url, name="mcp-hub")
    # The process ends with the client's session: the lab and its server go with it.
    stack.callback(lab.close)
    return lab, url is None


def _start_organisation(lab: Any, org: str, llm_plays: Sequence[str], ack_wait: float,
                        stack: contextlib.ExitStack) -> None:
    from ..org.organisation import Organisation
    from ..org.roles import default_roles

    roles = dict(default_roles())
    unknown = [role for role in llm_plays if role not in roles]
    if unknown:
        raise SystemExit(f"--llm-plays {' '.join(unknown)}: the organisation has the roles "
                         f"{', '.join(roles)}")
    instances = {role: 0 for role in llm_plays}  # their queues wait for the LLM
    organisation = Organisation(lab, org, roles=roles, instances=instances,
                                ack_wait=ack_wait).start()
    stack.callback(organisation.stop)


def _stop_on_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _on_term)
