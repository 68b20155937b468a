"""Named leases and the loop base that holds one: one holder at a time, fenced, given back."""

from __future__ import annotations

from sqlalchemy import select

from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database
from app.runtime import Housekeeping
from app.workers import leases
from app.workers.loops import LeasedLoop
from app.workers.models import Lease


class Counting(LeasedLoop):
    name = "counting"
    lease = "test.counting"

    def __init__(self, db: Database) -> None:
        super().__init__(db, interval=60)
        self.rounds = 0

    def run_leased(self) -> None:
        self.rounds += 1


def test_one_loop_at_a_time_holds_the_lease_and_stop_hands_it_over(db: Database) -> None:
    first, second = Counting(db), Counting(db)
    first.run_once()
    second.run_once()
    assert (first.rounds, second.rounds) == (1, 0)
    assert first.epoch == 1 and second.epoch is None
    with db.session() as session:
        assert first.holds_lease(session) and not second.holds_lease(session)

    first.stop(1)  # never started: stop only gives the lease back
    with db.session() as session:
        assert not first.holds_lease(session)
    second.run_once()
    assert second.rounds == 1 and second.epoch == 2
    with db.session() as session:
        assert second.holds_lease(session)


def test_a_stalled_holder_is_fenced_once_another_took_over(db: Database) -> None:
    # Holder "a" stalls past its lease (here: a lease that ended as it was taken).
    assert leases.acquire(db, "test.fenced", holder="a", ttl_seconds=-1) == 1
    assert leases.acquire(db, "test.fenced", holder="b", ttl_seconds=30) == 2
    with db.session() as session:
        assert not leases.held(session, "test.fenced", holder="a", epoch=1)
        assert leases.held(session, "test.fenced", holder="b", epoch=2)


def test_release_all_gives_back_every_lease_of_a_holder(db: Database) -> None:
    for name in ("test.one", "test.two"):
        assert leases.acquire(db, name, holder="reconciler", ttl_seconds=30) == 1
    assert leases.acquire(db, "test.one", holder="other", ttl_seconds=30) is None
    leases.release_all(db, holder="reconciler")
    for name in ("test.one", "test.two"):
        assert leases.acquire(db, name, holder="other", ttl_seconds=30) == 2


def test_housekeeping_forgets_leases_whose_holder_is_gone(settings: Settings, db: Database) -> None:
    assert leases.acquire(db, "test.gone", holder="killed", ttl_seconds=-2 * 3600) == 1
    assert leases.acquire(db, "test.lapsed", holder="slow", ttl_seconds=-60) == 1
    assert leases.acquire(db, "test.held", holder="alive", ttl_seconds=30) == 1
    Housekeeping(AppContext(settings, db)).run_once()
    with db.session(write=False) as session:
        names = set(session.execute(select(Lease.name)).scalars())
    assert names == {"test.lapsed", "test.held"}
