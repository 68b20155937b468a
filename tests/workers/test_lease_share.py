"""Leases spread across processes: each process holds at most its fair share
(app/workers/leases.py); another process appears here as its presence row and its holders."""

from __future__ import annotations

from datetime import timedelta

from app.core.db import Database, utcnow
from app.workers import leases
from app.workers.models import Lease


def _other_process(db: Database, *, alive: bool) -> None:
    at = utcnow() + timedelta(seconds=30 if alive else -30)
    with db.session() as session:
        session.merge(Lease(name="member.other", holder="other.presence", epoch=1, expires_at=at))


def test_a_process_takes_its_share_and_gives_the_surplus_up(db: Database) -> None:
    mine = leases.member_holder("test")
    names = [f"test.share.{i}" for i in range(4)]
    # Alone, a process takes every lease.
    assert all(leases.acquire(db, n, holder=mine, ttl_seconds=30) == 1 for n in names)

    # A second process appears: the first keeps ceil(4 / 2) and gives the others up at renewal.
    _other_process(db, alive=True)
    kept = [n for n in names if leases.acquire(db, n, holder=mine, ttl_seconds=30) is not None]
    assert len(kept) == 2
    given_up = [n for n in names if n not in kept]
    assert all(leases.acquire(db, n, holder="other.loop", ttl_seconds=30) == 2 for n in given_up)
    # Renewing what it kept keeps it: the split is stable.
    assert all(leases.acquire(db, n, holder=mine, ttl_seconds=30) is not None for n in kept)

    # A new lease: taken while under the share (ceil(5 / 2) = 3), refused at it (ceil(6 / 2)).
    assert leases.acquire(db, "test.share.4", holder=mine, ttl_seconds=30) == 1
    assert leases.acquire(db, "test.share.5", holder=mine, ttl_seconds=30) is None
    assert leases.acquire(db, "test.share.5", holder="other.loop", ttl_seconds=30) == 1


def test_the_share_of_a_dead_process_is_taken_over(db: Database) -> None:
    mine = leases.member_holder("test")
    _other_process(db, alive=True)
    for i in range(4):
        assert leases.acquire(db, f"test.dead.{i}", holder="other.loop", ttl_seconds=-1) == 1
    # The other process is alive (its presence current) but its leases lapsed: half of them.
    taken = [leases.acquire(db, f"test.dead.{i}", holder=mine, ttl_seconds=30) for i in range(4)]
    assert sum(epoch is not None for epoch in taken) == 2
    # Its presence lapses too (killed): all of them.
    _other_process(db, alive=False)
    taken = [leases.acquire(db, f"test.dead.{i}", holder=mine, ttl_seconds=30) for i in range(4)]
    assert all(epoch is not None for epoch in taken)


def test_a_plain_holder_is_not_limited(db: Database) -> None:
    _other_process(db, alive=True)
    assert all(
        leases.acquire(db, f"test.plain.{i}", holder="plain", ttl_seconds=30) == 1 for i in range(3)
    )
