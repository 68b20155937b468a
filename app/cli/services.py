"""`berth services [ls|create|inspect|scale|update|rollback|plan|rm]`: replicated services."""

from __future__ import annotations

import argparse
from typing import Any

from app.cli.containers import port
from app.cli.follow import follow, follow_each
from app.cli.hosts import host_names
from app.cli.output import Output, age
from app.cli.parsing import Commands, add_command_line, command, command_line, group, key_value
from app.cli.remote import remote
from app.client import Berth
from app.client.models import Service, ServiceAccepted


def _replicas(service: Service) -> str:
    counts = service.replicas
    return f"{counts.running}/{counts.desired}"


def ls(client: Berth, out: Output, args: argparse.Namespace) -> int:
    items = list(client.services.list())
    out.table(
        ("name", "id", "image", "replicas", "revision", "status", "updated"),
        (
            (
                s.name,
                s.id,
                s.spec.get("image"),
                _replicas(s),
                s.revision,
                s.status,
                age(s.updated_at),
            )
            for s in items
        ),
        data=items,
    )
    return 0


def _settled(client: Berth, out: Output, accepted: ServiceAccepted) -> int:
    """Follows the service's operation until its replicas settle; prints the service."""
    code = follow(client, out, accepted.operation)
    service = client.services.get(accepted.service.id)
    out.result(
        service, f"{service.name}: {_replicas(service)} running, revision {service.revision}"
    )
    return code


def _spec_changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.image:
        changes["image"] = args.image
    if args.replicas is not None:
        changes["replicas"] = args.replicas
    if args.env:
        changes["env"] = dict(args.env)
    if args.publish:
        changes["ports"] = args.publish
    return changes


def create(client: Berth, out: Output, args: argparse.Namespace) -> int:
    spec = {**_spec_changes(args), "image": args.image, "replicas": args.replicas or 1}
    if command := command_line(args):
        spec["command"] = command
    return _settled(client, out, client.services.create(args.name, spec))


def inspect(client: Berth, out: Output, args: argparse.Namespace) -> int:
    service = client.services.find(args.service)
    if out.as_json:
        out.json(service)
        return 0
    hosts = host_names(client)
    out.line(
        f"{service.name} ({service.id}) revision {service.revision}, {service.status}"
        + (f": {service.status_detail}" if service.status_detail else "")
    )
    out.line(f"image {service.spec.get('image')}, {_replicas(service)} replicas running")
    out.table(
        ("slot", "container", "host", "state", "health", "revision"),
        (
            (t.slot, t.container_id, hosts.get(t.host_id, t.host_id), t.state, t.health, t.revision)
            for t in service.tasks
        ),
    )
    return 0


def scale(client: Berth, out: Output, args: argparse.Namespace) -> int:
    codes = (
        _settled(client, out, client.services.scale(client.services.find(name).id, count))
        for name, count in args.scales
    )
    return max(codes, default=0)


def update(client: Berth, out: Output, args: argparse.Namespace) -> int:
    target = client.services.find(args.service)
    return _settled(client, out, client.services.patch(target.id, _spec_changes(args)))


def rollback(client: Berth, out: Output, args: argparse.Namespace) -> int:
    target = client.services.find(args.service)
    return _settled(client, out, client.services.rollback(target.id))


def plan(client: Berth, out: Output, args: argparse.Namespace) -> int:
    target = client.services.find(args.service)
    result = client.services.plan(target.id, {**target.spec, **_spec_changes(args)})
    changes = [
        (action, c.slot, c.host_name or c.host_id, c.container_id, c.reason)
        for action in ("start", "stop", "replace", "unplaceable")
        for c in getattr(result, action)
    ]
    if not out.as_json and not result.revision_change:
        out.note("the spec is unchanged: no new revision")
    out.table(("action", "slot", "host", "container", "reason"), changes, data=result)
    return 0


def rm(client: Berth, out: Output, args: argparse.Namespace) -> int:
    removals = (client.services.delete(client.services.find(ref).id) for ref in args.services)
    return follow_each(client, out, (accepted.operation for accepted in removals))


def scale_target(text: str) -> tuple[str, int]:
    """`NAME=N` of `services scale`."""
    name, count = key_value(text)
    if not count.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: the replica count is not a number")
    return name, int(count)


def _spec_options(parser: argparse.ArgumentParser, *, image: bool = True) -> None:
    if image:
        parser.add_argument("--image", metavar="REF")
    parser.add_argument("--replicas", type=int, metavar="N")
    parser.add_argument("-e", "--env", type=key_value, action="append", default=[], metavar="K=V")
    parser.add_argument(
        "-p", "--publish", type=port, action="append", default=[], metavar="[IP:]HOST:CTR"
    )


def register(commands: Commands) -> None:
    services = group(commands, "services", "run and change replicated services", default=remote(ls))
    command(services, "ls", "list services").set_defaults(func=remote(ls))

    parser = command(services, "create", "create a service and wait for its replicas")
    # As `docker service create`: the options first, then NAME IMAGE [COMMAND [ARG...]].
    _spec_options(parser, image=False)
    parser.add_argument("name")
    parser.add_argument("image", metavar="IMAGE")
    add_command_line(parser)
    parser.set_defaults(func=remote(create))

    for name, help_text, handler, spec in (
        ("inspect", "a service, its revision and its replicas", inspect, False),
        ("update", "change the spec (a new revision, rolled out)", update, True),
        ("rollback", "go back one revision", rollback, False),
        ("plan", "what a change would start, stop and replace", plan, True),
    ):
        parser = command(services, name, help_text)
        parser.add_argument("service", metavar="SERVICE", help="name or id")
        if spec:
            _spec_options(parser)
        parser.set_defaults(func=remote(handler))

    parser = command(services, "scale", "change replica counts, e.g. `scale web=3`")
    parser.add_argument("scales", nargs="+", type=scale_target, metavar="SERVICE=N")
    parser.set_defaults(func=remote(scale))

    parser = command(services, "rm", "delete services and their replicas")
    parser.add_argument("services", nargs="+", metavar="SERVICE", help="name or id")
    parser.set_defaults(func=remote(rm))
