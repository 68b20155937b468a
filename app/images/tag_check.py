"""The image check: what the tags in use name in their registries now, kept in `image_tags`.

Which tags are in use, and what a new digest means for a service, is the services' business
(services.image_updates); this asks the registries and records their answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from app.core.db import Database, utcnow
from app.core.errors import NotFound
from app.images.manifests import CheckOutcome, Endpoint, ManifestClient, TagAnswer
from app.images.models import ImageTag, RegistryCheckCount
from app.images.reference import (
    LOCAL_BUILD_REGISTRY,
    ImageReference,
    InvalidReference,
    parse_reference,
)
from app.registries import service as registries
from app.security.crypto import Cipher
from app.security.roles import DEFAULT_PROJECT_ID

log = logging.getLogger("berth.images")

# Whether a write may still happen: a leased loop's fence (LeasedLoop.holds_lease).
Fence = Callable[[Session], bool]


@lru_cache(maxsize=4096)  # read for every service a page shows; a reference is immutable
def checked_tag(image: str) -> ImageReference | None:
    """The tag a registry is asked about for `image` (`busybox` is `docker.io/library/busybox:
    latest`); None for what no registry can answer: an image pinned by digest, one Berth built
    (berth.local), an image id."""
    try:
        reference = parse_reference(image)
    except InvalidReference:
        return None  # an image id, which names no tag anywhere
    if reference.digest is not None or reference.registry_host == LOCAL_BUILD_REGISTRY:
        return None
    return ImageReference(reference.registry, reference.repository, reference.tag_or_default)


def tag_key(image: str) -> str | None:
    """The `image_tags` row that holds what the registry says `image` names."""
    reference = checked_tag(image)
    return None if reference is None else str(reference)


@dataclass(frozen=True)
class Target:
    """A tag to ask about, and the stored registry a service names for it (else the one whose
    host matches, if any, gives the credentials), of the service's project: credentials serve
    only their own project's services."""

    reference: ImageReference
    registry_id: str | None = None
    project_id: str = DEFAULT_PROJECT_ID


class TagChecker:
    def __init__(self, db: Database, cipher: Cipher, client: ManifestClient) -> None:
        self.db = db
        self.cipher = cipher
        self.client = client

    def check(
        self, targets: Iterable[Target], *, fence: Fence | None = None
    ) -> dict[str, TagAnswer]:
        """Ask each distinct tag's registry once, a registry's tags one after another (its
        rate limit spaces them), and record every answer; by tag key."""
        # A tag several projects run is asked once per project, each with its own credentials.
        distinct = {(str(t.reference), t.project_id): t for t in targets}
        answers: dict[str, TagAnswer] = {}
        for (key, _), target in sorted(
            distinct.items(), key=lambda i: i[1].reference.registry_host
        ):
            answer = self._ask(key, target)
            self._record(key, target.reference.registry_host, answer, fence)
            answers[key] = answer
        return answers

    def forget_unchecked(self, *, since: datetime, fence: Fence | None = None) -> None:
        """Forget the tags not checked since `since`: after a round that checked every tag in
        use, those no service runs any more."""
        with self.db.session() as session:
            if fence is None or fence(session):
                session.execute(delete(ImageTag).where(ImageTag.checked_at < since))

    def _ask(self, key: str, target: Target) -> TagAnswer:
        host = target.reference.registry_host
        with self.db.session(write=False) as session:
            known = session.get(ImageTag, key)
            etag = known.etag if known is not None and known.digest is not None else None
            try:
                registry = registries.find(
                    session,
                    registry_id=target.registry_id,
                    host=host,
                    project_id=target.project_id,
                )
            except (registries.ForeignRegistry, NotFound) as exc:
                return TagAnswer(CheckOutcome.ERROR, error=str(exc))
            endpoint = Endpoint(
                url=registry.url if registry is not None else None,
                credentials=registries.registry_credentials(self.cipher, registry),
            )
        return self.client.digest(target.reference, endpoint, etag=etag)

    def _record(self, key: str, host: str, answer: TagAnswer, fence: Fence | None) -> None:
        now = utcnow()
        with self.db.session() as session:
            if fence is not None and not fence(session):
                return  # another process checks now; its answers are the ones kept
            database = Database.of(session)
            session.execute(
                database.insert_ignore(ImageTag).values(reference=key, registry_host=host)
            )
            session.execute(
                database.insert_ignore(RegistryCheckCount).values(
                    registry_host=host, checks=0, not_modified=0, errors=0, rate_limited=0
                )
            )
            row = session.get(ImageTag, key, with_for_update=True)
            assert row is not None
            row.checked_at = now
            row.error = answer.error
            if answer.outcome == CheckOutcome.CHANGED:
                if row.digest != answer.digest:
                    if row.digest is not None:
                        log.info(
                            "a tag in use names a new digest",
                            extra={"reference": key, "digest": answer.digest},
                        )
                    row.digest, row.detected_at = answer.digest, now
                row.etag = answer.etag
            limited = answer.outcome == CheckOutcome.RATE_LIMITED
            unchanged = answer.outcome == CheckOutcome.NOT_MODIFIED
            failed = limited or answer.outcome == CheckOutcome.ERROR
            counts = RegistryCheckCount
            session.execute(
                update(counts)
                .where(counts.registry_host == host)
                .values(
                    checks=counts.checks + 1,
                    not_modified=counts.not_modified + int(unchanged),
                    errors=counts.errors + int(failed),
                    rate_limited=counts.rate_limited + int(limited),
                )
            )
