"""`berth deploy` and `berth stacks [ls|rm]`: Compose files as stacks.

`deploy` sends the Compose file's directory whole, as the stack's project (what its
`.dockerignore` excludes left out): the server finds in it what Compose would (build contexts,
`.env`, `env_file`s, relative bind mounts, secrets and configs with `file:`, `extends` and
`include`) and parses and checks the file itself. `deploy` reads the file only for the stack's
name; `--env-file` variables win over the project's `.env`, as the shell's do in Compose."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import httpx
import yaml
from dotenv import dotenv_values

from app.cli.follow import follow, follow_each
from app.cli.output import Output
from app.cli.parsing import Commands, UsageError, command, group
from app.cli.remote import EXIT_REFUSED, remote
from app.client import Berth, pack_directory
from app.client.errors import NotFound
from app.client.models import Stack


def _project_name(document: dict[str, Any], directory: Path, given: str | None) -> str:
    """As Compose names a project: -p, else the file's `name:`, else its directory's name."""
    raw = given or document.get("name") or directory.resolve().name
    name = re.sub(r"[^a-z0-9-]", "", str(raw).lower()).lstrip("-")[:41]
    if not name:
        raise UsageError(f"cannot make a stack name of {raw!r}: give one with -p")
    return name


def _variables(env_file: str | None) -> dict[str, str]:
    """`--env-file`'s variables; without it the server reads the project's own `.env`."""
    if env_file is None:
        return {}
    path = Path(env_file)
    if not path.is_file():
        raise UsageError(f"--env-file {env_file}: no such file")
    return {key: value or "" for key, value in dotenv_values(path).items()}


def _existing(client: Berth, name: str) -> Stack | None:
    try:
        return client.stacks.find(name)
    except NotFound:
        return None


def _takes_dry_run(client: Berth, method: str, path: str) -> bool:
    """Whether the server's OpenAPI document gives the route a `dry_run` parameter: a server
    without it would ignore the query and deploy for real."""
    try:
        document = httpx.get(f"{client.url}/openapi.json", timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return False
    route = document.get("paths", {}).get(f"/api/v1{path}", {}).get(method.lower(), {})
    return any(p.get("name") == "dry_run" for p in route.get("parameters", []))


def _dry_run(
    client: Berth, out: Output, name: str, existing: Stack | None, text: str, fields: dict[str, Any]
) -> int:
    """Shows what the deploy would do (the server's dry run), or the server's error."""
    method, template = ("POST", "/stacks") if existing is None else ("PUT", "/stacks/{stack_id}")
    if not _takes_dry_run(client, method, template):
        out.error(
            f"this server cannot do a dry run ({method} {template} has no dry_run); "
            "nothing was sent"
        )
        return EXIT_REFUSED
    if existing is None:
        plan = client.stacks.plan_create(name, text, **fields)
    else:
        plan = client.stacks.plan_update(existing.id, text, **fields)
    if not out.as_json:
        for warning in plan.warnings:
            out.note(f"warning: {warning}")
    out.table(
        ("service", "name", "action", "image", "replicas"),
        (
            (
                s.get("compose_name"),
                s.get("name"),
                s.get("action"),
                s.get("image") or ("(built)" if s.get("build") else ""),
                s.get("replicas"),
            )
            for s in plan.services
        ),
        data=plan,
    )
    return 0


def deploy(client: Berth, out: Output, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text()
        document = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: {exc}") from exc
    if not isinstance(document, dict):
        raise UsageError(f"{path}: not a Compose file (no mapping at the top)")
    directory = path.parent
    name = _project_name(document, directory, args.project_name)
    fields: dict[str, Any] = {
        "project": pack_directory(directory),
        "file": path.name,
        "variables": _variables(args.env_file),
    }
    existing = _existing(client, name)
    if args.dry_run:
        return _dry_run(client, out, name, existing, text, fields)
    if existing is None:
        accepted = client.stacks.create(name, text, **fields)
    else:
        accepted = client.stacks.update(existing.id, text, **fields)
    code = follow(client, out, accepted.operation)
    stack = client.stacks.get(accepted.stack.id)
    if out.as_json:
        out.json(stack)
    else:
        _services_table(out, stack)
    return code


def _services_table(out: Output, stack: Stack) -> None:
    out.line(f"stack {stack.name} ({stack.id}): {stack.status} {stack.status_detail or ''}".strip())
    out.table(
        ("service", "name", "id", "status"),
        ((s.compose_name, s.name, s.service_id, s.status) for s in stack.service_details),
    )


def ls(client: Berth, out: Output, args: argparse.Namespace) -> int:
    items = list(client.stacks.list())
    out.table(
        ("name", "id", "status", "services", "generation", "detail"),
        ((s.name, s.id, s.status, len(s.services), s.generation, s.status_detail) for s in items),
        data=items,
    )
    return 0


def rm(client: Berth, out: Output, args: argparse.Namespace) -> int:
    removals = (client.stacks.delete(client.stacks.find(ref).id) for ref in args.stacks)
    return follow_each(client, out, (accepted.operation for accepted in removals))


def register(commands: Commands) -> None:
    parser = command(
        commands, "deploy", "deploy (or update) a Compose file as a stack and follow it"
    )
    parser.add_argument("-f", "--file", default="compose.yaml", help="default: compose.yaml")
    parser.add_argument(
        "-p", "--project-name", metavar="NAME", help="the stack (default: the file's directory)"
    )
    parser.add_argument("--env-file", metavar="FILE", help="variables, over the project's own .env")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be done (if the server can)"
    )
    parser.set_defaults(func=remote(deploy))

    stacks = group(commands, "stacks", "list and remove stacks", default=remote(ls))
    command(stacks, "ls", "list stacks").set_defaults(func=remote(ls))
    parser = command(stacks, "rm", "remove stacks with their services, networks and volumes")
    parser.add_argument("stacks", nargs="+", metavar="STACK", help="name or id")
    parser.set_defaults(func=remote(rm))
