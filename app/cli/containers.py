"""`berth ps`, `run`, `stop`, `restart`, `rm`, `logs`: containers, as the docker CLI names them."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

from app.cli.follow import follow
from app.cli.hosts import host_names
from app.cli.output import Output, age
from app.cli.parsing import Commands, add_command_line, command, command_line, key_value
from app.cli.remote import Handler, remote
from app.client import Berth
from app.client.models import ContainerAccepted
from app.client.sync import Containers

# -p [IP:][HOST:]CONTAINER[/PROTOCOL], as docker run takes it.
_PORT = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(?:(?P<host>\d+)?:)?(?P<container>\d+)"
    r"(?:/(?P<protocol>tcp|udp|sctp))?$"
)


def port(text: str) -> dict[str, Any]:
    match = _PORT.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected [IP:][HOST:]CONTAINER[/PROTOCOL], got {text!r}")
    mapping: dict[str, Any] = {"container_port": int(match["container"])}
    if match["host"]:
        mapping["host_port"] = int(match["host"])
    if match["ip"]:
        mapping["host_ip"] = match["ip"].strip("[]")
    if match["protocol"]:
        mapping["protocol"] = match["protocol"]
    return mapping


def ports_text(ports: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{p.get('host_port') or '?'}->{p['container_port']}/{p.get('protocol', 'tcp')}"
        for p in ports
    )


def ps(client: Berth, out: Output, args: argparse.Namespace) -> int:
    host_id = client.hosts.find(args.host).id if args.host else None
    hosts = host_names(client)
    items = list(client.containers.list(host_id=host_id, state=None if args.all else "running"))
    out.table(
        ("id", "name", "host", "image", "state", "ports", "created"),
        (
            (
                c.id,
                c.name,
                hosts.get(c.host_id, c.host_id),
                c.image,
                c.state + (f" ({c.health})" if c.health else ""),
                ports_text(c.ports),
                age(c.created_at),
            )
            for c in items
        ),
        data=items,
    )
    return 0


def run(client: Berth, out: Output, args: argparse.Namespace) -> int:
    fields: dict[str, Any] = {"env": dict(args.env), "ports": args.publish}
    if args.name:
        fields["name"] = args.name
    if args.host:
        fields["host_id"] = client.hosts.find(args.host).id
    if command := command_line(args):
        fields["command"] = command
    accepted = client.containers.create(args.image, **fields)
    code = follow(client, out, accepted.operation)
    created = client.containers.get(accepted.container.id)
    if code or args.detach:
        out.result(created, created.id)
        return code
    # Attached, as `docker run` without -d: its output until it stops (or Ctrl-C).
    _print_lines(client.containers.logs(created.id, follow=True))
    return 0


def _act(verb: Callable[[Containers, str], ContainerAccepted]) -> Handler:
    def act(client: Berth, out: Output, args: argparse.Namespace) -> int:
        worst = 0
        for ref in args.containers:
            target = client.containers.find(ref)
            accepted = verb(client.containers, target.id)
            code = follow(client, out, accepted.operation)
            if code == 0:
                out.result(accepted.operation, target.name)
            worst = max(worst, code)
        return worst

    return act


def _print_lines(lines: Iterator[str]) -> None:
    # Each line as it comes: a followed log is read by a person (or `grep`) while it grows.
    for line in lines:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def logs(client: Berth, out: Output, args: argparse.Namespace) -> int:
    target = client.containers.find(args.container)
    _print_lines(client.containers.logs(target.id, follow=args.follow, tail=args.tail))
    return 0


def register(commands: Commands) -> None:
    parser = command(commands, "ps", "list containers (running ones; -a for all)")
    parser.add_argument("-a", "--all", action="store_true", help="stopped ones too")
    parser.add_argument("--host", metavar="HOST", help="only on this host (name or id)")
    parser.set_defaults(func=remote(ps))

    parser = command(commands, "run", "create and start a container, then show its output")
    parser.add_argument("image")
    add_command_line(parser)
    parser.add_argument("--name")
    parser.add_argument(
        "-p",
        "--publish",
        type=port,
        action="append",
        default=[],
        metavar="[IP:]HOST:CTR",
        help="publish a port (repeatable)",
    )
    parser.add_argument("-e", "--env", type=key_value, action="append", default=[], metavar="K=V")
    parser.add_argument("--host", metavar="HOST", help="run on this host (default: scheduled)")
    parser.add_argument(
        "-d", "--detach", action="store_true", help="print its id once it runs, not its output"
    )
    parser.set_defaults(func=remote(run))

    verbs: tuple[tuple[str, Callable[[Containers, str], ContainerAccepted], str], ...] = (
        ("stop", Containers.stop, "stop containers"),
        ("restart", Containers.restart, "restart containers"),
        ("rm", Containers.remove, "remove containers (running ones are stopped first)"),
    )
    for name, verb, text in verbs:
        parser = command(commands, name, text)
        parser.add_argument("containers", nargs="+", metavar="CONTAINER", help="name or id")
        parser.set_defaults(func=remote(_act(verb)))

    parser = command(commands, "logs", "print a container's output")
    parser.add_argument("container", metavar="CONTAINER", help="name or id")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    parser.add_argument(
        "--tail", type=int, metavar="N", help="only the last N lines (default: the server's, 100)"
    )
    parser.set_defaults(func=remote(logs))
