"""The isolation audit: every tenant tries every action on every tenant's subjects, for real.

    report = audit(lab.url, lab.tenants)      # against a running server
    Console().print(report.to_table())        # ✓ allowed / ✗ denied; cross-tenant ✓ is a LEAK
    reports = audit_models()                  # seed 000 verbatim, accounts, users: own servers
    reports = audit_models(tls="mutual")      # the same, over mutual TLS

Each probe is judged by its effect, not by the absence of an error: in the accounts model
``acme`` may well publish to ``genbrain.agents.audit.tasks``; what matters is whether
``globex``, listening on what is *its* subject of that name, receives it. Likewise a stream
info, a direct get or a KV read counts as allowed only if it returned the target's own
stream or canary secret, not the actor's stream of the same name. Own-tenant probes must
all be allowed: a config that isolates by breaking the tenant itself fails the audit too.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.client import Client
from ..core.stores import KeyValueBucket
from ..core.subscription import Subscription
from ..errors import NoMessage, NoResponders, PermissionDenied, RequestTimeout
from ..org.streams import reference_assets
from ..tenants.config import Tenants

__all__ = ["ACTIONS", "TITLES", "AuditReport", "Cell", "aaudit", "audit", "audit_models"]

ACTIONS = ("publish", "subscribe", "request", "stream info", "consumer create", "direct get",
           "kv read")
TITLES = {"seed000": "seed 000's configuration, verbatim",
          "accounts": "agentlab: one NATS account per tenant",
          "users": "agentlab: one user per tenant, the tenant in every subject"}
PROBE, CANARY, CANARY_KEY = "audit", "canary", "audit-canary"
_API = "$JS.API"


@dataclass(frozen=True)
class Cell:
    """One probe: ``actor`` tried ``action`` on ``target``'s subject or stream."""

    actor: str
    target: str
    action: str
    allowed: bool
    how: str

    @property
    def cross(self) -> bool:
        return self.actor != self.target

    @property
    def leak(self) -> bool:
        return self.cross and self.allowed


@dataclass
class AuditReport:
    model: str
    tenants: tuple[str, ...]
    cells: list[Cell] = field(default_factory=list)
    title: str = ""

    def cell(self, actor: str, target: str, action: str) -> Cell:
        return next(c for c in self.cells
                    if (c.actor, c.target, c.action) == (actor, target, action))

    @property
    def leaks(self) -> list[Cell]:
        return [c for c in self.cells if c.leak]

    @property
    def own_denied(self) -> list[Cell]:
        return [c for c in self.cells if not c.cross and not c.allowed]

    @property
    def ok(self) -> bool:
        """No cross-tenant action allowed and every own action allowed."""
        return not self.leaks and not self.own_denied

    def verdict(self) -> str:
        if self.ok:
            return "no leaks: every cross-tenant action denied, every own action allowed"
        parts = []
        if self.leaks:
            parts.append(f"{len(self.leaks)} LEAKS: " + "; ".join(
                f"{c.actor} → {c.target} {c.action} ({c.how})" for c in self.leaks))
        if self.own_denied:
            parts.append(f"{len(self.own_denied)} own actions denied: " + ", ".join(
                f"{c.actor} {c.action}" for c in self.own_denied))
        return " | ".join(parts)

    def to_table(self, explain: bool = False) -> Any:
        """A rich Table: one row per actor → target pair, one column per action."""
        from rich.table import Table

        table = Table(title=f"Isolation audit: {self.title or self.model}",
                      title_justify="left", caption=self.verdict(), caption_justify="left",
                      caption_style="bold green" if self.ok else "bold red")
        table.add_column("actor → target", no_wrap=True)
        for action in ACTIONS:
            table.add_column(action, justify="center", overflow="fold")
        for actor in self.tenants:
            for target in self.tenants:
                row = [f"{actor} → {target}" + ("" if actor != target else " (own)")]
                for action in ACTIONS:
                    c = self.cell(actor, target, action)
                    mark = ("[bold white on red]✓ LEAK[/]" if c.leak else "[green]✓[/]"
                            if c.allowed else "[dim]✗[/]" if c.cross else "[yellow]✗[/]")
                    row.append(mark + (f"\n[dim]{c.how}[/]" if explain else ""))
                table.add_row(*row)
        return table

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=140, force_terminal=False, color_system=None)
        with console.capture() as captured:
            console.print(self.to_table())
        return captured.get()


# -- probing ----------------------------------------------------------------------------
class _Audit:
    def __init__(self, url: str, tenants: Tenants, wait: float):
        self.url, self.t, self.wait = url, tenants, wait
        self.opened: list[Client] = []
        self.secret = {n: f"{n}-secret-{secrets.token_hex(6)}" for n in tenants.names}
        self.created: dict[str, Any] = {}

    def connect(self, who: str, name: str) -> Client:
        client = self.t.connect(self.url, who, name=name)
        self.opened.append(client)
        return client

    def prepare(self) -> None:
        from ..org.streams import reference_streams

        self.operator = self.connect("operator", "audit-operator")
        self.t.setup(self.operator)
        self.actor = {n: self.connect(n, f"{n}-auditor") for n in self.t.names}
        self.peer = {n: self.connect(n, f"{n}-target") for n in self.t.names}
        self.owner = {n: self.peer[n] if self.t.model == "accounts" else self.operator
                      for n in self.t.names}
        for n in self.t.names:
            spec = next(s for s in reference_streams(self.t.subjects(n))
                        if s.name == "AGENT_TASKS")
            spec = replace(spec, name=self.stream(n))
            owner = self.owner[n]
            owner.js.declare_stream(spec)
            KeyValueBucket.declare(owner, self.bucket(n)).put(CANARY_KEY, self.secret[n])
            owner.js.publish(self.t.subjects(n).tasks(CANARY), self.secret[n])
            info, why = _api(owner, f"STREAM.INFO.{self.stream(n)}")
            if info is None:  # the owner has just declared it: this is the server failing
                raise RuntimeError(f"The audit cannot read stream {self.stream(n)!r} it has "
                                   f"just declared as its owner: {why}")
            self.created[n] = info["created"]

    def stream(self, n: str) -> str:
        return self.t.stream_name(n, "AGENT_TASKS")

    def bucket(self, n: str) -> str:
        return self.t.bucket_name(n, "TASK_LEDGER")

    def run(self) -> list[Cell]:
        probes: dict[str, Callable[[Client, Client, str, str], tuple[bool, str]]] = {
            "publish": self.publish, "subscribe": self.subscribe, "request": self.request,
            "stream info": self.stream_info, "consumer create": self.consumer_create,
            "direct get": self.direct_get, "kv read": self.kv_read}
        cells = []
        for a in self.t.names:
            for b in self.t.names:
                for action in ACTIONS:
                    allowed, how = probes[action](self.actor[a], self.peer[b], a, b)
                    cells.append(Cell(a, b, action, allowed, how))
        return cells

    def _arrived(self, sub: Subscription, marker: str, *senders: Client) -> bool:
        for client in senders:
            client.flush()
        try:
            while True:
                if sub.next(timeout=self.wait).text == marker:
                    return True
        except NoMessage:
            return False

    def publish(self, actor: Client, peer: Client, a: str, b: str) -> tuple[bool, str]:
        subject, marker = self.t.subjects(b).tasks(PROBE), secrets.token_hex(8)
        try:
            sub = peer.subscribe(subject)
        except PermissionDenied:
            return False, f"{b} may not even listen on {subject}"
        try:
            actor.publish(subject, marker)
            got = self._arrived(sub, marker, actor, peer)
        except PermissionDenied:
            return False, f"permission denied: {subject}"
        finally:
            sub.unsubscribe()
        return got, f"{b} received it on {subject}" if got else f"{b} never saw it"

    def subscribe(self, actor: Client, peer: Client, a: str, b: str) -> tuple[bool, str]:
        s, marker = self.t.subjects(b), secrets.token_hex(8)
        try:
            sub = actor.subscribe(s.agent_all(PROBE))
        except PermissionDenied:
            return False, f"permission denied: {s.agent_all(PROBE)}"
        try:
            peer.publish(s.tasks(PROBE), marker)
            got = self._arrived(sub, marker, peer, actor)
        except PermissionDenied:
            return False, f"{b} may not publish {s.tasks(PROBE)}"
        finally:
            sub.unsubscribe()
        return got, f"read {b}'s {s.tasks(PROBE)}" if got else f"saw nothing of {b}'s"

    def request(self, actor: Client, peer: Client, a: str, b: str) -> tuple[bool, str]:
        subject = self.t.subjects(b).inbox(PROBE)
        try:
            served = peer.serve(subject, lambda msg: self.secret[b])
        except PermissionDenied:
            return False, f"{b} may not serve {subject}"
        try:
            reply = actor.request(subject, "probe", timeout=max(1.0, 4 * self.wait))
        except PermissionDenied:
            return False, f"permission denied: {subject}"
        except NoResponders:
            return False, "no responders: nobody there"
        except RequestTimeout:
            return False, "no reply (the responder may not answer)"
        finally:
            served.unsubscribe()
        got = reply.text == self.secret[b]
        return got, f"{b}'s responder answered" if got else "another responder answered"

    def stream_info(self, actor: Client, peer: Client, a: str, b: str) -> tuple[bool, str]:
        body, how = _api(actor, f"STREAM.INFO.{self.stream(b)}")
        if body is None:
            return False, how
        if body.get("created") == self.created[b]:
            return True, f"{b}'s stream {self.stream(b)}"
        return False, f"{a}'s own stream of that name"

    def consumer_create(self, actor: Client, peer: Client, a: str, b: str) -> tuple[bool, str]:
        stream, name = self.stream(b), f"audit-{secrets.token_hex(4)}"
        config = {"name": name, "durable_name": name, "ack_policy": "explicit",
                  "filter_subject": self.t.subjects(b).tasks(CANARY),
                  "inactive_threshold": 30_000_000_000}
        body, how = _api(actor, f"CONSUMER.CREATE.{stream}.{name}",
                         {"stream_name": stream, "config": config})
        if body is None:
            return False, how
        there, _ = _api(self.owner[b], f"CONSUMER.INFO.{stream}.{name}")
        for client in (actor, self.owner[b]):  # remove it, wherever it was made
            _api(client, f"CONSUMER.DELETE.{stream}.{name}")
        if there is not None:
            return True, f"created on {b}'s {stream}"
        return False, f"created on {a}'s own {stream}"

    def direct_get(self, actor: Client, peer: Client, a: str, b: str) -> tuple[bool, str]:
        subject = f"{_API}.DIRECT.GET.{self.stream(b)}"
        request = {"last_by_subj": self.t.subjects(b).tasks(CANARY)}
        try:
            reply = actor.request(subject, request, timeout=1.0)
        except (PermissionDenied, NoResponders, RequestTimeout) as error:
            return False, _why(error, subject)
        if reply.headers.get("Status"):
            return False, f"{reply.headers['Status']} {reply.headers.get('Description', '')}"
        return self._judge(reply.data, a, b)

    def kv_read(self, actor: Client, peer: Client, a: str, b: str) -> tuple[bool, str]:
        bucket = self.bucket(b)
        body, how = _api(actor, f"STREAM.MSG.GET.KV_{bucket}",
                         {"last_by_subj": f"$KV.{bucket}.{CANARY_KEY}"})
        if body is None:
            return False, how
        return self._judge(base64.b64decode(body["message"].get("data", "")), a, b)

    def _judge(self, data: bytes, a: str, b: str) -> tuple[bool, str]:
        if data == self.secret[b].encode():
            return True, f"read {b}'s secret"
        return False, f"read {a}'s own secret" if data == self.secret[a].encode() else "no secret"

    def cleanup(self) -> None:
        for n in getattr(self, "owner", {}) and self.t.names:
            owner = self.owner[n]
            for role in (PROBE, CANARY):
                _api(owner, f"STREAM.PURGE.{self.stream(n)}",
                     {"filter": self.t.subjects(n).tasks(role)})
            _api(owner, f"STREAM.PURGE.KV_{self.bucket(n)}",
                 {"filter": f"$KV.{self.bucket(n)}.{CANARY_KEY}"})

    def close(self) -> None:
        for client in self.opened:
            client.close()


def _api(client: Client, what: str, request: Any = b"") -> tuple[dict | None, str]:
    """A raw JetStream API request: (the response, "") or (None, why it failed)."""
    subject = f"{_API}.{what}"
    try:
        body = client.request(subject, json.dumps(request) if request else b"",
                              timeout=1.0).json()
    except (PermissionDenied, NoResponders, RequestTimeout) as error:
        return None, _why(error, subject)
    if "error" in body:
        return None, f"{body['error'].get('code')} {body['error'].get('description')}"
    return body, ""


def _why(error: Exception, subject: str) -> str:
    if isinstance(error, PermissionDenied):
        return f"permission denied: {subject}"
    return "no JetStream there" if isinstance(error, NoResponders) else "no reply"


def audit(url: str, tenants: Tenants, *, wait: float = 0.25) -> AuditReport:
    """Connect as each tenant and try every action on every tenant, against the live server."""
    run = _Audit(url, tenants, wait)
    try:
        run.prepare()
        cells = run.run()
        run.cleanup()
    finally:
        run.close()
    return AuditReport(tenants.model, tenants.names, cells, TITLES[tenants.model])


async def aaudit(url: str, tenants: Tenants, *, wait: float = 0.25) -> AuditReport:
    return await asyncio.to_thread(audit, url, tenants, wait=wait)


def audit_models(models: Iterable[str] = ("seed000", "accounts", "users"),
                 names: Iterable[str] = ("acme", "globex"), *,
                 wait: float = 0.25, tls: bool | str | None = None) -> list[AuditReport]:
    """Start an embedded server per model, configured by it, and audit each; ``tls=True``
    (or ``"mutual"``) runs each over TLS, every tenant's connection verifying the server."""
    from ..core.server import EmbeddedServer

    reports = []
    for model in models:
        tenants = Tenants(names, model=model, assets=reference_assets())
        with EmbeddedServer(name=f"audit-{model}", extra_config=tenants.config(),
                            tls=tls) as server:
            reports.append(audit(server.url, tenants, wait=wait))
    return reports
