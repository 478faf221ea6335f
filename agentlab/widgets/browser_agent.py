"""The browser as an agent: this page takes a role's tasks over NATS WebSocket and answers them.

    lab = agentlab.start(websocket=True)
    org = Organisation(lab, instances={"cto": 0}).start()   # no CTO agent: you are the CTO
    BrowserAgent(org, role="cto")       # Take next task · type an answer · Complete
    org.assign("Launch the product")    # the CEO delegates a technical plan to you

The widget's front end (``assets/browser_agent.js``, built from ``js/browser-agent`` with the
official NATS JavaScript client bundled in: nothing comes from a CDN) connects from the
learner's browser to the embedded server's WebSocket listener and works the role's durable
consumer exactly as a :class:`~agentlab.org.desk.TaskDesk` does: the same consumer, the
result recorded in TASK_LEDGER before the ack (so the server announces it on
``tasks.completed``, once), ``+WPI`` while a task is held, a nak with the agents' back-off
when it is given back. Its connection is named ``browser/<role>`` and its completions carry
``instance="browser"``: the flow shows the page as ``cto/browser``.

Reaching the server: in a local JupyterLab the page connects to ``ws://127.0.0.1:<port>``
itself; on Binder and JupyterHub (``$JUPYTERHUB_SERVICE_PREFIX`` set, or a page not served
from loopback) it goes through the notebook server's own origin, jupyter-server-proxy's
``<base_url>/proxy/<port>/``. ``connect="direct"`` or ``"proxy"`` decides it instead.

The login: each widget has a user of its own, generated here, admitted by the server for
WebSocket connections only and allowed nothing but this role's queue (its consumer's next
message, info and acks), publishing its org's ledger records (a second record of a task is
refused by the ledger, and the page then acks it, as an agent does) and its own inbox
(``_INBOX.<user>.>``). It may not read the ledger, so unlike a TaskDesk it learns that a
task was done before only when its record is refused. Its password is not a widget trait:
traits are widget state, which a notebook saved with "Save Widget State" keeps in its
metadata. The front end asks for it by a custom comm message when it renders and gets it in
the reply, which nothing stores; ``close()`` removes the user from the server, which
disconnects the page. The WebSocket listener checks no Origin: the kernel cannot know the
page's origin when the server starts (a hub's host name), and no page gets in without a
widget's password, which only the notebook's own front end is sent.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

try:
    import anywidget
except ImportError as error:  # the dashboard extra
    raise ImportError("The browser agent widget needs anywidget: pip install "
                      "'agentlab-nats[dashboard]'.") from error
import traitlets

from ..core.client import Client
from ..core.credentials import Login, ScopedLogin
from ..core.server import EmbeddedServer
from ..core.subjects import Subjects, validate_token
from ..errors import AgentlabError, ConsumerNotFound
from ..org.agent import task_consumer_spec
from ..org.ledger import TaskLedger
from ..org.streams import LEDGER_BUCKET, TASK_STREAM

__all__ = ["BrowserAgent", "NoWebSocket", "browser_permissions"]

ASSETS = Path(__file__).with_name("assets")
CONNECT_MODES = ("auto", "direct", "proxy")


class NoWebSocket(AgentlabError, RuntimeError):
    """The lab's server has no WebSocket listener that agentlab runs."""

    def __init__(self, url: str):
        super().__init__(
            f"The browser agent connects to the lab's embedded server over WebSocket, but "
            f"the server at {url} has no WebSocket listener that this process runs. Start "
            "the lab with one: lab = agentlab.start(websocket=True, fresh=True) (with "
            "AGENTLAB_NATS_URL unset).")


def browser_permissions(role: str, org: str, inbox_prefix: str) -> dict[str, Any]:
    """Everything a browser working ``role``'s queue for ``org`` may do, and nothing more."""
    ledger = f"$KV.{LEDGER_BUCKET}.{org}.*"
    return {
        "publish": {"allow": [
            f"$JS.API.CONSUMER.INFO.{TASK_STREAM}.{role}",
            f"$JS.API.CONSUMER.MSG.NEXT.{TASK_STREAM}.{role}",
            f"$JS.ACK.{TASK_STREAM}.{role}.>",  # ack, nak, +WPI
            ledger,                               # the record, which is the completion
        ]},
        "subscribe": {"allow": [f"{inbox_prefix}.>"]},
    }


class BrowserAgent(anywidget.AnyWidget):
    """A desk for ``role`` in the learner's browser (see the module docstring).

    ``lab_or_org``: an :class:`~agentlab.org.Organisation` (its org, subjects, ack wait and
    max deliver) or a lab started with ``websocket=True``. ``worker`` is the ``instance`` of
    each completion. ``hold`` (seconds) is how long a taken task is kept alive, ``wait`` how
    long "Take next task" waits for one.

    Two limits, as a hand-worked desk has them (``TaskDesk``): the page takes no task lease,
    so where it shares a role with agents, a task it holds past its ack wait may be run by an
    agent too (the ledger still keeps one record and one announcement); and its login may
    write the ledger record of any task of this org, which the ledger's stream (one record
    per task) needs to be a subject wildcard. It is a learner's own page on a learner's lab.
    """

    _esm = ASSETS / "browser_agent.js"
    _css = """
    .al-browser-agent { font: 13px system-ui, sans-serif; border: 1px solid #cbd5e1;
      border-radius: 6px; padding: 8px 10px; max-width: 640px; }
    .al-browser-agent .al-ba-status { color: #475569; margin-left: 6px; }
    .al-browser-agent[data-state="holding"] { border-color: #2563eb; }
    .al-browser-agent[data-state="refused"], .al-browser-agent[data-state="closed"] {
      border-color: #dc2626; }
    .al-browser-agent .al-ba-task { margin: 8px 0; padding: 6px 8px; background: #eff6ff;
      border-radius: 4px; }
    .al-browser-agent .al-ba-title { font-weight: 600; }
    .al-browser-agent .al-ba-meta { color: #475569; font-size: 12px; }
    .al-browser-agent .al-ba-details { margin: 4px 0 0 0; font-size: 12px; }
    .al-browser-agent .al-ba-result { width: 100%; box-sizing: border-box; margin: 4px 0; }
    .al-browser-agent .al-ba-buttons button { margin-right: 6px; }
    .al-browser-agent .al-ba-log { color: #334155; font-size: 12px; margin: 6px 0 0 0;
      padding-left: 18px; }
    """

    role = traitlets.Unicode().tag(sync=True)
    org = traitlets.Unicode().tag(sync=True)
    worker = traitlets.Unicode("browser").tag(sync=True)
    websocket_port = traitlets.Int(0).tag(sync=True)
    connect = traitlets.Unicode("auto").tag(sync=True)
    proxy_prefix = traitlets.Unicode("").tag(sync=True)
    stream = traitlets.Unicode(TASK_STREAM).tag(sync=True)
    ledger_bucket = traitlets.Unicode(LEDGER_BUCKET).tag(sync=True)
    hold = traitlets.Float(600.0).tag(sync=True)
    wait = traitlets.Float(30.0).tag(sync=True)
    # Written by the front end: its connection state, how it connected, what it completed.
    status = traitlets.Unicode("").tag(sync=True)
    connected_via = traitlets.Unicode("").tag(sync=True)
    completed = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(self, lab_or_org: Any, role: str = "cto", *, org: str | None = None,
                 worker: str = "browser", connect: str = "auto", hold: float = 600.0,
                 wait: float = 30.0, **kwargs: Any):
        client, org_name, subjects, ack_wait, max_deliver = _organisation(lab_or_org, org)
        validate_token(role, "role")
        if role in ("*", ">"):
            raise ValueError(f"role {role!r}: a browser agent works one role's queue, "
                             "such as 'cto'")
        if connect not in CONNECT_MODES:
            raise ValueError(f"connect={connect!r}: give one of {', '.join(CONNECT_MODES)} "
                             "(auto: through the notebook server's proxy on a hub)")
        if not 0 < hold <= 3600 or not 0 < wait <= 300:
            raise ValueError(f"hold={hold!r}, wait={wait!r}: give 0 < hold <= 3600 and "
                             "0 < wait <= 300 seconds")
        server = getattr(client, "server", None)
        if not isinstance(server, EmbeddedServer) or server.websocket_port is None:
            raise NoWebSocket(client.url)
        self._server = server
        _prepare_queue(client, role, subjects, ack_wait, max_deliver)
        user = f"browser-{role}-{secrets.token_hex(4)}"
        inbox_prefix = f"_INBOX.{user}"
        self._scoped: ScopedLogin | None = ScopedLogin(
            Login.generate(user), browser_permissions(role, org_name, inbox_prefix),
            ("WEBSOCKET",))
        self._inbox_prefix = inbox_prefix
        server.add_login(self._scoped)
        try:
            super().__init__(role=role, org=org_name, worker=worker, connect=connect,
                             websocket_port=server.websocket_port, hold=float(hold),
                             wait=float(wait),
                             proxy_prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", ""),
                             **kwargs)
        except BaseException:
            self._forget_login()
            raise
        self.on_msg(self._on_front_end_message)

    @property
    def user(self) -> str | None:
        """The user name the page logs in as (never its password); None once closed."""
        return self._scoped.login.user if self._scoped else None

    def _on_front_end_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "login":
            return
        if self._scoped is None:
            self.send({"type": "login", "error": "this browser agent was closed"})
            return
        self.send({"type": "login", **self._scoped.login.kwargs(),
                   "inbox_prefix": self._inbox_prefix})

    def close(self) -> None:
        """Close the widget and remove its user from the server (the page disconnects; a
        task it held goes back to the queue after its ack wait)."""
        self._forget_login()
        super().close()

    def _forget_login(self) -> None:
        scoped, self._scoped = getattr(self, "_scoped", None), None
        if scoped is not None:  # a stopped server forgets it too: a restart must not restore it
            self._server.remove_login(scoped.login.user)

    def __repr__(self) -> str:
        return (f"<BrowserAgent {self.role}/{self.worker} of {self.org} "
                f"(ws port {self.websocket_port}, {self.status or 'not rendered'})>")


def _organisation(lab_or_org: Any, org: str | None
                  ) -> tuple[Client, str, Subjects, float, int]:
    """(client, org, subjects, ack_wait, max_deliver) from an Organisation or a lab."""
    if isinstance(lab_or_org, Client):
        return lab_or_org, validate_token(org or "acme", "org"), Subjects(), 30.0, 3
    client = getattr(lab_or_org, "lab", None)
    if not isinstance(client, Client):
        raise TypeError(f"BrowserAgent(lab_or_org=...): give a lab (agentlab.start("
                        f"websocket=True)) or an Organisation, not {type(lab_or_org).__name__}")
    return (client, validate_token(org or lab_or_org.org, "org"), lab_or_org.subjects,
            float(lab_or_org.ack_wait), int(lab_or_org.max_deliver))


def _prepare_queue(client: Client, role: str, subjects: Subjects, ack_wait: float,
                   max_deliver: int) -> None:
    """What the page may not do itself: the role's consumer (as the role's agents would make
    it) and the ledger that announces each record, as a TaskDesk makes sure of them."""
    TaskLedger.declare(client, subjects)
    try:
        client.js.consumer_info(TASK_STREAM, role)
    except ConsumerNotFound:
        client.js.declare_consumer(TASK_STREAM, task_consumer_spec(
            role, subjects, ack_wait=ack_wait, max_deliver=max_deliver))
