"""The server's own commands: serve, worker, migrate, token create. They run where the
server runs and read its settings (`BERTH_*`), not the login of `berth login`. Their work is in
app.cli.serving, imported when one of them runs: the people's commands never load the server's
database or web stack (a second less for every `berth ps`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from app.cli.parsing import Commands
from app.security.roles import Role


def _server(command: str) -> Callable[[argparse.Namespace], int]:
    """Runs `serving.<command>` with the log level the server's settings name."""

    def run(args: argparse.Namespace) -> int:
        from app.cli import serving
        from app.core.config import get_settings
        from app.core.logging import configure_logging

        configure_logging(get_settings().log_level)
        result: int = getattr(serving, command)(args)
        return result

    return run


def register(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="run the API (and workers); migrates first")
    serve.add_argument("--host", help="bind address (default BERTH_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default BERTH_PORT or 8000)")
    serve.add_argument("--no-workers", action="store_true", help="API only; run `berth worker`s")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="API processes on one socket; the loops run once, in the supervising process",
    )
    serve.set_defaults(func=_server("cmd_serve"))

    worker = commands.add_parser("worker", help="run workers and loops only")
    worker.set_defaults(func=_server("cmd_worker"))

    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.set_defaults(func=_server("cmd_migrate"))

    token = commands.add_parser("token", help="create an API token in the database (on the server)")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser("create", help="create a token and print it once")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--name", default="cli")
    create.set_defaults(func=_server("cmd_token_create"))
