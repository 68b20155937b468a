"""How the people's commands answer: rich tables on a terminal, the same tables unwrapped when
stdout is a pipe, JSON with `--json`; messages and errors on stderr so stdout stays data."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

# A pipe has no width: wide enough that a table's lines are never wrapped for a script to split.
_PIPE_WIDTH = 10_000


def plain(value: Any) -> Any:
    """JSON-ready data from the client's models (and lists or dicts of them)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


class Output:
    def __init__(self, *, as_json: bool = False) -> None:
        self.as_json = as_json
        self.terminal = sys.stdout.isatty()
        self.console = Console(
            width=None if self.terminal else _PIPE_WIDTH, highlight=False, soft_wrap=True
        )
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def json(self, value: Any) -> None:
        sys.stdout.write(json.dumps(plain(value), indent=2, default=str) + "\n")
        sys.stdout.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[object]],
        *,
        data: Any = None,
    ) -> None:
        """`data` is what `--json` prints (the rows' source objects); the table otherwise."""
        if self.as_json:
            self.json(data)
            return
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in columns:
            table.add_column(column.upper(), overflow="fold" if self.terminal else "ignore")
        for row in rows:
            table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
        with self.console.capture() as captured:
            self.console.print(table)
        # Without the padding rich gives the last column: no trailing blanks for `cut` or `awk`.
        sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))

    def result(self, value: Any, summary: str) -> None:
        """One object done: its JSON with `--json`, a line for people otherwise."""
        if self.as_json:
            self.json(value)
        else:
            self.line(summary)

    def line(self, text: str) -> None:
        self.console.print(Text(text))

    def note(self, text: str) -> None:
        """A message for the person, not data: stderr, so `$(berth ...)` captures only data."""
        self.errors.print(Text(text))

    def error(self, text: str) -> None:
        self.errors.print(Text(f"berth: {text}"))


def age(value: object) -> str:
    """A timestamp as the tables show it: to the second, without the zone noise."""
    text = str(value or "")
    return text.replace("T", " ")[:19]
