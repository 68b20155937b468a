"""`leases.acquire_many`: a loop's per-host leases taken and renewed in one transaction, with the
fair share and takeover of `acquire` (another process appears as its presence row and holders)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event

from app.core.db import Database, utcnow
from app.workers import leases
from app.workers.models import Lease


def _other_process(db: Database, *, alive: bool) -> None:
    at = utcnow() + timedelta(seconds=30 if alive else -30)
    with db.session() as session:
        session.merge(Lease(name="member.other", holder="other.presence", epoch=1, expires_at=at))


def _transactions(db: Database) -> list[None]:
    begun: list[None] = []
    event.listen(db.engine, "begin", lambda connection: begun.append(None))
    return begun


def test_many_leases_in_one_transaction_with_the_fair_share(db: Database) -> None:
    mine = leases.member_holder("batch")
    names = [f"test.batch.{i}" for i in range(6)]
    begun = _transactions(db)
    # Alone, a process takes them all, and renews them all, one transaction a round.
    assert leases.acquire_many(db, names, holder=mine, ttl_seconds=30) == dict.fromkeys(names, 1)
    assert leases.acquire_many(db, names, holder=mine, ttl_seconds=30) == dict.fromkeys(names, 1)
    assert len(begun) == 2

    # A second process appears: the surplus over ceil(6 / 2) is given up, from the end.
    _other_process(db, alive=True)
    kept = leases.acquire_many(db, names, holder=mine, ttl_seconds=30)
    assert sorted(kept) == names[:3]
    assert leases.acquire_many(db, names, holder="other.loop", ttl_seconds=30) == dict.fromkeys(
        names[3:], 2
    )
    # Stable: each renews what it kept and takes nothing of the other's.
    assert leases.acquire_many(db, names, holder=mine, ttl_seconds=30) == kept

    # New leases: taken up to the share, ceil(8 / 2) = 4, so one of two.
    more = [*names, "test.batch.6", "test.batch.7"]
    assert sorted(leases.acquire_many(db, more, holder=mine, ttl_seconds=30)) == [
        *names[:3],
        "test.batch.6",
    ]


def test_a_dead_process_leases_are_taken_over_in_one_round(db: Database) -> None:
    mine = leases.member_holder("batch")
    names = [f"test.batch.dead.{i}" for i in range(4)]
    _other_process(db, alive=True)
    assert len(leases.acquire_many(db, names, holder="other.loop", ttl_seconds=-1)) == 4
    # Alive but its leases lapsed: this process takes its share of them.
    assert len(leases.acquire_many(db, names, holder=mine, ttl_seconds=30)) == 2
    # Killed (its presence lapsed too): all, each with a new epoch.
    _other_process(db, alive=False)
    taken = leases.acquire_many(db, names, holder=mine, ttl_seconds=30)
    assert sorted(taken) == names and set(taken.values()) == {2}
