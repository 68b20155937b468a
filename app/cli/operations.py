"""`berth ops [ls|wait ID]` and `berth events [-f]`: the work queue and the change stream."""

from __future__ import annotations

import argparse
import threading
from collections import deque
from collections.abc import Iterator
from queue import Empty, Queue

from app.cli.follow import follow
from app.cli.output import Output, age
from app.cli.parsing import Commands, command, group
from app.cli.remote import remote
from app.client import Berth
from app.client.models import Event

# `berth events` without -f ends once the server has sent nothing for this long: it has caught
# up with the events it keeps (it sends new ones at once, and a keep-alive only every 15 s).
IDLE = 1.0


def ls(client: Berth, out: Output, args: argparse.Namespace) -> int:
    # The server lists the oldest first; the newest are the last of its pages.
    items = list(deque(client.operations.list(status=args.status, page_size=500), args.limit))
    out.table(
        ("id", "kind", "status", "target", "created", "error"),
        (
            (o.id, o.kind, o.status, f"{o.target_type}/{o.target_id}", age(o.created_at), o.error)
            for o in items
        ),
        data=items,
    )
    return 0


def wait(client: Berth, out: Output, args: argparse.Namespace) -> int:
    code = follow(client, out, client.operations.get(args.operation))
    if out.as_json:
        out.json(client.operations.get(args.operation))
    return code


def until_idle(events: Iterator[Event], idle: float) -> Iterator[Event]:
    """The events until none has come for `idle` seconds. The stream is read on a daemon
    thread, which ends with the process: the client's stream has no read timeout of its own
    (asked of app.client). An error of the stream is raised here, as if read here."""
    arrived: Queue[Event | BaseException] = Queue()

    def pump() -> None:
        try:
            for event in events:
                arrived.put(event)
        except BaseException as exc:  # handed to the reader, who reports it
            arrived.put(exc)

    threading.Thread(target=pump, daemon=True, name="berth-events").start()
    while True:
        try:
            item = arrived.get(timeout=idle)
        except Empty:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def events(client: Berth, out: Output, args: argparse.Namespace) -> int:
    # Without -f: the events the server keeps, then stop once it has nothing more to send.
    since = args.since if args.since is not None else (None if args.follow else 0)
    stream = client.events.stream(since=since)
    for event in stream if args.follow else until_idle(stream, IDLE):
        if out.as_json:
            out.line(event.model_dump_json())
        else:
            out.line(f"{age(event.at)}  {event.type:<22} {event.resource_type}/{event.resource_id}")
    return 0


def register(commands: Commands) -> None:
    ops = group(commands, "ops", "list and wait for operations", default=None)
    parser = command(ops, "ls", "the newest operations")
    parser.add_argument(
        "--status", choices=("queued", "running", "succeeded", "failed", "cancelled")
    )
    parser.add_argument("-n", "--limit", type=int, default=50, help="how many (default 50)")
    parser.set_defaults(func=remote(ls))
    parser = command(ops, "wait", "follow an operation to its end (exit 1 if it failed)")
    parser.add_argument("operation", metavar="ID")
    parser.set_defaults(func=remote(wait))

    parser = command(commands, "events", "the changes the server keeps (-f: follow new ones)")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    parser.add_argument("--since", type=int, metavar="CURSOR", help="resume after this cursor")
    parser.set_defaults(func=remote(events))
