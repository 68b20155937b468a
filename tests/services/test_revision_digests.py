"""A service's image digest across its revisions (the database only: no engine is asked):
kept while the image stays, a new digest alone is a new revision, a rollback runs the
previous revision's digest, not what its tag names now, and only a new revision nobody pinned
asks its converge to resolve its image."""

from __future__ import annotations

from app.core.config import Settings
from app.core.db import Database
from app.operations.models import Operation
from app.services import service as services
from app.services.schemas import ServiceAccepted, ServiceSpec

IMAGE = "10.0.0.1:5000/team/app:1"
FIRST = "10.0.0.1:5000/team/app@sha256:" + "a" * 64
SECOND = "10.0.0.1:5000/team/app@sha256:" + "b" * 64


def _spec(**fields: object) -> ServiceSpec:
    return ServiceSpec.model_validate({"image": IMAGE, "command": ["sleep", "60"], **fields})


def test_digests_follow_the_revisions(db: Database, settings: Settings) -> None:
    with db.session() as session:
        svc = services.create(
            session,
            name="pinned",
            spec=_spec(),
            settings=settings,
            created_by="t",
            image_digest=FIRST,
        )
        session.flush()
        assert services.replica_image(_spec(), services.revision_digest(session, svc)) == FIRST

        # Another env with the same image keeps the pin.
        assert services.new_revision(
            session, service=svc, spec=_spec(env={"A": "1"}), settings=settings, created_by="t"
        )
        session.flush()
        assert (svc.revision, services.revision_digest(session, svc)) == (2, FIRST)

        # Same spec, same digest: nothing to roll. A new digest alone: a new revision.
        same = _spec(env={"A": "1"})
        assert not services.new_revision(
            session, service=svc, spec=same, settings=settings, created_by="t", image_digest=FIRST
        )
        assert services.new_revision(
            session, service=svc, spec=same, settings=settings, created_by="t", image_digest=SECOND
        )
        session.flush()
        assert (svc.revision, services.revision_digest(session, svc)) == (3, SECOND)
        service_id = svc.id

    with db.session() as session:
        services.revise(
            session,
            service_id=service_id,
            make_spec=services.previous_spec,
            pin=services.previous_digest,
            check_version=lambda _version: None,
            settings=settings,
            created_by="t",
        )
    with db.session() as session:
        svc = services.get(session, service_id=service_id)
        # The same spec as revision 3, but revision 2's digest: a rollback of the bits.
        assert (svc.revision, services.revision_digest(session, svc)) == (4, FIRST)
        changed = services.revision_diff(session, service_id=service_id, before=1, after=3)
        assert (changed.digest_before, changed.digest_after) == (FIRST, SECOND)
        assert [(f.field, f.before, f.after) for f in changed.fields] == [("env.A", None, "1")]


def test_only_an_unpinned_new_revision_asks_its_converge_to_resolve_the_image(
    db: Database, settings: Settings
) -> None:
    def resolves(accepted: ServiceAccepted) -> bool:
        with db.session(write=False) as session:
            operation = session.get(Operation, accepted.operation.id)
            assert operation is not None
            return bool(operation.params.get(services.RESOLVE_IMAGE))

    def revise(spec: ServiceSpec, **pin: services.DigestSource) -> ServiceAccepted:
        with db.session() as session:
            return services.revise(
                session,
                service_id=service_id,
                make_spec=lambda _session, _svc: spec,
                check_version=lambda _version: None,
                settings=settings,
                created_by="t",
                **pin,
            )

    with db.session() as session:
        created = services.create_and_queue(
            session, name="unpinned", spec=_spec(), settings=settings, created_by="t"
        )
    service_id = created.service.id
    assert resolves(created)
    assert resolves(revise(_spec(env={"A": "1"})))  # PUT, PATCH: a new revision
    assert not resolves(revise(_spec(env={"A": "1"}, replicas=3)))  # no new revision
    assert not resolves(revise(_spec(), pin=lambda _session, _svc: FIRST))  # a rollback
    with db.session() as session:
        scaled = services.scale(
            session,
            service_id=service_id,
            replicas=2,
            check_version=lambda _version: None,
            settings=settings,
            created_by="t",
        )
    assert not resolves(scaled)
