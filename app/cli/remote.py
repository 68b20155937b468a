"""Running a people's command against a server: the client from BERTH_URL / BERTH_TOKEN or the
login file, and every failure turned into one line on stderr and an exit code scripts can use.

    0 done · 1 the operation failed (or the server could not be reached or answered 5xx)
    2 usage (including no server configured) · 3 not found · 4 refused (401, 403, 409, 412, 422…)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pydantic import ValidationError

from app.cli.output import Output
from app.cli.parsing import UsageError
from app.client import Berth
from app.client.errors import (
    BerthError,
    ConfigurationError,
    ConnectionFailed,
    NotFound,
    OperationFailed,
    ServerError,
    Unauthorized,
    Unavailable,
)

EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_REFUSED = 1, 2, 3, 4

Handler = Callable[[Berth, Output, argparse.Namespace], int]


def exit_code(exc: BerthError) -> int:
    if isinstance(exc, ConfigurationError):
        return EXIT_USAGE
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, ConnectionFailed | ServerError | Unavailable | OperationFailed):
        return EXIT_FAILED
    if exc.status is not None and 400 <= exc.status < 500:
        return EXIT_REFUSED
    return EXIT_FAILED


def describe(exc: BerthError) -> str:
    """One line saying what is wrong, from the problem document when the server sent one."""
    if isinstance(exc, Unauthorized):
        return f"the server refused the token ({exc.detail}); check BERTH_TOKEN or `berth login`"
    fields = "; ".join(f"{e.get('loc', '')}: {e.get('msg', '')}" for e in exc.errors)
    text = exc.detail if exc.problem else exc.message
    return f"{text} ({fields})" if fields and fields not in text else text


def guarded(
    body: Callable[[Output, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """The argparse `func` of a command that talks to a server: what goes wrong is one line."""

    def run(args: argparse.Namespace) -> int:
        out = Output(as_json=getattr(args, "json", False))
        try:
            return body(out, args)
        except UsageError as exc:
            out.error(str(exc))
            return EXIT_USAGE
        except BerthError as exc:
            out.error(describe(exc))
            return exit_code(exc)
        except ValidationError as exc:
            # An answer this client cannot read: a server of another version, or not Berth.
            where = "; ".join(f"{e['loc']}: {e['msg']}" for e in exc.errors()[:1])
            out.error(f"the server's answer is not what this berth reads ({exc.title}: {where})")
            return EXIT_FAILED

    return run


def remote(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """A people's command, with the client of BERTH_URL / BERTH_TOKEN or the login file."""

    def connected(out: Output, args: argparse.Namespace) -> int:
        with Berth() as client:
            return handler(client, out, args)

    return guarded(connected)
