"""New-image detection for services: the leased loop that has the registries asked about the
tags services run (images.tag_check), and the automatic update that rolls a new digest out to
a service with `auto_update`.

A service shows `update_available` from what the check recorded (services.update_available);
nothing here writes to a service except `apply_image_update`, an ordinary update.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.paths import API_PREFIX
from app.audit import service as audit
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import utcnow
from app.core.errors import BerthError
from app.images.manifests import CheckOutcome, ManifestClient
from app.images.ratelimit import shared_limiter
from app.images.tag_check import Fence, TagChecker, Target, checked_tag
from app.services import service as services
from app.services import update_available
from app.services.models import Service, ServiceRevision
from app.services.schemas import ImageCheck, ServiceAccepted
from app.workers import wakeups
from app.workers.loops import LeasedLoop

log = logging.getLogger("berth.services")

ACTOR = "system:image-check"


class ImageUpdateHold(Protocol):
    """What a protected project puts between a new digest and its automatic rollout. It sits
    above this module (app/changes), so the runtime and the app hand it in."""

    def hold_image_update(self, session: Session, *, service: Service, digest: str) -> bool:
        """True when the update waits for an approver instead (a change request holds it),
        False when it is rolled out now."""
        ...


CHECK_LEASE = "images.check"


def targets(session: Session, *, service_id: str | None = None) -> list[Target]:
    """The tags to ask about: those of the services' current revisions that recorded a
    registry digest (only those can tell a new digest from the one that runs)."""
    statement = (
        select(Service.spec, Service.project_id)
        .join(
            ServiceRevision,
            (ServiceRevision.service_id == Service.id)
            & (ServiceRevision.revision == Service.revision),
        )
        .where(~Service.removing, ServiceRevision.image_digest.like("%@%"))
    )
    if service_id is not None:
        statement = statement.where(Service.id == service_id)
    found = []
    for spec, project_id in session.execute(statement).all():
        reference = checked_tag(spec["image"])
        if reference is not None:
            found.append(Target(reference, spec.get("registry_id"), project_id))
    return found


def _same_version(_version: int) -> None:
    """An automatic update has no If-Match to check: it acts on the service as it is now."""


def apply_image_update(
    session: Session, *, service: Service, digest: str, settings: Settings
) -> ServiceAccepted:
    """Roll `digest` (`repo@sha256:...`, what the service's tag names now) out to `service`:
    a new revision of its current spec pinned to that digest, made by the same function a PUT
    uses, so its update_config and rollback apply. Audited as the system's change. The one way
    an automatic update happens: a gate on it (approvals, change windows) goes here."""
    before = service.version
    accepted = services.revise(
        session,
        service_id=service.id,
        make_spec=lambda _session, locked: services.current_spec(locked),
        check_version=_same_version,
        settings=settings,
        created_by=ACTOR,
        pin=lambda _session, _locked: digest,
    )
    audit.append(
        session,
        actor=ACTOR,
        token_id=None,
        action="auto_update_service",
        method="SYSTEM",
        path=f"{API_PREFIX}/services/{service.id}",
        resource=f"services/{service.id}",
        request_id=None,
        source=None,
        outcome=202,
        versions=(before, service.version),
    )
    return accepted


def roll_out(
    app: AppContext,
    *,
    service_ids: Sequence[str] | None = None,
    fence: Fence | None = None,
    hold: ImageUpdateHold | None = None,
) -> dict[str, ServiceAccepted]:
    """Apply the updates available to services with auto_update, each in its own transaction;
    by service id. A service in the middle of a rollout waits for the next round, and a digest
    the service ran before (an update that was rolled back) is not rolled out again by itself.
    In a protected project (`hold`), the update becomes a change request an approver answers,
    subject to the project's change windows like any other change."""
    with app.db.session(write=False) as session:
        statement = select(Service).where(~Service.removing)
        if service_ids is not None:
            statement = statement.where(Service.id.in_(service_ids))
        automatic = [s for s in session.execute(statement).scalars() if s.spec.get("auto_update")]
        due = {sid: u.digest for sid, u in update_available.find(session, automatic).items()}
    done: dict[str, ServiceAccepted] = {}
    for service_id, digest in due.items():
        try:
            with app.db.session() as session:
                if fence is not None and not fence(session):
                    break
                service = session.get(Service, service_id, with_for_update=True)
                if service is None or service.removing or service.rollout is not None:
                    continue
                ran = session.execute(
                    select(ServiceRevision.id).where(
                        ServiceRevision.service_id == service_id,
                        ServiceRevision.image_digest == digest,
                    )
                ).first()
                if ran is not None:
                    continue
                if hold is not None and hold.hold_image_update(
                    session, service=service, digest=digest
                ):
                    continue
                done[service_id] = apply_image_update(
                    session, service=service, digest=digest, settings=app.settings
                )
        except BerthError as exc:
            # The spec no longer passes (a policy tightened since, say): the service stays
            # as it is and shows update_available; the others still roll.
            log.warning(
                "a new image could not be rolled out",
                extra={"service_id": service_id, "digest": digest, "error": str(exc)},
            )
            continue
        log.info("rolling out a new image", extra={"service_id": service_id, "digest": digest})
    if done:
        wakeups.notify(wakeups.SERVICES)
    return done


@cache
def _client(requests_per_minute: float) -> ManifestClient:
    """The client of the checks asked for over the API in this process: kept, with its
    connections and tokens, for the next one."""
    return ManifestClient(shared_limiter(requests_per_minute))


def check_service(
    app: AppContext, *, service_id: str, hold: ImageUpdateHold | None = None
) -> ImageCheck:
    """Ask the registry about the service's tag now, and roll a new digest out if the service
    has auto_update (POST /services/{id}/check-image)."""
    with app.db.session(write=False) as session:
        services.get(session, service_id=service_id)  # a 404 for no such service
        found = targets(session, service_id=service_id)
    image: str | None = None
    outcome = CheckOutcome.SKIPPED
    detail: str | None = "the revision records no registry digest to compare with"
    operation = None
    if found:
        image = str(found[0].reference)
        client = _client(app.settings.registry_requests_per_minute)
        answer = TagChecker(app.db, app.cipher, client).check(found)[image]
        outcome, detail = answer.outcome, answer.error
        if answer.outcome in (CheckOutcome.CHANGED, CheckOutcome.NOT_MODIFIED):
            accepted = roll_out(app, service_ids=[service_id], hold=hold).get(service_id)
            operation = accepted.operation if accepted is not None else None
    with app.db.session(write=False) as session:
        read = services.read(session, service_id=service_id)
    return ImageCheck(
        image=image, outcome=outcome, detail=detail, operation=operation, service=read
    )


class ImageCheckLoop(LeasedLoop):
    """Every BERTH_IMAGE_CHECK_INTERVAL_SECONDS: ask the registries about the tags in use, then
    roll new digests out to the services with auto_update. One process at a time (a lease)."""

    name = "image-check"
    lease = CHECK_LEASE

    def __init__(self, app: AppContext, *, hold: ImageUpdateHold | None = None) -> None:
        super().__init__(app.db, app.settings.image_check_interval_seconds)
        self.app = app
        self.hold = hold
        # Waits for the rate limit end early when the process stops.
        self.client = ManifestClient(
            shared_limiter(app.settings.registry_requests_per_minute), sleep=self._stop.wait
        )

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        self.client.close()

    def run_leased(self) -> None:
        started = utcnow()
        with self.app.db.session(write=False) as session:
            found = targets(session)
        checker = TagChecker(self.app.db, self.app.cipher, self.client)
        checker.check(found, fence=self.holds_lease)
        checker.forget_unchecked(since=started, fence=self.holds_lease)
        roll_out(self.app, fence=self.holds_lease, hold=self.hold)
