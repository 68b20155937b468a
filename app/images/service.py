"""Images: reads from the inventory, and the checks every image request passes before it queues."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.pagination import paginate
from app.core.config import Settings
from app.core.errors import Invalid, PolicyViolation
from app.core.lookup import get_or_404
from app.hosts.models import Host
from app.images.models import Image
from app.images.reference import ImageReference, InvalidReference, parse_reference, registry_allowed
from app.images.schemas import ImageRead, Layer


def to_read(image: Image) -> ImageRead:
    reference = (image.repo_tags or image.repo_digests or [image.docker_id])[0]
    return ImageRead(
        id=image.id,
        host_id=image.host_id,
        reference=reference,
        docker_id=image.docker_id,
        repo_tags=image.repo_tags,
        repo_digests=image.repo_digests,
        size_bytes=image.size_bytes,
        layers=[Layer.model_validate(layer) for layer in image.layers],
        containers=image.containers,
        created_at=image.image_created_at,
        observed_at=image.observed_at,
        version=image.version,
    )


def get(session: Session, *, image_id: str) -> Image:
    return get_or_404(session, Image, image_id, what="image")


def get_all(
    session: Session,
    *,
    limit: int,
    cursor: str | None,
    host_id: str | None = None,
    reference: str | None = None,
) -> tuple[Sequence[Image], str | None]:
    statement = select(Image)
    if host_id is not None:
        statement = statement.where(Image.host_id == host_id)
    if reference is not None:
        statement = statement.where(Image.references.contains(f"\n{reference}\n", autoescape=True))
    return paginate(session, statement, Image.id, limit=limit, cursor=cursor)


def checked_reference(text: str, settings: Settings, *, field: str, action: str) -> ImageReference:
    """Parse a reference and apply the registry allow-list; each failure is a 422 naming why."""
    try:
        reference = parse_reference(text)
    except InvalidReference as exc:
        raise Invalid(f"{field}: {exc}", errors=[{"loc": field, "msg": str(exc)}]) from exc
    enforce_registry_policy(reference, settings, field=field, action=action)
    return reference


def enforce_registry_policy(
    reference: ImageReference, settings: Settings, *, field: str, action: str
) -> None:
    allowed = settings.registry_allow_list
    if not registry_allowed(reference, allowed):
        rule = f"registry allow-list (BERTH_ALLOWED_REGISTRIES={','.join(allowed)})"
        message = f"{action} from registry {reference.registry_host!r} is refused by the {rule}"
        raise PolicyViolation(message, errors=[{"loc": field, "msg": message}])


def target_hosts(
    session: Session, *, host_id: str | None, host_ids: list[str] | None, all_hosts: bool
) -> list[Host]:
    """The hosts a request names; every one must exist (and, for all_hosts, be ready)."""
    if all_hosts:
        hosts = list(session.execute(select(Host).where(Host.status == "ready")).scalars())
        if not hosts:
            raise Invalid(
                "all_hosts: no host is ready",
                errors=[{"loc": "body.all_hosts", "msg": "no ready host"}],
            )
        return hosts
    wanted = [host_id] if host_id is not None else list(dict.fromkeys(host_ids or []))
    found = {h.id: h for h in session.execute(select(Host).where(Host.id.in_(wanted))).scalars()}
    missing = [h for h in wanted if h not in found]
    if missing:
        field = "body.host_id" if host_id is not None else "body.host_ids"
        raise Invalid(
            f"no such host: {', '.join(missing)}",
            errors=[{"loc": field, "msg": f"no host {m}"} for m in missing],
        )
    return [found[h] for h in wanted]
