"""`berth completion bash|zsh|...`: a completion script generated from the parser itself (shtab),
so it never falls behind the commands. `eval "$(berth completion bash)"` in ~/.bashrc."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import shtab

from app.cli.parsing import Commands


def register(commands: Commands, parser: Callable[[], argparse.ArgumentParser]) -> None:
    def complete(args: argparse.Namespace) -> int:
        print(shtab.complete(parser(), shell=args.shell))
        return 0

    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=shtab.SUPPORTED_SHELLS)
    completion.set_defaults(func=complete)
