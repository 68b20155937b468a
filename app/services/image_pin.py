"""A service revision made by the API (POST, PUT, PATCH /services) records the digest its image
named when it was deployed, as a stack deploy's does: resolved once, by the revision's own
`service.converge`, on a host its replicas may be placed on."""

from __future__ import annotations

from sqlalchemy import select, update

from app.containers.scheduler import Placer
from app.core.errors import BerthError
from app.engine.errors import EngineError
from app.images.handlers import resolve_digest
from app.images.reference import LOCAL_BUILD_REGISTRY, parse_reference
from app.operations.context import OperationContext, PermanentError, TransientError
from app.services.models import Service, ServiceRevision
from app.services.schemas import ServiceSpec
from app.services.service import RESOLVE_IMAGE, container_spec


def pin_image(ctx: OperationContext, *, revision: int) -> None:
    """Record the digest of the target service's `revision`'s image, if its converge was asked
    to resolve it and it has none yet. Only on the operation's first pass: a pull is not
    repeated every round, and a failure leaves the revision running by its tag (the next
    revision tries again), as a stack deploy does. An image Berth built keeps its tag (it names
    its content), and one pinned by digest is pinned already."""
    service_id = ctx.claim.target_id
    if not ctx.params.get(RESOLVE_IMAGE) or ctx.claim.resumed or service_id is None:
        return
    with ctx.app.db.session(write=False) as session:
        found = session.execute(
            select(ServiceRevision.spec, Service.project_id)
            .join(Service, Service.id == ServiceRevision.service_id)
            .where(
                ServiceRevision.service_id == service_id,
                ServiceRevision.revision == revision,
                ServiceRevision.image_digest.is_(None),
            )
        ).first()
        if found is None:
            return
        raw, project_id = found
        spec = ServiceSpec.model_validate(raw)
        reference = parse_reference(spec.image)
        if reference.digest is not None or reference.registry_host == LOCAL_BUILD_REGISTRY:
            return
        replica = container_spec(spec)
        # Where a replica would go now: likely the host that pulls the image anyway.
        host = (
            Placer(session)
            .place(
                replica,
                spec.placement.constraints,
                max_per_host=spec.placement.max_per_host,
                project_id=project_id,
            )
            .host
        )
        host_id, host_name = (host.id, host.name) if host is not None else (None, None)
    if host_id is None:
        ctx.log(f"{spec.image} not resolved: no host to resolve it on; runs by tag", "warning")
        return
    try:
        digest = resolve_digest(
            ctx,
            ctx.engine(host_id),
            spec.image,
            spec.registry_id,
            pull_policy=spec.pull_policy or "missing",
            platform=spec.platform,
        )
    except (BerthError, EngineError, PermanentError, TransientError) as exc:
        # The replicas pull the tag, as before digests, and say why if they cannot run (the
        # host went away since it was chosen, the registry refused, the engine did not answer).
        ctx.log(f"{spec.image} not resolved on {host_name} ({exc}); runs by tag", "warning")
        return
    if digest is None or "@" not in digest:
        ctx.log(f"{spec.image} has no registry digest on {host_name} (never pulled); runs by tag")
        return
    with ctx.session() as session:
        session.execute(
            update(ServiceRevision)
            .where(
                ServiceRevision.service_id == service_id,
                ServiceRevision.revision == revision,
                ServiceRevision.image_digest.is_(None),
            )
            .values(image_digest=digest)
        )
    ctx.log(f"{spec.image}: {digest} (resolved on {host_name})")
