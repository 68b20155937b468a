"""`berth login [URL]` and `berth logout`, as the docker CLI has them: the URL and token kept in
a file only the user can read, which the client reads too. The token comes from stdin or a
prompt that does not echo, never from an argument."""

from __future__ import annotations

import argparse
import os

from app.cli.output import Output
from app.cli.parsing import Commands, UsageError
from app.cli.remote import guarded
from app.cli.secrets import read_secret
from app.client import Berth
from app.client.config import config_path, load_login, remove_login, save_login


def login(out: Output, args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("BERTH_URL") or load_login().get("url")
    if not url:
        raise UsageError("which server? `berth login URL`")
    token = read_secret("token: ").strip()
    if not token:
        raise UsageError("no token: give it on stdin or at the prompt")
    # Checked before it is stored: a typo is refused now, not on the next command.
    with Berth(url=url, token=token) as client:
        me = client.me()
    path = save_login(url.rstrip("/"), token)
    out.note(f"logged in to {url} as {me.name} ({me.role}); saved in {path}")
    return 0


def logout(out: Output, args: argparse.Namespace) -> int:
    if remove_login():
        out.note(f"logged out: removed {config_path()}")
    else:
        out.note("not logged in")
    return 0


def register(commands: Commands) -> None:
    parser = commands.add_parser(
        "login", help="store a server URL and token (read from stdin or a prompt)"
    )
    parser.add_argument("url", nargs="?", metavar="URL", help="default: BERTH_URL")
    parser.set_defaults(func=guarded(login))
    parser = commands.add_parser("logout", help="forget the stored URL and token")
    parser.set_defaults(func=guarded(logout))
