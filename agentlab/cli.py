"""The ``agentlab`` command.

    agentlab server [--store-dir DIR] [--max-memory 256MB] [--max-file 1GB]
    agentlab demo [--quiet]
    agentlab --version

Exit codes: 0 success, 1 the demo's own checks failed (or the server died on its own),
2 an agentlab error (printed in one paragraph, without a traceback) or a usage error,
130 interrupted.

Adding a subcommand: write ``configure_x(parser)`` and ``run_x(args) -> int`` and list them
in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.markup import escape

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


def run_server(args: argparse.Namespace) -> int:
    from .server import serve_forever

    return serve_forever(store_dir=args.store_dir, max_memory=args.max_memory,
                         max_file=args.max_file)


# -- agentlab demo -----------------------------------------------------------------------
def configure_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print only the summary and the checks")


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return EXIT_OK if run(quiet=args.quiet) else EXIT_FAILED


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "server": Command("run a nats-server with JetStream in the foreground (Ctrl-C stops it)",
                      configure_server, run_server),
    "demo": Command("the CEO agent delegates tasks to the CTO agent, in a few seconds",
                    configure_demo, run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="agentlab", description="Learn and prototype AI agent messaging on NATS and "
        "JetStream. Set AGENTLAB_NATS_URL to use a server you already run.")
    parser.add_argument("--version", action="version", version=f"agentlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.configure(sub.add_parser(name, help=command.help, description=command.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import AgentlabError

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
