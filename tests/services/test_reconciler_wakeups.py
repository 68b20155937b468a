"""Which services a reconciler round passes over, and the leases it passes under: a wake-up
that names services brings a pass over those only, a sweep (every interval, or a wake-up that
names none) over all of them with their leases renewed in one transaction, and a pass whose
lease was lost writes nothing. Rows only: the passes' effect on real engines is covered by the
other tests in this folder."""

from __future__ import annotations

import time
from datetime import datetime

import pytest
from sqlalchemy import func, select, update

from app.containers.models import Container
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database
from app.hosts.models import Host
from app.runtime import ENCRYPTED_COLUMNS
from app.services.models import Service
from app.services.reconciler import ServiceReconciler, pause_before_round, reconcile
from app.services.schemas import ServiceSpec
from app.workers import leases
from app.workers.models import Lease


@pytest.fixture
def context(settings: Settings, db: Database) -> AppContext:
    # A sweep interval no test round reaches: only wake-ups decide what a round passes over.
    context = AppContext(settings.model_copy(update={"reconcile_interval_seconds": 600}), db)
    context.load_cipher(encrypted=ENCRYPTED_COLUMNS)
    return context


@pytest.fixture
def reconciler(context: AppContext) -> ServiceReconciler:
    """Not started: each test runs its rounds itself."""
    return ServiceReconciler(context)


def add_services(db: Database, count: int) -> list[str]:
    """A ready host and `count` services of one replica each (no tasks yet): their ids."""
    with db.session() as session:
        session.add(Host(name="solo", url="unix:///solo", labels={}, status="ready", cpus=2))
        services = [
            Service(
                name=f"web{number}",
                spec=ServiceSpec(image="busybox", replicas=1).model_dump(mode="json"),
                revision=1,
                replicas=1,
            )
            for number in range(count)
        ]
        session.add_all(services)
        session.flush()
        return [service.id for service in services]


def scale(db: Database, service_ids: list[str], replicas: int) -> None:
    """Change the replica count behind the reconciler's back: no wake-up."""
    with db.session() as session:
        for service_id in service_ids:
            service = session.get(Service, service_id)
            assert service is not None
            service.replicas = replicas
            service.spec = {**service.spec, "replicas": replicas}


def tasks(db: Database, service_id: str) -> int:
    with db.session(write=False) as session:
        return session.execute(
            select(func.count()).select_from(Container).where(Container.service_id == service_id)
        ).scalar_one()


def lease_expiries(db: Database) -> dict[str, datetime]:
    with db.session(write=False) as session:
        return {
            row.name: row.expires_at
            for row in session.execute(
                select(Lease.name, Lease.expires_at).where(Lease.name.startswith("service."))
            )
        }


def test_a_wake_up_naming_a_service_passes_over_that_service_only(
    reconciler: ServiceReconciler, db: Database
) -> None:
    first, second = add_services(db, 2)
    reconciler.run_once()  # the first round is a sweep
    assert (tasks(db, first), tasks(db, second)) == (1, 1)

    scale(db, [first, second], 2)
    reconciler.changed(frozenset({first}))
    reconciler.run_once()
    assert (tasks(db, first), tasks(db, second)) == (2, 1)

    # A wake-up that names no service (a service itself changed): a sweep over all of them.
    reconciler.changed(None)
    reconciler.run_once()
    assert (tasks(db, first), tasks(db, second)) == (2, 2)


def test_a_sweep_takes_every_lease_at_once_and_a_named_pass_renews_none(
    reconciler: ServiceReconciler, db: Database
) -> None:
    service_ids = add_services(db, 3)
    reconciler.run_once()
    swept = lease_expiries(db)
    assert swept.keys() == {f"service.{service_id}" for service_id in service_ids}
    # One statement renewed them all: one expiry.
    assert len(set(swept.values())) == 1

    scale(db, service_ids[:1], 2)
    reconciler.changed(frozenset(service_ids[:1]))
    reconciler.run_once()
    assert tasks(db, service_ids[0]) == 2
    assert lease_expiries(db) == swept


def test_a_pass_under_a_lease_lost_meanwhile_writes_nothing(
    reconciler: ServiceReconciler, context: AppContext, db: Database
) -> None:
    (service_id,) = add_services(db, 1)
    name = f"service.{service_id}"
    epoch = leases.acquire(db, name, holder=reconciler.holder, ttl_seconds=30)
    assert epoch is not None
    # The holder stalls; another process takes the lease over (a new epoch).
    with db.session() as session:
        session.execute(
            update(Lease).where(Lease.name == name).values(holder="other", epoch=epoch + 1)
        )
    reconcile(context, service_id, lease=leases.Fence(name, reconciler.holder, epoch))
    assert tasks(db, service_id) == 0

    # The holder of the current epoch writes.
    reconcile(context, service_id, lease=leases.Fence(name, "other", epoch + 1))
    assert tasks(db, service_id) == 1


def test_a_service_held_elsewhere_is_left_to_its_holder(
    reconciler: ServiceReconciler, db: Database
) -> None:
    first, second = add_services(db, 2)
    assert leases.acquire(db, f"service.{second}", holder="other", ttl_seconds=60) is not None
    reconciler.run_once()
    assert (tasks(db, first), tasks(db, second)) == (1, 0)
    reconciler.changed(frozenset({second}))
    reconciler.run_once()
    assert tasks(db, second) == 0


def test_leases_half_their_life_old_are_renewed_all_at_once_before_a_pass(
    reconciler: ServiceReconciler, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    service_ids = add_services(db, 2)
    reconciler.run_once()
    swept = lease_expiries(db)
    # Later than half the leases' life: a round that ran long, or a named pass after a gap.
    later = time.monotonic() + reconciler.ttl / 2 + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    reconciler.changed(frozenset(service_ids[:1]))
    reconciler.run_once()
    renewed = lease_expiries(db)
    assert renewed.keys() == swept.keys()
    assert all(renewed[name] > swept[name] for name in swept)
    assert len(set(renewed.values())) == 1


def test_rounds_over_large_services_pause_in_proportion() -> None:
    """A round over a large service (every task view read and decided) pauses four times its
    length before the next one gathers wake-ups, so the passes leave the interpreter to the
    creates they wait for; small rounds keep the 0.1 s gathering, and no change waits more than
    a second."""
    assert pause_before_round(0.0) == pytest.approx(0.1)
    assert pause_before_round(0.01) == pytest.approx(0.1)
    assert pause_before_round(0.05) == pytest.approx(0.2)
    assert pause_before_round(0.2) == pytest.approx(0.8)
    assert pause_before_round(30.0) == pytest.approx(1.0)
