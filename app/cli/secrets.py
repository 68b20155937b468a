"""`berth secrets [create|ls|rm]`. A secret's value comes from stdin or a file, never from an
argument: arguments end up in shell history and in every process listing."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from app.cli.output import Output, age
from app.cli.parsing import Commands, UsageError, command, group
from app.cli.remote import remote
from app.client import Berth


def read_secret(prompt: str, file: str | None = None) -> str:
    """A file's content, else stdin to its end, else (on a terminal) a prompt that does not echo.
    One trailing newline is dropped, as `echo value | berth ...` adds it."""
    if file:
        try:
            return Path(file).read_text().removesuffix("\n")
        except OSError as exc:
            raise UsageError(f"--file {file}: {exc.strerror}") from exc
    value = getpass.getpass(prompt) if sys.stdin.isatty() else sys.stdin.read()
    return value.removesuffix("\n")


def create(client: Berth, out: Output, args: argparse.Namespace) -> int:
    value = read_secret(f"value of {args.name}: ", args.file)
    if not value:
        raise UsageError("the secret is empty: give it on stdin or with --file")
    secret = client.secrets.create(args.name, value)
    out.result(secret, secret.id)
    return 0


def ls(client: Berth, out: Output, args: argparse.Namespace) -> int:
    items = list(client.secrets.list())
    out.table(
        ("name", "id", "version", "used by", "updated"),
        ((s.name, s.id, s.version, ", ".join(s.used_by), age(s.updated_at)) for s in items),
        data=items,
    )
    return 0


def rm(client: Berth, out: Output, args: argparse.Namespace) -> int:
    for ref in args.secrets:
        target = client.secrets.find(ref)
        client.secrets.delete(target.id)
        out.note(f"removed {target.name}")
    return 0


def register(commands: Commands) -> None:
    secrets = group(commands, "secrets", "store secrets for services", default=remote(ls))
    parser = command(secrets, "create", "store a secret read from stdin (or --file)")
    parser.add_argument("name")
    parser.add_argument("--file", metavar="FILE", help="read the value from this file")
    parser.set_defaults(func=remote(create))
    command(secrets, "ls", "list secrets (never their values)").set_defaults(func=remote(ls))
    parser = command(secrets, "rm", "delete secrets no service uses")
    parser.add_argument("secrets", nargs="+", metavar="SECRET", help="name or id")
    parser.set_defaults(func=remote(rm))
