"""What every command module shares to declare its commands: the subcommand type, a leaf
command with `--json`, and the usage errors a command finds after argparse (exit code 2)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """Input argparse cannot check (a malformed `-p`, a secret given nowhere): exit code 2."""


def command(commands: Commands, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that talks to a server: it answers in tables, or in JSON with `--json`."""
    parser = commands.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    return parser


def group(
    commands: Commands,
    name: str,
    help_text: str,
    *,
    default: Callable[[argparse.Namespace], int] | None = None,
) -> Commands:
    """A command with subcommands (`berth images pull`); `default` runs when none is given
    (`berth images` lists them), and takes `--json` like a leaf."""
    parser = commands.add_parser(name, help=help_text, description=help_text)
    if default is not None:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        parser.set_defaults(func=default)
    return parser.add_subparsers(
        dest=f"{name}_command", required=default is None, metavar="COMMAND"
    )


def key_value(text: str) -> tuple[str, str]:
    """`K=V` of `-e` and `scale NAME=N`."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_command_line(parser: argparse.ArgumentParser) -> None:
    """`COMMAND ARGS...` after the last positional, as docker run takes it: everything after
    it is the command's (so the options come first); a `--` before it is allowed."""
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="and its args")


def command_line(args: argparse.Namespace) -> list[str] | None:
    """The command given after the options (argparse keeps the `--` that ended them)."""
    given: list[str] = args.cmd
    return (given[1:] if given[:1] == ["--"] else given) or None
