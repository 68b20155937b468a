"""`berth tokens create` and `berth audit verify`: what an admin does through the API."""

from __future__ import annotations

import argparse

from app.cli.output import Output
from app.cli.parsing import Commands, command, group
from app.cli.remote import EXIT_FAILED, remote
from app.client import Berth

ROLES = ("viewer", "operator", "admin")


def create_token(client: Berth, out: Output, args: argparse.Namespace) -> int:
    created = client.tokens.create(name=args.name, role=args.role)
    if out.as_json:
        out.json({**created.model_dump(mode="json", exclude={"token"}), "token": created.token})
        return 0
    # The one time a token is printed: alone on stdout, so `T=$(berth tokens create ...)` works.
    out.line(created.token)
    out.note(f"token {created.id} ({created.role}); it is not shown again")
    return 0


def verify(client: Berth, out: Output, args: argparse.Namespace) -> int:
    result = client.audit.verify()
    if out.as_json:
        out.json(result)
    elif result.ok:
        out.line(f"the audit chain holds: {result.entries} entries")
    else:
        out.error(f"the audit chain breaks at entry {result.first_bad}: {result.detail}")
    return 0 if result.ok else EXIT_FAILED


def register(commands: Commands) -> None:
    tokens = group(commands, "tokens", "API tokens (admin)")
    parser = command(tokens, "create", "create a token and print it once")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--name", default="cli")
    parser.set_defaults(func=remote(create_token))

    audit = group(commands, "audit", "the audit log (admin)")
    command(audit, "verify", "check the audit hash chain").set_defaults(func=remote(verify))
