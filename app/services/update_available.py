"""`update_available`: a service's tag names a new digest in its registry.

Worked out when a service is read, from the revision's recorded digest and what the image
check last heard from the registry (images.tag_check), so it clears by itself once a revision
runs that digest, and nothing is written to a service when a tag moves.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.images.models import ImageTag
from app.images.tag_check import checked_tag
from app.services.models import Service, ServiceRevision
from app.services.schemas import UpdateAvailable


def find(session: Session, services: Sequence[Service]) -> dict[str, UpdateAvailable]:
    """By service id, the services whose tag names other bits than their revision runs."""
    tags = {}
    for service in services:
        reference = checked_tag(service.spec["image"])
        if reference is not None:
            tags[service.id] = reference
    if not tags:
        return {}
    # Only the tags the check knows a digest of: usually none, and then no second query. Read
    # as columns: loading rows as objects was most of the time of a page whose tags are known.
    known = {
        reference: (digest, detected_at)
        for reference, digest, detected_at in session.execute(
            select(ImageTag.reference, ImageTag.digest, ImageTag.detected_at).where(
                ImageTag.reference.in_({str(r) for r in tags.values()}),
                ImageTag.digest.is_not(None),
                ImageTag.detected_at.is_not(None),
            )
        )
    }
    if not known:
        return {}
    candidates = [s for s in services if s.id in tags and str(tags[s.id]) in known]
    recorded = dict(
        session.execute(
            select(ServiceRevision.service_id, ServiceRevision.image_digest)
            .join(
                Service,
                (Service.id == ServiceRevision.service_id)
                & (Service.revision == ServiceRevision.revision),
            )
            .where(ServiceRevision.service_id.in_([s.id for s in candidates]))
        ).all()  # rows, not the Result: its keys() would make dict() read it as a mapping
    )
    found = {}
    for service in candidates:
        reference = tags[service.id]
        digest, detected_at = known[str(reference)]
        running = recorded.get(service.id)
        # Only a registry digest (`repo@sha256:...`) compares: without one, what the replicas
        # run is whatever their hosts pulled.
        if running is not None and "@" in running and running.partition("@")[2] != digest:
            found[service.id] = UpdateAvailable(
                image=service.spec["image"],
                digest=f"{reference.name}@{digest}",
                detected_at=detected_at,
            )
    return found
