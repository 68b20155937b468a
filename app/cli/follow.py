"""Following an operation to its end: a live rich display on a terminal (layers and bytes of a
pull, replicas of a service, the step of a deploy), a plain line per change otherwise.

The figures come from the operation's `progress`, which each kind fills in its own way; the
display reads the shapes it knows and shows any other as `key=value`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.filesize import decimal
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from app.cli.output import Output
from app.client import Berth
from app.client.models import Operation


@dataclass(frozen=True)
class Figures:
    """What one reading of an operation shows: a sentence, and a bar where there is a count."""

    text: str
    done: float | None = None
    total: float | None = None
    amount: str = ""


def figures(progress: dict[str, Any] | None) -> Figures:
    data = progress or {}
    if "layers_total" in data:  # image.pull / image.push
        done, total = int(data.get("bytes_done") or 0), int(data.get("bytes_total") or 0)
        text = f"{data.get('phase', 'pull')}: {data['layers_done']}/{data['layers_total']} layers"
        amount = f"{decimal(done)} / {decimal(total)}" if total else ""
        return Figures(text, done, total or None, amount)
    if "desired" in data and "running" in data:  # a service settling
        desired, running = int(data["desired"] or 0), int(data["running"] or 0)
        detail = data.get("detail") or data.get("status") or ""
        text = f"revision {data.get('revision', '?')}: {detail}".rstrip(": ")
        return Figures(text, running, desired or None, f"{running}/{desired} replicas")
    if "replicas_left" in data:  # host.drain
        return Figures(f"{data['replicas_left']} replicas left")
    if "step" in data:  # stack.deploy / stack.remove
        return Figures(str(data["step"]))
    return Figures(" ".join(f"{key}={value}" for key, value in sorted(data.items())))


def follow(client: Berth, out: Output, operation: Operation) -> int:
    """Waits for the operation to end (the client long-polls it and reports each new state);
    0 when it succeeded, 1 when it failed or was cancelled, after saying why on stderr."""
    label = f"{operation.kind} {operation.id}"
    if out.terminal and not out.as_json:
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
        )
        with Progress(*columns, console=out.errors, transient=True) as display:
            # The kind alone: a terminal line has no room for the id, which a failure names.
            task = display.add_task(operation.kind, total=None, amount="")

            def show(current: Operation) -> None:
                shown = figures(current.progress)
                display.update(
                    task,
                    description=f"{current.kind} {current.status}: {shown.text}".rstrip(": "),
                    completed=shown.done or 0,
                    total=shown.total,
                    amount=shown.amount,
                )

            show(operation)
            final = client.operations.wait(operation, on_progress=show, check=False)
        return finished(final, out, announce=True)
    said = [""]

    def say(current: Operation) -> None:
        shown = figures(current.progress)
        line = f"{label} {current.status}: {shown.text} {shown.amount}".strip(": ")
        if line != said[0] and not out.as_json:
            out.note(line)
            said[0] = line

    say(operation)
    final = client.operations.wait(operation, on_progress=say, check=False)
    say(final)  # the end, said once, whether or not the client reported it as progress
    return finished(final, out, announce=False)


def follow_each(client: Berth, out: Output, operations: Iterable[Operation]) -> int:
    """Follows each operation in turn (a lazy iterable starts each one only when the one before
    has ended); the worst exit code is the answer."""
    return max((follow(client, out, operation) for operation in operations), default=0)


def finished(operation: Operation, out: Output, *, announce: bool) -> int:
    """`announce`: say that it succeeded (the live display vanishes; plain lines said it)."""
    if operation.status == "succeeded":
        if announce and not out.as_json:
            out.note(f"{operation.kind} {operation.id} succeeded")
        return 0
    out.error(
        f"{operation.kind} {operation.id} {operation.status}: {operation.error or 'no reason'}"
    )
    return 1
