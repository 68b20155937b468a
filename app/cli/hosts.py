"""`berth hosts`: the Docker engines Berth manages."""

from __future__ import annotations

import argparse

from app.cli.output import Output, age
from app.cli.parsing import Commands, command
from app.cli.remote import remote
from app.client import Berth


def host_names(client: Berth) -> dict[str, str]:
    """Host ids to names, for the tables that show where something runs."""
    return {item.id: item.name for item in client.hosts.list()}


def hosts(client: Berth, out: Output, args: argparse.Namespace) -> int:
    items = list(client.hosts.list())
    out.table(
        ("name", "id", "status", "engine", "containers", "labels", "last seen"),
        (
            (
                h.name,
                h.id,
                h.status + (" (draining)" if h.draining else ""),
                h.engine_version,
                h.containers_running,
                ",".join(f"{k}={v}" for k, v in sorted(h.labels.items())),
                age(h.last_seen_at),
            )
            for h in items
        ),
        data=items,
    )
    return 0


def register(commands: Commands) -> None:
    command(commands, "hosts", "list the Docker hosts").set_defaults(func=remote(hosts))
