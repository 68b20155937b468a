"""`app/client/sync.py` is generated from `app/client/aio.py`, as httpcore generates its sync
half: the async client is written once, and the blocking one is the same text with the
`async`/`await` taken out. This test fails when the two drift apart; after changing aio.py,
regenerate with `.venv/bin/python -m tests.client.test_sync_is_generated`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "app" / "client"

# Whole phrases first (docstrings), then the names, then the keywords.
PHRASES = [
    (
        '"""`AsyncBerth`: the asyncio client. Edit this file, not sync.py (generated from it).\n',
        '"""`Berth`: the blocking client, generated from aio.py by\n'
        "tests/client/test_sync_is_generated.py: edit aio.py, then run that module.\n",
    ),
    (", from asyncio.", "."),
    (
        "an `async with` context manager, or await `aclose()`",
        "a `with` context manager, or call `close()`",
    ),
]
NAMES = [
    ("AsyncGenerator", "Generator"),
    ("AsyncIterator", "Iterator"),
    ("asynccontextmanager", "contextmanager"),
    ("AsyncBerth", "Berth"),
    ("httpx.AsyncClient(", "httpx.Client("),
    ("httpx.AsyncBaseTransport", "httpx.BaseTransport"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("aclose()", "close()"),
    ("def aclose(", "def close("),
    ("aiter_lines()", "iter_lines()"),
    ("aread()", "read()"),
    ("asyncio.sleep(", "time.sleep("),
    ("import asyncio\n", "import time\n"),
]
KEYWORDS = [
    ("async for ", "for "),
    ("async with ", "with "),
    ("async def ", "def "),
    ("await ", ""),
]
# A comprehension that only gathers an async iterator is list() of the sync one; a loop that
# only yields each item is `yield from`.
GATHER = re.compile(r"\[(\w+) async for \1 in (.+?)\]")
# A generator's type: the sync one also names what it returns.
GENERATOR = re.compile(r"AsyncGenerator\[(\w+), None\]")
YIELD_EACH = re.compile(r"^( +)(?:async )?for (\w+) in (.+):\n +yield \2\n", re.MULTILINE)


def unasync(text: str) -> str:
    text = GATHER.sub(r"list(\2)", text)
    text = GENERATOR.sub(r"Generator[\1, None, None]", text)
    text = YIELD_EACH.sub(r"\1yield from \3\n", text)
    for old, new in PHRASES + NAMES + KEYWORDS:
        text = text.replace(old, new)
    return text


def ruff(*args: str, source: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--stdin-filename", str(CLIENT / "sync.py"), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def generated() -> str:
    """sync.py as aio.py makes it, its imports sorted and formatted as the repository's."""
    text = unasync((CLIENT / "aio.py").read_text())
    text = ruff("check", "--select", "I", "--fix-only", "--quiet", source=text)
    return ruff("format", "--quiet", source=text)


def test_the_blocking_client_is_the_async_one_without_await() -> None:
    assert (CLIENT / "sync.py").read_text() == generated(), (
        "app/client/sync.py is out of date: run `.venv/bin/python -m "
        "tests.client.test_sync_is_generated` (it is generated from aio.py)"
    )


if __name__ == "__main__":
    (CLIENT / "sync.py").write_text(generated())
