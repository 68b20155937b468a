"""auto_update in a protected project: a new digest is a change request by the image check,
submitted once, applied only once another principal approves it (issue 14, item 5: "subject
to approvals and windows"). The registry's answer is seeded as the check records it; the
check itself is tested in tests/images."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update

from app.changes.gate import ChangeHold
from app.changes.models import ChangeRequest, ChangeState
from app.changes.service import Author, approve
from app.core.config import Settings
from app.core.context import AppContext
from app.core.db import Database, utcnow
from app.images.models import ImageTag
from app.images.tag_check import checked_tag
from app.projects.models import Project
from app.runtime import prepare
from app.security.roles import DEFAULT_PROJECT_ID
from app.services import service as services
from app.services.image_updates import ACTOR, roll_out
from app.services.models import Service
from app.services.schemas import ServiceSpec

REGISTRY = "registry.example:5000"
IMAGE = f"{REGISTRY}/team/app:1"
OLD = f"{REGISTRY}/team/app@sha256:" + "0" * 64
NEW = "sha256:" + "2" * 64


def test_auto_update_in_a_protected_project_waits_for_an_approver(
    settings_factory: Callable[..., Settings], db: Database
) -> None:
    context = AppContext(settings_factory(), db)
    prepare(context)
    with db.session() as session:
        session.execute(
            update(Project).where(Project.id == DEFAULT_PROJECT_ID).values(protected=True)
        )
        service_id = services.create(
            session,
            name="auto",
            spec=ServiceSpec(image=IMAGE, auto_update=True),
            settings=context.settings,
            created_by="test",
            image_digest=OLD,
        ).id
        session.add(
            ImageTag(
                reference=str(checked_tag(IMAGE)),
                registry_host=REGISTRY,
                digest=NEW,
                detected_at=utcnow(),
                checked_at=utcnow(),
            )
        )
    hold = ChangeHold(context)
    # Two rounds of the check: nothing rolls, and one request waits.
    assert roll_out(context, hold=hold) == {}
    assert roll_out(context, hold=hold) == {}
    with db.session(write=False) as session:
        [change] = session.execute(select(ChangeRequest)).scalars().all()
        assert (change.kind, change.state, change.author) == (
            "service.image_update",
            ChangeState.PENDING,
            ACTOR,
        )
        assert change.payload == {"digest": f"{REGISTRY}/team/app@{NEW}"}
        assert change.plan["image_digest"] == {"before": OLD, "after": change.payload["digest"]}
        service = session.get_one(Service, service_id)
        assert service.revision == 1
    with db.session() as session:
        change = session.get_one(ChangeRequest, change.id)
        approve(
            session,
            change=change,
            approver=Author("an-approver-token-id", "approver"),
            break_glass=None,
            settings=context.settings,
            cipher=context.cipher,
        )
    with db.session(write=False) as session:
        service = session.get_one(Service, service_id)
        assert service.revision == 2
        assert services.revision_digest(session, service) == f"{REGISTRY}/team/app@{NEW}"
        assert session.get_one(ChangeRequest, change.id).state == ChangeState.APPLIED
    # Applied: the service runs the new digest, so the check has nothing more to ask for.
    assert roll_out(context, hold=hold) == {}
    with db.session(write=False) as session:
        assert len(session.execute(select(ChangeRequest.id)).all()) == 1
