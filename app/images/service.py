"""Images: reads from the inventory, the checks every image request passes, and the
operations the requests queue (one per host)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.pagination import paginate
from app.core.config import Settings
from app.core.db import new_id
from app.core.errors import Conflict, Invalid, PolicyViolation
from app.core.lookup import get_or_404
from app.hosts import service as hosts
from app.hosts.models import Host
from app.images.build_context import InvalidContext, inspect_upload
from app.images.models import Blob, Image
from app.images.reference import (
    ImageReference,
    InvalidReference,
    dockerfile_images,
    parse_reference,
    registry_allowed,
    tag_source_names,
)
from app.images.schemas import ImageAccepted, ImagePull, ImagePush, ImageRead, ImageTag, Layer
from app.operations import queue
from app.operations.models import Operation
from app.operations.service import to_read as operation_to_read
from app.registries import service as registries


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


def _accepted(operations: list[Operation]) -> ImageAccepted:
    reads = [operation_to_read(op) for op in operations]
    return ImageAccepted(operation=reads[0], operations=reads)


def _enqueue(
    session: Session,
    *,
    kind: str,
    params: dict[str, Any],
    target_id: str | None,
    host_id: str,
    settings: Settings,
    created_by: str,
) -> Operation:
    """Every image request queues its work the same way: one operation on one host."""
    return queue.enqueue(
        session,
        kind=kind,
        params=params,
        target_type="image",
        target_id=target_id,
        host_id=host_id,
        created_by=created_by,
        max_attempts=settings.operation_max_attempts,
    )


def delete(
    session: Session, *, image_id: str, force: bool, settings: Settings, created_by: str
) -> ImageAccepted:
    """Queue the image's removal from its host; refused while containers use it, unless forced."""
    image = get(session, image_id=image_id)
    if image.containers and not force:
        raise Conflict(
            f"{image.containers} container(s) on the host use this image; "
            "remove them first, or delete with ?force=true"
        )
    operation = _enqueue(
        session,
        kind="image.delete",
        params={"docker_id": image.docker_id, "force": force},
        target_id=image.id,
        host_id=image.host_id,
        settings=settings,
        created_by=created_by,
    )
    return _accepted([operation])


def pull(
    session: Session, *, data: ImagePull, settings: Settings, created_by: str
) -> ImageAccepted:
    """Queue a pull on each host the request names; the operations name the reference."""
    reference = checked_reference(
        data.reference, settings, field="body.reference", action="pulling"
    )
    _check_registry(session, data.registry_id, reference)
    targets = target_hosts(
        session, host_id=data.host_id, host_ids=data.host_ids, all_hosts=data.all_hosts
    )
    operations = [
        _enqueue(
            session,
            kind="image.pull",
            params={"reference": str(reference), "registry_id": data.registry_id},
            target_id=str(reference),
            host_id=host.id,
            settings=settings,
            created_by=created_by,
        )
        for host in targets
    ]
    return _accepted(operations)


def _check_registry(session: Session, registry_id: str | None, reference: ImageReference) -> None:
    """A registry named for a pull or push must be the image's own (its credentials go there)."""
    if registry_id is not None:
        registries.for_image(
            session, registry_id=registry_id, host=reference.registry_host, field="body.registry_id"
        )


def push(
    session: Session, *, data: ImagePush, settings: Settings, created_by: str
) -> ImageAccepted:
    """Queue a push from the host; the operation names the reference."""
    reference = checked_reference(
        data.reference, settings, field="body.reference", action="pushing"
    )
    hosts.get(session, host_id=data.host_id)
    _check_registry(session, data.registry_id, reference)
    operation = _enqueue(
        session,
        kind="image.push",
        params={"reference": str(reference), "registry_id": data.registry_id},
        target_id=str(reference),
        host_id=data.host_id,
        settings=settings,
        created_by=created_by,
    )
    return _accepted([operation])


# An image id or the prefix of one that the engine takes as an id (docker's short ids are 12).
_IMAGE_ID_PREFIX = re.compile(r"(?:sha256:)?[a-f0-9]{12,64}")


def enforce_tag_source(
    source: str, names: Sequence[str] | None, settings: Settings, *, field: str
) -> None:
    """A tag must not give an image from a refused registry an allowed name: where the source
    came from passes the allow-list as a pull would (see tag_source_names)."""
    for reference in tag_source_names(source, names):
        enforce_registry_policy(reference, settings, field=field, action="tagging an image")


def _inventory_names(session: Session, *, host_id: str, source: str) -> list[str] | None:
    """The tags and digests of the image `source` names on the host, as last listed; None
    when the inventory does not know it (the worker checks again on the engine)."""
    named = Image.references.contains(f"\n{source}\n", autoescape=True)
    if _IMAGE_ID_PREFIX.fullmatch(source):
        named |= Image.docker_id.startswith(f"sha256:{source.removeprefix('sha256:')}")
    image = session.execute(
        select(Image).where(Image.host_id == host_id, named).limit(1)
    ).scalar_one_or_none()
    return None if image is None else [*image.repo_tags, *image.repo_digests]


def tag(session: Session, *, data: ImageTag, settings: Settings, created_by: str) -> ImageAccepted:
    """Queue a tag on the host; the operation names the new reference."""
    target = checked_reference(data.target, settings, field="body.target", action="tagging")
    hosts.get(session, host_id=data.host_id)
    if settings.registry_allow_list:
        names = _inventory_names(session, host_id=data.host_id, source=data.source)
        enforce_tag_source(data.source, names, settings, field="body.source")
    operation = _enqueue(
        session,
        kind="image.tag",
        params={"source": data.source, "target": str(target)},
        target_id=str(target),
        host_id=data.host_id,
        settings=settings,
        created_by=created_by,
    )
    return _accepted([operation])


def store_context(session: Session, data: bytes, *, stack_id: str | None = None) -> str:
    """Keep an uploaded build context until its build runs; its id is the build's `blob_id`.
    With `stack_id`, the bytes are the stack's project files, kept until it is removed."""
    blob = Blob(
        id=new_id(),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        data=data,
        stack_id=stack_id,
    )
    session.add(blob)
    return blob.id


def invalid_field(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", errors=[{"loc": field, "msg": message}])


@dataclass(frozen=True)
class CheckedBuild:
    """A build request that passed every check: the context as uploaded and its tags."""

    context: bytes
    dockerfile: str
    references: list[ImageReference]
    build_args: dict[str, str]
    target: str | None = None


def check_build(
    fileobj: BinaryIO,
    *,
    dockerfile: str,
    tags: list[str],
    build_args: dict[str, str],
    settings: Settings,
    target: str | None = None,
) -> CheckedBuild:
    """The tags, the archive and the Dockerfile's base images against Berth's rules. No
    session: reading a large archive must not hold a database transaction open."""
    references = [
        checked_reference(tag, settings, field="body.tags", action="tagging") for tag in tags
    ]
    try:
        inspected = inspect_upload(fileobj, dockerfile_path=dockerfile, settings=settings)
    except InvalidContext as exc:
        raise invalid_field("body.context", str(exc)) from exc
    try:
        used = dockerfile_images(inspected.dockerfile, build_args)
    except InvalidReference as exc:
        raise invalid_field("body.dockerfile", str(exc)) from exc
    for image in used:
        enforce_registry_policy(image, settings, field="body.dockerfile", action="building with")
    return CheckedBuild(fileobj.read(), dockerfile, references, build_args, target)


def build(
    session: Session, *, build: CheckedBuild, host_id: str, settings: Settings, created_by: str
) -> ImageAccepted:
    """Store the context and queue its build on the host; the operation names the first tag."""
    hosts.get(session, host_id=host_id)
    operation = _enqueue(
        session,
        kind="image.build",
        params={
            "blob_id": store_context(session, build.context),
            "dockerfile": build.dockerfile,
            "tags": [str(r) for r in build.references],
            "build_args": build.build_args,
            # Only when set, as a stack's builds give it (app.stacks.compose BuildSpec.options).
            **({"target": build.target} if build.target else {}),
        },
        target_id=str(build.references[0]) if build.references else None,
        host_id=host_id,
        settings=settings,
        created_by=created_by,
    )
    return _accepted([operation])
