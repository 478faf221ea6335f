"""Tenants: declare them, render the server config that isolates them, and hold their credentials.

    lab = agentlab.start(tenants=["acme", "globex"])      # one NATS account per tenant
    acme = lab.tenant("acme")                             # a Client, connected as acme
    Organisation(acme).start()                            # the reference org, seed subjects
    print(lab.tenants.config(redact=True))                # what the server was given

Three models, one renderer each:

- ``accounts`` (default): one NATS account per tenant, each with its own JetStream and its
  own limits. The same subject or stream name means a different thing in every account, so
  each tenant runs the seed's names unchanged. What tenants share goes through explicit
  exports/imports: the shared tool pool (``agentlab.org.sharedtools``) and the operator's
  read-only view of every tenant's streams, for the dashboard.
- ``users``: seed 000's model done right. One account; per-tenant users whose permissions
  cover ``genbrain.<tenant>.>``, the inbox prefix ``_INBOX.<tenant>``, and the JetStream API
  of the tenant's own streams (named ``<STREAM>_<TENANT>``), which the operator declares.
- ``seed000``: seed 000's authorization block verbatim, for the isolation audit to show its
  leak. Never use it for anything else.

Credentials are generated per ``Tenants`` object (random 192-bit passwords), kept in it,
never in the environment, and masked in every ``repr``.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.client import Client
from ..core.specs import StreamSpec
from ..core.subjects import DEFAULT_ROOT, Subjects
from ..errors import AuthenticationFailed
from .client import TenantClient, explain_tenant_refusals

if TYPE_CHECKING:
    from nats.js.api import StreamInfo

__all__ = ["MODELS", "Credentials", "TenantAssets", "TenantClient", "TenantLimits", "Tenants",
           "UnknownTenant"]

MODELS = ("accounts", "users", "seed000")
OPERATOR, TOOLS = "operator", "tools"  # identities of the platform, not tenants
_RESERVED = {OPERATOR, TOOLS, "system", "sys"}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
# Read-only JetStream API a tenant account exports to the operator (dashboards, reports).
_READ_ONLY_API = ("INFO", "STREAM.INFO.*", "STREAM.NAMES", "STREAM.LIST", "CONSUMER.INFO.*.*",
                  "CONSUMER.NAMES.*", "CONSUMER.LIST.*")
_q = json.dumps


@dataclass(frozen=True)
class Credentials:
    """A user name and its password; ``repr`` never shows the password."""

    user: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password='***')"


@dataclass(frozen=True)
class TenantLimits:
    """JetStream limits of one tenant's account (accounts model)."""

    max_memory: str = "64MB"
    max_file: str = "256MB"
    max_streams: int = 32
    max_consumers: int = 256

    def render(self) -> str:
        return (f"{{max_memory: {self.max_memory}, max_file: {self.max_file}, "
                f"max_streams: {self.max_streams}, max_consumers: {self.max_consumers}}}")


def _no_streams(subjects: Subjects) -> Sequence[StreamSpec]:
    return ()


@dataclass(frozen=True)
class TenantAssets:
    """What each tenant keeps in JetStream: its streams (built from its subjects) and buckets.

    The users model renames them ``<NAME>_<TENANT>``, names them in each tenant's permissions
    and has the operator declare them; in the accounts model every account has a JetStream of
    its own and the list is not needed. The reference organisation's are
    ``agentlab.org.reference_assets()``, which ``agentlab.start(tenants=...)`` uses.
    """

    streams: Callable[[Subjects], Sequence[StreamSpec]] = _no_streams
    kv_buckets: tuple[str, ...] = ()
    object_buckets: tuple[str, ...] = ()


class UnknownTenant(AuthenticationFailed):
    """A tenant (or identity) that this lab did not declare, so it has no credentials."""

    def __init__(self, tenant: str, known: Iterable[str]):
        self.url, self.identity, self.tenant = "(not connected)", tenant, tenant
        Exception.__init__(self, f"Unknown tenant {tenant!r}: this lab declared "
                                 f"{', '.join(map(repr, known))}, so there are no credentials "
                                 f"for {tenant!r}. Declare it: agentlab.start(tenants=[...]).")


class Tenants:
    """The declared tenants of one server, the config isolating them, and their credentials."""

    def __init__(self, names: Iterable[str], *, model: str = "accounts",
                 limits: TenantLimits | None = None, root: str = DEFAULT_ROOT,
                 assets: TenantAssets | None = None):
        self.names = tuple(names)
        self.assets = assets
        if model not in MODELS:
            raise ValueError(f"model={model!r}: choose one of {', '.join(MODELS)}.")
        if not self.names:
            raise ValueError("Declare at least one tenant, e.g. Tenants(['acme', 'globex']).")
        for name in self.names:
            if not _NAME.match(name) or name in _RESERVED:
                raise ValueError(f"Tenant name {name!r}: use lowercase letters, digits, '_' "
                                 "and '-', starting with a letter; not one of "
                                 f"{sorted(_RESERVED)}.")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"Tenant names repeat: {self.names}.")
        self.model, self.root = model, root
        self.limits = limits or TenantLimits()
        self._credentials = {who: Credentials(self.user_name(who), secrets.token_urlsafe(24))
                             for who in (*self.names, TOOLS, OPERATOR)}

    @classmethod
    def of(cls, value: Tenants | Iterable[str]) -> Tenants:
        if isinstance(value, Tenants):
            return value
        return cls([value] if isinstance(value, str) else value)

    # -- names -------------------------------------------------------------------------
    def user_name(self, who: str) -> str:
        return f"org_{who}_agents" if self.model == "seed000" and who in self.names else who

    def credentials(self, who: str) -> Credentials:
        """The credentials of a tenant, or of the ``"operator"`` / ``"tools"`` identities."""
        try:
            return self._credentials[who]
        except KeyError:
            raise UnknownTenant(who, self.names) from None

    def subjects(self, tenant: str) -> Subjects:
        """Users model: ``genbrain.<tenant>``; the other models keep the seed's root."""
        self.credentials(tenant)
        return Subjects(f"{self.root}.{tenant}" if self.model == "users" else self.root)

    def inbox_prefix(self, who: str) -> str | None:
        if self.model == "users":
            return f"_INBOX.{who}"
        if self.model == "seed000" and who in self.names:  # the seed allows no _INBOX
            return f"{self.root}.org.{who}._INBOX"
        return None

    def stream_name(self, tenant: str, base: str) -> str:
        """``AGENT_TASKS`` in its own account; ``AGENT_TASKS_ACME`` when accounts are shared."""
        return f"{base}_{tenant.upper()}" if self.model == "users" else base

    def bucket_name(self, tenant: str, base: str) -> str:
        return self.stream_name(tenant, base)

    def account(self, who: str) -> str:
        return who.upper()

    # -- connecting --------------------------------------------------------------------
    def connect(self, url: str, who: str, *, name: str | None = None) -> TenantClient:
        """A connection as tenant ``who`` (or ``"operator"``/``"tools"``) to the server at
        ``url``."""
        creds = self.credentials(who)
        client = TenantClient.open(url, name=name or who, user=creds.user,
                                   password=creds.password, inbox_prefix=self.inbox_prefix(who))
        return self._adopt(client, who)

    async def aconnect(self, url: str, who: str, *, name: str | None = None) -> TenantClient:
        creds = self.credentials(who)
        client = await TenantClient.aopen(url, name=name or who, user=creds.user,
                                          password=creds.password,
                                          inbox_prefix=self.inbox_prefix(who))
        return self._adopt(client, who)

    def _adopt(self, client: Client, who: str) -> TenantClient:
        assert isinstance(client, TenantClient)
        client.tenant, client.tenants = who, self
        explain_tenant_refusals(client, who)
        return client

    def setup(self, operator: Client) -> None:
        """Declare what the operator owns: every tenant's streams and buckets (users model).

        In the accounts model each tenant declares its own, in its own JetStream.
        """
        if self.model != "users":
            return
        from ..core.stores import KeyValueBucket, ObjectBucket

        assets = self._assets()
        for tenant in self.names:
            for spec in assets.streams(self.subjects(tenant)):
                operator.js.declare_stream(_renamed(spec, self.stream_name(tenant, spec.name)))
            for bucket in assets.kv_buckets:
                KeyValueBucket.declare(operator, self.bucket_name(tenant, bucket))
            for bucket in assets.object_buckets:
                ObjectBucket.declare(operator, self.bucket_name(tenant, bucket))

    def _assets(self) -> TenantAssets:
        if self.assets is None:
            raise ValueError(
                "The users model names each tenant's streams and buckets in its permissions, "
                "and this Tenants has none: pass assets=agentlab.org.reference_assets() (the "
                "reference organisation's), or let agentlab.start(tenants=...) fill them in.")
        return self.assets

    def streams(self, operator: Client) -> dict[str, list[str]]:
        """Each tenant's stream names, as the operator sees them (for dashboards)."""
        if self.model == "accounts":  # through each tenant's read-only API export
            return {t: _sorted_names(operator.js.with_prefix(f"$JS.{t}.API").streams())
                    for t in self.names}
        every = _sorted_names(operator.js.streams())
        if self.model == "seed000":  # one account, one set of streams for every org
            return {t: every for t in self.names}
        return {t: [s for s in every if s.endswith(f"_{t.upper()}")] for t in self.names}

    # -- the server config -------------------------------------------------------------
    def config(self, *, redact: bool = False) -> str:
        """The config text the server needs; ``redact=True`` masks the passwords (to show it)."""
        text = {"accounts": self._accounts, "users": self._users,
                "seed000": self._seed000}[self.model]()
        if redact:
            for creds in self._credentials.values():
                text = text.replace(_q(creds.password), '"***"')
        return text

    def _user(self, who: str, permissions: str = "") -> str:
        creds = self._credentials[who]
        extra = f", permissions: {permissions}" if permissions else ""
        return f"{{user: {_q(creds.user)}, password: {_q(creds.password)}{extra}}}"

    def _accounts(self) -> str:
        r, op, tools = self.root, self.account(OPERATOR), self.account(TOOLS)
        out = ["# agentlab tenants, model 'accounts': one NATS account per tenant, each with its",
               "# own subject space and its own JetStream. Nothing crosses an account boundary",
               "# unless an export below offers it AND an import accepts it.",
               "accounts {"]
        for t in self.names:
            out += [f"  {_q(self.account(t))}: {{",
                    f"    users: [{self._user(t)}]",
                    f"    jetstream: {self.limits.render()}",
                    "    imports: [  # the shared tool pool; the server stamps the tenant in",
                    (f"      {{service: {{account: {_q(tools)}, subject: "
                     f"{_q(f'{r}.{t}.shared.tools.*')}}}, to: {_q(f'{r}.shared.tools.*')}}}"),
                    "    ]",
                    "    exports: [  # for the operator's dashboard only: read-only API, taps"]
            out += [f"      {{service: {_q('$JS.API.' + api)}, accounts: [{_q(op)}]}}"
                    for api in _READ_ONLY_API]
            out += [f"      {{stream: {_q(s)}, accounts: [{_q(op)}]}}"
                    for s in (f"{r}.>", "$JS.EVENT.ADVISORY.>")]
            out += ["    ]", "  }"]
        out += [f"  {_q(tools)}: {{  # one tool-worker pool serving every tenant",
                f"    users: [{self._user(TOOLS)}]", "    exports: ["]
        out += [f"      {{service: {_q(f'{r}.{t}.shared.tools.*')}, "
                f"accounts: [{_q(self.account(t))}]}}" for t in self.names]
        out += ["    ]", "  }",
                f"  {_q(op)}: {{  # sees every tenant's streams and traffic, changes nothing",
                f"    users: [{self._user(OPERATOR)}]", "    imports: ["]
        for t in self.names:
            acct = _q(self.account(t))
            out += [f"      {{service: {{account: {acct}, subject: {_q('$JS.API.' + api)}}}, "
                    f"to: {_q(f'$JS.{t}.API.{api}')}}}" for api in _READ_ONLY_API]
            out += [f"      {{stream: {{account: {acct}, subject: {_q(s)}}}, "
                    f"prefix: {_q(f'tenants.{t}')}}}" for s in (f"{r}.>", "$JS.EVENT.ADVISORY.>")]
        out += ["    ]", "  }", "}"]
        return "\n".join(out) + "\n"

    def tenant_permissions(self, tenant: str) -> dict[str, Any]:
        """Users model: exactly what ``tenant`` may publish and subscribe to."""
        inbox, own = f"{self.inbox_prefix(tenant)}.>", f"{self.subjects(tenant).root}.>"
        assets = self._assets()
        streams = [self.stream_name(tenant, s.name) for s in assets.streams(Subjects())]
        streams += [f"KV_{self.bucket_name(tenant, b)}" for b in assets.kv_buckets]
        streams += [f"OBJ_{self.bucket_name(tenant, b)}" for b in assets.object_buckets]
        api = []
        for s in streams:  # no STREAM.CREATE/UPDATE: a tenant could capture others' subjects
            api += [f"$JS.API.STREAM.INFO.{s}", f"$JS.API.STREAM.PURGE.{s}",
                    f"$JS.API.STREAM.MSG.GET.{s}", f"$JS.API.STREAM.MSG.DELETE.{s}",
                    f"$JS.API.CONSUMER.*.{s}", f"$JS.API.CONSUMER.*.{s}.>",
                    f"$JS.API.CONSUMER.MSG.NEXT.{s}.*", f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.*",
                    f"$JS.API.DIRECT.GET.{s}", f"$JS.API.DIRECT.GET.{s}.>",
                    f"$JS.ACK.{s}.>", f"$JS.FC.{s}.>"]
        stores = [f"$KV.{self.bucket_name(tenant, b)}.>" for b in assets.kv_buckets]
        stores += [f"$O.{self.bucket_name(tenant, b)}.>" for b in assets.object_buckets]
        advisories = [f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{s}.*" for s in streams]
        return {"publish": {"allow": [own, *stores, *api]},
                "subscribe": {"allow": [own, inbox, *stores, *advisories]},
                "allow_responses": True}

    def _users(self) -> str:
        out = ["# agentlab tenants, model 'users': one account, one user per tenant. Every",
               "# subject a tenant may use carries the tenant: genbrain.<tenant>.>, its inbox",
               "# prefix _INBOX.<tenant>, the JetStream API of its own <STREAM>_<TENANT> streams.",
               "# The operator declares those streams. (No per-tenant JetStream limits here:",
               "# limits are per account. The accounts model has them.)",
               "authorization {", "  users = ["]
        for t in self.names:
            perms = json.dumps(self.tenant_permissions(t), indent=2).replace("\n", "\n    ")
            out.append(f"    {self._user(t, perms)}")
        tools = {"publish": {"allow": [f"{self.inbox_prefix(TOOLS)}.>"]},
                 "subscribe": {"allow": [f"{self.root}.*.shared.tools.*",
                                         f"{self.inbox_prefix(TOOLS)}.>"]},
                 "allow_responses": True}
        out += ["    # the shared tool pool: answers requests, publishes nothing of its own",
                f"    {self._user(TOOLS, json.dumps(tools))}",
                "    # the operator: declares every tenant's streams, sees everything",
                f"    {self._user(OPERATOR)}", "  ]", "}"]
        return "\n".join(out) + "\n"

    def _seed000(self) -> str:
        out = ["# Seed 000's 'NATS authorization configuration per organization', verbatim: one",
               "# entry per org, with the org id and a generated password filled in.",
               "# THE HOLE: genbrain.agents.*.tasks (publish) and genbrain.agents.*.> (subscribe)",
               "# carry no org, so every org may hand tasks to every other org's agents and read",
               "# their traffic. Also, deny beats allow in NATS, so 'genbrain.org.*.>' denies an",
               "# org its own genbrain.org.<id>.> too; and no _INBOX or $JS.API is allowed.",
               "authorization {", "  users = ["]
        for t in self.names:
            creds = self._credentials[t]
            out += ["    {",
                    f"      user: {_q(creds.user)}",
                    f"      password: {_q(creds.password)}",
                    "      permissions: {",
                    "        publish: {",
                    f'          allow: ["genbrain.agents.*.tasks", "genbrain.org.{t}.>"]',
                    '          deny: ["genbrain.org.*.>"] # Deny other orgs (more specific wins)',
                    "        }",
                    "        subscribe: {",
                    f'          allow: ["genbrain.agents.*.>", "genbrain.org.{t}.>"]',
                    "        }", "      }", "    }"]
        out += ["    # not in the seed: agentlab's operator, who declares the streams",
                f"    {self._user(OPERATOR)}", "  ]", "}"]
        return "\n".join(out) + "\n"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tenants) and (self.model, self.names) == (other.model, other.names)

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<Tenants {self.model}: {', '.join(self.names)} (credentials hidden)>"


def _sorted_names(infos: Iterable[StreamInfo]) -> list[str]:
    # nats-py types the name optional, for a config being written; a listed stream has one.
    return sorted(info.config.name for info in infos if info.config.name)


def _renamed(spec: Any, name: str) -> Any:
    from dataclasses import replace

    return replace(spec, name=name)
