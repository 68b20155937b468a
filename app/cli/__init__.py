"""The `berth` command. The server's own commands (serve, worker, migrate, token create) run
beside the server on its settings; the people's commands (ps, run, deploy, services, ...) talk
to a server through app.client with BERTH_URL / BERTH_TOKEN or the `berth login` file.
One module per command group; each registers its commands on the parser."""

from __future__ import annotations

import argparse
import os
import sys

from app.cli import (
    admin,
    completion,
    containers,
    hosts,
    images,
    login,
    operations,
    secrets,
    server,
    services,
    stacks,
)

# Ctrl-C leaves whatever runs on the server running; the shell's convention for SIGINT.
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="berth", description="A control plane for Docker hosts.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server.register(commands)
    for module in (login, hosts, containers, images, services, stacks, operations, secrets, admin):
        module.register(commands)
    completion.register(commands, build_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        # Only the watching stops: an operation goes on (`berth ops wait ID` picks it up again).
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `berth ps | head`: the reader has what it wanted. What is left in stdout's buffer
        # goes nowhere, so that the interpreter's final flush does not fail on it too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return result
