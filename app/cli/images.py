"""`berth images [ls|pull|build|rm]`: the images the hosts hold."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.filesize import decimal

from app.cli.follow import follow, follow_each
from app.cli.hosts import host_names
from app.cli.output import Output
from app.cli.parsing import Commands, UsageError, command, group, key_value
from app.cli.remote import remote
from app.client import Berth, pack_directory
from app.client.models import Image


def ls(client: Berth, out: Output, args: argparse.Namespace) -> int:
    host_id = client.hosts.find(args.host).id if getattr(args, "host", None) else None
    hosts = host_names(client)
    items = list(client.images.list(host_id=host_id))
    out.table(
        ("reference", "host", "image id", "size", "containers"),
        (
            (
                i.reference,
                hosts.get(i.host_id, i.host_id),
                i.docker_id[7:19],
                decimal(i.size_bytes),
                i.containers,
            )
            for i in items
        ),
        data=items,
    )
    return 0


def pull(client: Berth, out: Output, args: argparse.Namespace) -> int:
    host_ids = [client.hosts.find(ref).id for ref in args.host]
    accepted = client.images.pull(args.reference, host_ids=host_ids or None, all_hosts=not host_ids)
    # One operation per host, each followed in turn.
    code = follow_each(client, out, accepted.operations)
    if out.as_json:
        out.json([client.operations.get(o.id) for o in accepted.operations])
    return code


def _build_host(client: Berth, ref: str | None) -> str:
    if ref:
        return client.hosts.find(ref).id
    hosts = list(client.hosts.list())
    if len(hosts) != 1:
        raise UsageError(f"there are {len(hosts)} hosts: say which builds with --host")
    return hosts[0].id


def build(client: Berth, out: Output, args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    accepted = client.images.build(
        pack_directory(directory),
        host_id=_build_host(client, args.host),
        tags=args.tag,
        dockerfile=args.file,
        build_args=dict(args.build_arg),
    )
    code = follow(client, out, accepted.operation)
    out.result(client.operations.get(accepted.operation.id), " ".join(args.tag))
    return code


def _image(client: Berth, ref: str, host: str | None) -> list[Image]:
    """An image id, or a reference on every host that has it (or on --host)."""
    host_id = client.hosts.find(host).id if host else None
    found = list(client.images.list(reference=ref, host_id=host_id))
    return found or [client.images.get(ref)]


def rm(client: Berth, out: Output, args: argparse.Namespace) -> int:
    removals = (
        client.images.remove(image.id, force=args.force)
        for ref in args.images
        for image in _image(client, ref, args.host)
    )
    return follow_each(client, out, (accepted.operation for accepted in removals))


def register(commands: Commands) -> None:
    images = group(commands, "images", "list, pull, build and remove images", default=remote(ls))
    parser = command(images, "ls", "list the images on the hosts")
    parser.add_argument("--host", metavar="HOST", help="only on this host (name or id)")
    parser.set_defaults(func=remote(ls))

    parser = command(images, "pull", "pull an image to every host, or to those named")
    parser.add_argument("reference", metavar="REF", help="e.g. busybox:1.36")
    parser.add_argument("--host", action="append", default=[], metavar="HOST", help="repeatable")
    parser.set_defaults(func=remote(pull))

    parser = command(images, "build", "build an image on a host from a local directory")
    parser.add_argument("directory", metavar="DIR", help="the build context")
    parser.add_argument("-t", "--tag", action="append", required=True, help="repeatable")
    parser.add_argument("-f", "--file", default="Dockerfile", help="path inside DIR")
    parser.add_argument("--build-arg", type=key_value, action="append", default=[], metavar="K=V")
    parser.add_argument("--host", metavar="HOST", help="required when there are several hosts")
    parser.set_defaults(func=remote(build))

    parser = command(images, "rm", "remove images (a reference removes it from every host)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="reference or id")
    parser.add_argument("--host", metavar="HOST", help="only from this host")
    parser.add_argument("-f", "--force", action="store_true", help="even if containers use it")
    parser.set_defaults(func=remote(rm))
