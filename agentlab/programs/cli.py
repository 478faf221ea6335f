"""The ``agentlab`` command.

    agentlab server [--store-dir DIR] [--max-memory 256MB] [--max-file 1GB] [--monitor]
                    [--tls [mutual]]
    agentlab certs [DIR]
    agentlab demo [--basics] [--quiet]
    agentlab status [--url URL] [--monitor-url URL] | dlq list|show|redrive | audit
    agentlab schemas [DIR] | asyncapi [--out FILE] [--doc docs/protocol.md]
    agentlab mcp [--http PORT] [--llm-plays ROLE ...]
    agentlab metrics [--port 9477] [--host 127.0.0.1] [--url URL]
    agentlab dashboard [--port 8866] [--url URL] [--org acme]
    agentlab --version

Exit codes: 0 success, 1 the demo's own checks failed (or the server died on its own),
2 an agentlab error (printed in one paragraph, without a traceback) or a usage error,
130 interrupted.

Adding a subcommand: write ``configure_x(parser)`` and ``run_x(args) -> int`` and list them
in ``COMMANDS``. (Why past ~400 lines: every command's arguments and help are here, side by
side, so ``agentlab --help`` and this file read the same; what a command does lives in its
own module.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console, JustifyMethod
from rich.markup import escape

if TYPE_CHECKING:
    from ..org.models import DeadLetter

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


# -- agentlab server ---------------------------------------------------------------------
def configure_server(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store-dir", metavar="DIR", default=None,
                        help="keep JetStream data in DIR (default: a temporary directory, "
                             "deleted on exit)")
    parser.add_argument("--max-memory", metavar="SIZE", default="256MB",
                        help="JetStream memory store limit (default: %(default)s)")
    parser.add_argument("--max-file", metavar="SIZE", default="1GB",
                        help="JetStream file store limit (default: %(default)s)")
    parser.add_argument("--monitor", action="store_true",
                        help="serve the HTTP monitoring endpoint (/varz /jsz /connz) on a "
                             "free port of 127.0.0.1; off by default: it lists every "
                             "connection and subscription to anyone on this host")
    parser.add_argument("--tls", nargs="?", const="tls", choices=["tls", "mutual"],
                        default=None, metavar="mutual",
                        help="serve TLS only, with a CA and certificates made for this server "
                             "(in its store); `--tls mutual` also requires the client "
                             "certificate that CA signed")


def configure_certs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", nargs="?", default="deploy/nats/certs", metavar="DIR",
                        help="where to write them (default: %(default)s, the folder "
                             "docker-compose.tls.yml mounts)")


def run_certs(args: argparse.Namespace) -> int:
    from .certs import run

    return run(args.directory)


def run_server(args: argparse.Namespace) -> int:
    from .server import serve_forever

    return serve_forever(store_dir=args.store_dir, max_memory=args.max_memory,
                         max_file=args.max_file, monitor=args.monitor, tls=args.tls)


# -- agentlab demo -----------------------------------------------------------------------
def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--basics", action="store_true",
                        help="only the first steps: the CEO messaging the CTO, request/reply "
                             "and JetStream delegation, explained one at a time")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="with --basics: print only the summary and the checks")


def run_demo(args: argparse.Namespace) -> int:
    if args.basics:
        from .basics import run as run_basics

        return EXIT_OK if run_basics(quiet=args.quiet) else EXIT_FAILED
    from .demo import run as run_tour

    return EXIT_OK if run_tour() else EXIT_FAILED


# -- agentlab status ---------------------------------------------------------------------
def configure_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", metavar="URL", default=None,
                        help="the NATS server to report on (default: $AGENTLAB_NATS_URL)")
    parser.add_argument("--monitor-url", metavar="URL", default=None,
                        help="the server's HTTP monitoring endpoint, to link it (default: "
                             "$AGENTLAB_MONITOR_URL, else port 8222 on the server's host "
                             "if the server there answers)")


def run_status(args: argparse.Namespace) -> int:
    import os

    url = args.url or os.environ.get("AGENTLAB_NATS_URL")
    if not url:
        Console(stderr=True).print(
            "[bold red]agentlab status: no NATS server to report on.[/] Start one with "
            "[bold]agentlab server[/] (in another terminal) and export "
            "AGENTLAB_NATS_URL=<the NATS URL it prints>, or pass --url nats://HOST:PORT.")
        return EXIT_ERROR
    from ..core.client import Client
    from ..metrics.monitoring import monitoring_line
    from ..protocol.services import service_report
    from ..reports.report import natural_width, status_reports

    with Client.open(url, name="agentlab-status") as client:
        tables = [report.to_table() for report in status_reports(client)]
        # After the reports: gathering the services' answers takes their half second.
        tables.append(service_report(client).to_table())
        monitoring = monitoring_line(client, args.monitor_url)
    console = Console()
    if not _on_a_terminal():  # piped: whole names and numbers, as the nats CLI prints them
        console = Console(width=max(natural_width(table) for table in tables))
    for table in tables:
        console.print(table)
        console.print()
    console.print(monitoring, markup=False, highlight=False, soft_wrap=True)
    return EXIT_OK


# -- agentlab dlq ------------------------------------------------------------------------
def configure_dlq(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument("--url", metavar="URL", default=None,
                     help="the NATS server (default: $AGENTLAB_NATS_URL)")
    listing = actions.add_parser("list", parents=[url], help="list dead letters, oldest first",
                                 description="List the dead letters in DEAD_LETTERS.")
    listing.add_argument("--limit", type=int, default=100, metavar="N",
                         help="show at most N letters (default: %(default)s)")
    show = actions.add_parser("show", parents=[url], help="one dead letter in full",
                              description="Print one dead letter, payload included.")
    show.add_argument("seq", type=int, help="its sequence in DEAD_LETTERS (see `dlq list`)")
    redrive = actions.add_parser("redrive", parents=[url],
                                 help="republish a dead letter to its original subject",
                                 description="Republish a dead letter to its original subject "
                                             "(fresh Nats-Msg-Id) and remove it from the DLQ.")
    redrive.add_argument("seq", type=int, help="its sequence in DEAD_LETTERS (see `dlq list`)")


def run_dlq(args: argparse.Namespace) -> int:
    import os

    url = args.url or os.environ.get("AGENTLAB_NATS_URL")
    if not url:
        Console(stderr=True).print(
            f"[bold red]agentlab dlq {args.dlq_action}: no NATS server given.[/] Export "
            "AGENTLAB_NATS_URL=nats://HOST:PORT (the URL `agentlab server` prints) or pass "
            "--url nats://HOST:PORT.")
        return EXIT_ERROR
    from ..core.client import Client
    from ..org.deadletters import DeadLetterOffice

    console = Console()
    if not _on_a_terminal():  # piped: whole subjects and errors, as the nats CLI prints
        console = Console(width=max(console.width, 160))
    with Client.open(url, name="agentlab-dlq") as client:
        office = DeadLetterOffice(client)
        if args.dlq_action == "list":
            _dlq_print_list(console, office.list(limit=args.limit))
        elif args.dlq_action == "show":
            _dlq_print_letter(console, args.seq, office.show(args.seq))
        else:
            ack = office.redrive(args.seq)
            console.print(f"Redrove dead letter {args.seq}: stored again as "
                          f"{ack.stream}#{ack.seq}; removed from the DLQ.", highlight=False)
    return EXIT_OK


def _dlq_print_list(console: Console, letters: list[tuple[int, DeadLetter]]) -> None:
    from rich.table import Table

    from ..org.deadletters import DLQ_STREAM, letter_summary

    if not letters:
        console.print(f"No dead letters in {DLQ_STREAM}.")
        return
    table = Table(title=f"Dead letters in {DLQ_STREAM}", title_justify="left")
    columns: list[tuple[str, JustifyMethod]] = [
        ("Seq", "right"), ("Reason", "left"), ("Subject", "left"), ("Stream Seq", "left"),
        ("Consumer", "left"), ("Deliveries", "right"), ("Error", "left"), ("Time", "left")]
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")
    for seq, letter in letters:
        row = letter_summary(seq, letter)
        error = row["error"] if len(row["error"]) <= 60 else row["error"][:59] + "…"
        table.add_row(str(seq), row["reason"], row["subject"], row["stream"], row["consumer"],
                      str(row["deliveries"]), error, row["dead_at"])
    console.print(table)


def _dlq_print_letter(console: Console, seq: int, letter: DeadLetter) -> None:
    import json

    from rich.table import Table

    from ..org.deadletters import DLQ_STREAM

    fields = letter.model_dump(mode="json")
    payload, headers = fields.pop("payload"), fields.pop("headers")
    table = Table(title=f"Dead letter {DLQ_STREAM}#{seq}", title_justify="left",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in fields.items():
        table.add_row(name, str(value))
    for name, value in headers.items():
        table.add_row(f"header {name}", value)
    console.print(table)
    console.print(f"[bold]payload[/] ({fields['encoding']})")
    try:
        console.print_json(json.dumps(json.loads(payload)))
    except ValueError:  # not JSON: show it, control characters escaped, never raw
        shown = "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in payload)
        console.print(shown, markup=False, highlight=False)


# -- agentlab audit ---------------------------------------------------------------------
def configure_audit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", choices=["seed000", "accounts", "users"],
                        help="audit only this configuration (repeatable; default: all three)")
    parser.add_argument("--tenants", default="acme,globex", metavar="A,B",
                        help="comma-separated tenant names (default: %(default)s)")
    parser.add_argument("--explain", action="store_true",
                        help="say in every cell what the probe saw")
    parser.add_argument("--show-config", action="store_true",
                        help="print each rendered server config first (passwords masked)")
    parser.add_argument("--tls", nargs="?", const="tls", choices=["tls", "mutual"],
                        default=None, metavar="mutual",
                        help="run each server TLS only (`--tls mutual`: with client "
                             "certificates); every tenant connects over it")


def run_audit(args: argparse.Namespace) -> int:
    from ..core.server import EmbeddedServer
    from ..org.streams import reference_assets
    from ..tenants.config import Tenants
    from .tenant_audit import audit

    console = Console()
    if not _on_a_terminal():  # piped: the whole table, not a wrapped one
        console = Console(width=max(console.width, 160 if args.explain else 120))
    names = [n.strip() for n in args.tenants.split(",") if n.strip()]
    failed = []
    for model in args.model or ["seed000", "accounts", "users"]:
        tenants = Tenants(names, model=model, assets=reference_assets())
        if args.show_config:
            console.print(f"[bold]Server config, model {model}[/]")
            console.print(tenants.config(redact=True), markup=False, highlight=False)
        with EmbeddedServer(name=f"audit-{model}", extra_config=tenants.config(),
                            tls=args.tls) as server:
            report = audit(server.url, tenants)
        console.print(report.to_table(explain=args.explain))
        console.print()
        if model != "seed000" and not report.ok:
            failed.append(model)
        if model == "seed000" and not report.leaks:
            console.print("[yellow]Seed 000's configuration showed no leak this time.[/]")
    if failed:
        console.print(f"[bold red]agentlab's {' and '.join(failed)} configuration leaks or "
                      "denies a tenant its own subjects.[/]")
        return EXIT_FAILED
    console.print("[bold green]agentlab's configurations isolate every tenant;[/] seed 000's "
                  "verbatim lets every org publish to and read other orgs' agents.")
    return EXIT_OK


# -- agentlab schemas ----------------------------------------------------------------------
def configure_schemas(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="DIR", nargs="?", default=None,
                        help="where to write the JSON Schema files (default: the package's own "
                             "agentlab/wire/schemas/)")


def run_schemas(args: argparse.Namespace) -> int:
    from .. import org  # noqa: F401  (importing the organisation registers its wire models)
    from ..wire.messages import SCHEMA_DIR, export_schemas

    for path in export_schemas(args.directory or SCHEMA_DIR):
        print(path)
    return EXIT_OK


# -- agentlab asyncapi ---------------------------------------------------------------------
def configure_asyncapi(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="FILE", default=None,
                        help="write the document to FILE (YAML for .yaml/.yml, else JSON; "
                             "default: JSON on stdout); the committed one is docs/asyncapi.json")
    parser.add_argument("--doc", metavar="MARKDOWN", default=None,
                        help="also rewrite the subjects table in MARKDOWN (docs/protocol.md)")


def run_asyncapi(args: argparse.Namespace) -> int:
    from ..protocol.asyncapi import (
        asyncapi_document,
        render,
        update_markdown_table,
        write_document,
    )

    if args.out:
        print(write_document(args.out))
    else:
        sys.stdout.write(render(asyncapi_document()))
    if args.doc:
        update_markdown_table(args.doc)
        print(args.doc, file=sys.stderr if not args.out else sys.stdout)
    return EXIT_OK


# -- agentlab mcp ------------------------------------------------------------------------
def configure_mcp(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", type=int, metavar="PORT", default=None,
                        help="serve streamable HTTP on 127.0.0.1:PORT (default: stdio)")
    parser.add_argument("--url", metavar="URL", default=None,
                        help="join the organisation on this NATS server (default: "
                             "$AGENTLAB_NATS_URL, else an embedded server and organisation)")
    parser.add_argument("--org", default="acme", help="the organisation (default: %(default)s)")
    parser.add_argument("--llm-plays", nargs="+", default=[], metavar="ROLE",
                        help="start the organisation without these roles: the LLM works their "
                             "queues with next_task / complete_task")
    started = parser.add_mutually_exclusive_group()
    started.add_argument("--start-organisation", dest="start_organisation",
                         action="store_true", default=None,
                         help="run the reference organisation (the default on an embedded "
                              "server)")
    started.add_argument("--no-organisation", dest="start_organisation",
                         action="store_false", help="start no agents: only the hub")
    parser.add_argument("--ack-wait", type=float, default=30.0, metavar="S",
                        help="a task not acked within S seconds is delivered again "
                             "(default: %(default)s)")
    parser.add_argument("--hold", type=float, default=600.0, metavar="S",
                        help="how long the hub keeps a task the LLM took (default: "
                             "%(default)s)")


def run_mcp(args: argparse.Namespace) -> int:
    from .mcp_hub import run_hub

    return run_hub(url=args.url, org=args.org, http_port=args.http, llm_plays=args.llm_plays,
                   start_organisation=args.start_organisation, ack_wait=args.ack_wait,
                   hold=args.hold)


# -- agentlab metrics --------------------------------------------------------------------
def configure_metrics(parser: argparse.ArgumentParser) -> None:
    # metrics.exporter.DEFAULT_PORT, written out: the parser must build without the extra.
    parser.add_argument("--port", type=int, default=9477, metavar="PORT",
                        help="serve /metrics on this port (default: %(default)s; 0: any free "
                             "one, printed)")
    parser.add_argument("--host", default="127.0.0.1", metavar="HOST",
                        help="the address to listen on (default: %(default)s; 0.0.0.0 lets "
                             "a Prometheus in a container scrape it)")
    parser.add_argument("--url", metavar="URL", default=None,
                        help="the NATS server to read (default: $AGENTLAB_NATS_URL)")


def run_metrics(args: argparse.Namespace) -> int:
    import os
    import re
    import signal
    import threading

    url = args.url or os.environ.get("AGENTLAB_NATS_URL")
    if not url:
        Console(stderr=True).print(
            "[bold red]agentlab metrics: no NATS server to read.[/] Start one with "
            "[bold]agentlab server[/] (in another terminal) and export "
            "AGENTLAB_NATS_URL=<the NATS URL it prints>, or pass --url nats://HOST:PORT.")
        return EXIT_ERROR
    from ..core.client import Client
    from ..metrics.exporter import MetricsExporter

    stop = threading.Event()
    on_main = threading.current_thread() is threading.main_thread()  # signals need main
    if on_main:
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        with Client.open(url, name="agentlab-metrics") as client, \
                MetricsExporter(client, args.port, host=args.host) as exporter:
            shown = re.sub(r"//[^/@]*@", "//", url)  # a password in the URL stays unprinted
            Console().print(f"Serving Prometheus metrics of {escape(shown)} at "
                            f"[bold]{exporter.url}[/]\nPress Ctrl-C to stop.", highlight=False)
            while not stop.wait(0.5):  # a timed wait: Ctrl-C interrupts it at once
                pass
    except KeyboardInterrupt:
        pass
    finally:
        if on_main:  # None means a handler installed from C: fall back to the default
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return EXIT_OK


# -- agentlab dashboard ------------------------------------------------------------------
def configure_dashboard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8866, metavar="PORT",
                        help="serve the page on 127.0.0.1:PORT (default: %(default)s; 0: any "
                             "free one, printed)")
    parser.add_argument("--url", metavar="URL", default=None,
                        help="watch the organisation on this NATS server (default: "
                             "$AGENTLAB_NATS_URL, else an embedded server and organisation)")
    parser.add_argument("--org", default="acme", help="the organisation (default: %(default)s)")
    started = parser.add_mutually_exclusive_group()
    started.add_argument("--start-organisation", dest="start_organisation",
                         action="store_true", default=None,
                         help="run the reference organisation's agents in the page's kernel "
                              "(the default on an embedded server)")
    started.add_argument("--no-organisation", dest="start_organisation",
                         action="store_false", help="only watch and give tasks")


def run_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import run_dashboard as serve

    return serve(url=args.url, org=args.org, port=args.port,
                 start_organisation=args.start_organisation)


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "server": Command("run a nats-server with JetStream in the foreground (Ctrl-C stops it)",
                      configure_server, run_server),
    "certs": Command("write a CA and mutual TLS certificates for docker-compose.tls.yml",
                     configure_certs, run_certs),
    "demo": Command("the CEO agent delegates tasks to the CTO agent, in a few seconds",
                    configure_demo, run_demo),
    "status": Command("the stream and consumer reports of a running server, as `nats stream "
                      "report` and `nats consumer report` show them, then its NATS micro "
                      "services (agents, tool pools)", configure_status, run_status),
    "dlq": Command("list, show and redrive dead letters (the DEAD_LETTERS stream)",
                   configure_dlq, run_dlq),
    "schemas": Command("write the JSON Schema of every wire model, for clients in any "
                       "language", configure_schemas, run_schemas),
    "asyncapi": Command("write the AsyncAPI 3.0 document of every subject and message "
                        "(docs/asyncapi.json)", configure_asyncapi, run_asyncapi),
    "mcp": Command("the MCP agent hub: an LLM client (Claude Desktop, an IDE) delegates, "
                   "works a role's queue, reads meetings and dead letters", configure_mcp,
                   run_mcp),
    "metrics": Command("serve Prometheus /metrics: stream and consumer depths, dead letters, "
                       "agents up, tasks processed and failed, handler durations",
                       configure_metrics, run_metrics),
    "dashboard": Command("the dashboard as a web page (Voila): the four live views and the "
                         "buttons, on a running organisation or an embedded one",
                         configure_dashboard, run_dashboard),
    "audit": Command("try every cross-tenant action against live servers: seed 000's config "
                     "verbatim, agentlab's accounts and users models", configure_audit,
                     run_audit),
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="agentlab", description="Learn and prototype AI agent messaging on NATS and "
        "JetStream. Set AGENTLAB_NATS_URL to use a server you already run.")
    parser.add_argument("--version", action="version", version=f"agentlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.configure(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def _on_a_terminal() -> bool:
    # Not rich's is_terminal: Jupyter's `!cmd` sets FORCE_COLOR, which makes rich think it
    # has an 80-column terminal, and the tables would wrap in the notebook.
    return sys.stdout.isatty()


def main(argv: list[str] | None = None) -> int:
    from ..errors import AgentlabError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    errors = Console(stderr=True)
    _log_to(errors)
    try:
        return COMMANDS[args.command].run(args)
    except AgentlabError as error:
        errors.print(f"[bold red]agentlab {args.command} failed:[/] [red]{escape(str(error))}[/]")
        return EXIT_ERROR
    except KeyboardInterrupt:
        errors.print("[yellow]Interrupted.[/]")
        return EXIT_INTERRUPTED


def _log_to(console: Console) -> None:
    """agentlab's warnings (a failing handler, a lost connection) as readable lines."""
    from rich.logging import RichHandler

    log = logging.getLogger("agentlab")
    if not log.handlers:
        log.addHandler(RichHandler(console=console, show_path=False, show_time=False))
        log.setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
