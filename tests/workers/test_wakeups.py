"""The wake-up bus: in the process at once, and on PostgreSQL across processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from app.core.db import Database
from app.workers import wakeups
from tests.support import stop_process, wait_for
from tests.testbed import ROOT

# NOTIFY/LISTEN is PostgreSQL's: conftest deselects these in the SQLite run.
postgres_only = pytest.mark.postgres_only


# A second Berth process, reduced to the bus: it says when it is listening and when woken.
_CHILD = """
import sys, threading
from app.core.db import Database
from app.workers import wakeups

relay = wakeups.Relay(Database(sys.argv[1]))
woken = threading.Event()
named = []
wakeups.subscribe("test.topic", woken.set)
wakeups.subscribe_keys("test.topic", named.append)
relay.start()
print("ready", flush=True)
if woken.wait(60):
    print("woken", flush=True)
    print(" ".join(sorted(named[0] or ["everything"])), flush=True)
relay.stop(5)
"""


def test_a_wake_up_reaches_the_subscribers_of_this_process() -> None:
    woken = threading.Event()
    unsubscribe = wakeups.subscribe("test.local", woken.set)
    try:
        wakeups.notify("test.local")
        assert woken.is_set()
    finally:
        unsubscribe()
    woken.clear()
    wakeups.notify("test.local")
    assert not woken.is_set()


def test_a_wake_up_names_what_changed_to_those_who_ask() -> None:
    named: list[wakeups.Keys] = []
    woken = threading.Event()
    unsubscribe_keys = wakeups.subscribe_keys("test.keys", named.append)
    unsubscribe = wakeups.subscribe("test.keys", woken.set)
    try:
        wakeups.notify("test.keys", ["a", "b", "a"])
        wakeups.notify("test.keys")
        # Nothing named, nothing changed: no one wakes.
        wakeups.notify("test.keys", [])
    finally:
        unsubscribe_keys()
        unsubscribe()
    assert named == [frozenset({"a", "b"}), None]
    assert woken.is_set()


def test_the_keys_of_a_wake_up_cross_processes_in_notices_of_bounded_size() -> None:
    keys = frozenset(f"{number:026d}" for number in range(450))
    notices = wakeups.notices("test.topic", keys)
    # PostgreSQL refuses a payload of 8,000 bytes or more.
    assert len(notices) == 3 and all(len(notice) < 7_000 for notice in notices)
    heard = [wakeups.heard(notice) for notice in notices]
    assert {topic for topic, _ in heard} == {"test.topic"}
    assert frozenset().union(*(named or () for _, named in heard)) == keys
    assert wakeups.heard(*wakeups.notices("test.topic", None)) == ("test.topic", None)


def send_until_heard(send: Callable[[], None], heard: list[str], expected: str) -> None:
    """Send again and again until `expected` is heard: a listener may still be connecting."""

    def sent_and_heard() -> bool:
        send()
        return expected in heard

    wait_for(sent_and_heard, timeout=30, interval=0.2, what=f"{expected!r} to be heard")


@contextmanager
def listening_on(database: Database) -> Iterator[list[str]]:
    """`database` listening in a thread while the block runs: the topics it hears."""
    heard: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=database.listen, args=(heard.append,), kwargs={"stop": stop})
    thread.start()
    try:
        yield heard
    finally:
        stop.set()
        thread.join(5)


@pytest.fixture
def listening(db_url: str) -> Iterator[tuple[Database, list[str]]]:
    """A second Database on the same PostgreSQL database, listening: what it hears."""
    database = Database(db_url)
    with listening_on(database) as heard:
        yield database, heard
    database.dispose()


@postgres_only
def test_notify_reaches_another_database_but_not_its_own_listener(
    db: Database, listening: tuple[Database, list[str]]
) -> None:
    other, heard = listening
    with listening_on(db) as mine:
        send_until_heard(lambda: db.notify("test.sent"), heard, "test.sent")
        # Delivered in commit order: once this is heard, the sender's own notices were too.
        send_until_heard(lambda: other.notify("test.marker"), mine, "test.marker")
    assert "test.sent" not in mine


@postgres_only
def test_a_notice_inside_a_transaction_is_delivered_at_commit(
    db: Database, listening: tuple[Database, list[str]]
) -> None:
    _, heard = listening
    send_until_heard(lambda: db.notify("test.ready"), heard, "test.ready")
    with pytest.raises(RuntimeError), db.session() as session:
        db.notify("test.rolled-back", within=session)
        raise RuntimeError("roll back")
    with db.session() as session:
        db.notify("test.committed", within=session)
    db.notify("test.after")
    wait_for(lambda: "test.after" in heard, timeout=15, what="the last notice")
    assert "test.committed" in heard and "test.rolled-back" not in heard


@postgres_only
def test_a_wake_up_reaches_the_subscribers_of_another_process(db: Database) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    output = child.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.decode().strip() for line in output))
    reader.start()
    relay = wakeups.Relay(db)
    relay.start()
    try:
        wait_for(lambda: "ready" in lines, timeout=60, what="the other process to start")
        send_until_heard(lambda: wakeups.notify("test.topic", ["a", "b"]), lines, "woken")
        wait_for(lambda: "a b" in lines, timeout=15, what="the keys to be heard")
    finally:
        relay.stop(5)
        stop_process(child, 5)
        reader.join(5)
