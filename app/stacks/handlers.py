"""`stack.deploy` and `stack.remove`: each pass looks at where the stack is and takes the next
step, then waits (Deferred, holding no worker) — builds first, then every service once the
services it depends on are started (or healthy), then until all of them run. A pass repeated
after a crash finds its earlier steps done: services are found by name, specs compared."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.containers.models import Container
from app.core.db import utcnow
from app.engine.errors import EngineError, ObjectNotFound
from app.images.handlers import resolve_digest
from app.images.reference import LOCAL_BUILD_REGISTRY
from app.operations.context import Deferred, OperationContext, PermanentError, TransientError
from app.operations.models import CANCELLED, FAILED, SUCCEEDED, Operation
from app.operations.registry import handler
from app.services import service as services
from app.services.deadline import Mark, allowance
from app.services.decide import completed, slots_from_json
from app.services.models import RolloutPhase, Service, ServiceStatus
from app.services.schemas import ServiceSpec
from app.stacks.models import Stack, StackRelease
from app.stacks.releases import digests
from app.stacks.service import members
from app.workers import wakeups

# A deploy waits on builds and health checks that take a second or so: look often, as a user
# watching it would (each look is two short transactions, and only while a deploy is waiting).
_LOOK_AGAIN_SECONDS = 0.1
ACTOR = "stack"


def _stack(ctx: OperationContext, session: Session) -> Stack:
    stack = session.get(Stack, ctx.claim.target_id, with_for_update=True)
    if stack is None:
        raise PermanentError("the stack was deleted")
    return stack


def _fail(ctx: OperationContext, message: str) -> PermanentError:
    with ctx.session() as session:
        stack = _stack(ctx, session)
        if stack.generation == int(ctx.params["generation"]) and not stack.removing:
            _set_detail(stack, "failed", message)
    return PermanentError(message)


def _builds_done(ctx: OperationContext, plan: dict[str, Any]) -> str | None:
    """None when every build succeeded; else what is still building. Raises on a failure."""
    waiting, failed = [], []
    with ctx.app.db.session(write=False) as session:
        for item in plan["services"]:
            build = item.get("build")
            if not build or "operation_id" not in build:
                continue  # none, or the image an earlier generation built
            operation = session.get(Operation, build["operation_id"])
            if operation is None or operation.status in (FAILED, CANCELLED):
                reason = operation.error if operation is not None else "its operation is gone"
                failed.append(f"building {item['compose_name']} failed: {reason}")
            elif operation.status != SUCCEEDED:
                waiting.append(item["compose_name"])
    if failed:
        raise _fail(ctx, "; ".join(failed))
    return f"building {', '.join(waiting)}" if waiting else None


def _ready(session: Session, service: Service | None, condition: str) -> bool:
    """Compose's conditions: started = a replica runs; healthy = every replica is ready;
    completed_successfully = every replica of its revision ran and exited 0."""
    if service is None:
        return False
    done = completed(
        slots_from_json(service.slots), revision=service.revision, replicas=service.replicas
    )
    if condition == "service_completed_successfully":
        return done
    if condition == "service_healthy":
        return service.status == ServiceStatus.RUNNING and service.rollout is None
    started = session.execute(
        select(Container.id)
        .where(Container.service_id == service.id, Container.state == "running")
        .limit(1)
    ).first()
    # A one-shot service that already completed has no replica left to run: it has started.
    return started is not None or service.replicas == 0 or done


@handler("stack.deploy")
def deploy(ctx: OperationContext) -> dict[str, Any]:
    generation = int(ctx.params["generation"])
    with ctx.app.db.session(write=False) as session:
        stack = session.get(Stack, ctx.claim.target_id)
        if stack is None or stack.removing:
            raise PermanentError("the stack is being removed")
        if stack.generation != generation:
            raise PermanentError(f"superseded by generation {stack.generation} of the stack")
        plan = stack.plan
    building = _builds_done(ctx, plan)
    if building:
        ctx.progress({"step": building})
        raise Deferred(_LOOK_AGAIN_SECONDS)
    if any("digest" not in item for item in plan["services"]):
        plan = _record_digests(ctx, generation, plan)

    waiting: list[str] = []
    done: list[str] = []  # logged once the transaction is over (a log line is its own write)
    changed = False
    with ctx.session() as session:
        stack = _stack(ctx, session)
        if stack.generation != generation or stack.removing:
            raise PermanentError(f"superseded by generation {stack.generation} of the stack")
        existing = {s.name: s for s in members(session, stack.id, for_update=True)}
        by_compose = {item["compose_name"]: existing.get(item["name"]) for item in plan["services"]}
        for item in plan["services"]:
            unmet = [
                f"{dep} ({condition.removeprefix('service_')})"
                for dep, condition in item["depends_on"].items()
                if not _ready(session, by_compose.get(dep), condition)
            ]
            if unmet:
                waiting.append(f"{item['compose_name']} waits for {', '.join(unmet)}")
                continue
            service = existing.get(item["name"])
            spec = ServiceSpec.model_validate(item["spec"])
            digest = item.get("digest")
            if service is None:
                service = services.create(
                    session,
                    name=item["name"],
                    spec=spec,
                    settings=ctx.app.settings,
                    created_by=ACTOR,
                    stack_id=stack.id,
                    image_digest=digest,
                    project_id=stack.project_id,
                )
                done.append(f"created service {item['name']}")
                by_compose[item["compose_name"]] = service
                changed = True
            elif service.removing:
                waiting.append(f"{item['name']} is still being removed")
            elif spec != services.current_spec(service) or (
                digest is not None
                and services.replica_image(spec, digest)
                != services.replica_image(spec, services.revision_digest(session, service))
            ):
                rolled = services.new_revision(
                    session,
                    service=service,
                    spec=spec,
                    settings=ctx.app.settings,
                    created_by=ACTOR,
                    image_digest=digest,
                )
                done.append(
                    f"service {item['name']}: "
                    + (f"revision {service.revision}" if rolled else f"{spec.replicas} replicas")
                )
                changed = True
        planned = {item["name"] for item in plan["services"]}
        for name, service in existing.items():
            if name not in planned and not service.removing:
                service.removing, service.status = True, ServiceStatus.REMOVING
                service.version += 1
                done.append(f"removing service {name} (no longer in the Compose file)")
                changed = True
        unsettled = [
            f"{s.name}: {s.status}" + (f" ({s.status_detail})" if s.status_detail else "")
            for s in by_compose.values()
            if s is not None and (s.status != ServiceStatus.RUNNING or s.rollout is not None)
        ]
        broken = [
            s
            for s in by_compose.values()
            if s is not None
            and (
                s.status == ServiceStatus.PAUSED
                or (s.rollout or {}).get("phase") == RolloutPhase.ROLLING_BACK
            )
        ]
        leftover = [s.name for s in existing.values() if s.name not in planned]
        step = "; ".join([*waiting, *unsettled]) or "converging"
        if not (waiting or unsettled or leftover or changed):
            _set_detail(stack, "running", None)
        elif not broken:
            # What the deploy waits for, on the stack itself: a service's last replica error.
            _set_detail(stack, "deploying", step)
        members_now = [s for s in by_compose.values() if s is not None]
        # Services created so far and replicas ready: what counts as getting closer.
        ready = len(members_now) + sum(
            r.replicas.healthy for r in services.to_reads(session, members_now)
        )
    if done:
        ctx.log_lines([("info", line) for line in done])
    if changed:
        wakeups.notify(wakeups.SERVICES)
    if broken:
        raise _fail(ctx, "; ".join(f"{s.name}: {s.status_detail or s.status}" for s in broken))
    if waiting or unsettled or leftover or changed:
        now = utcnow()
        mark = Mark.carried(ctx.claim.progress, ready, now)
        specs = [ServiceSpec.model_validate(item["spec"]) for item in plan["services"]]
        deadline = ctx.app.settings.converge_deadline_seconds
        if mark.overdue(now, allowance(deadline, specs)):
            raise _fail(ctx, f"no further replica became ready in {deadline:g} s: {step}")
        ctx.progress({"step": step, **mark.to_json()})
        raise Deferred(_LOOK_AGAIN_SECONDS)
    return {"generation": generation, "services": sorted(planned)}


def _record_digests(ctx: OperationContext, generation: int, plan: dict[str, Any]) -> dict[str, Any]:
    """Resolve each service's image on the stack's host, once per generation, and keep the
    digests in the plan (a later pass, or a retry, uses them as they are) and in the release.
    A rollback's plan has them already: its tags are not resolved again."""
    resolved: dict[str, str | None] = {}
    unresolved: list[str] = []
    for item in plan["services"]:
        if "digest" in item:
            continue
        spec = item["spec"]
        try:
            resolved[item["name"]] = resolve_digest(
                ctx,
                ctx.engine(),
                spec["image"],
                spec.get("registry_id"),
                pull_policy=spec.get("pull_policy") or "missing",
                platform=spec.get("platform"),
            )
        except (EngineError, PermanentError, TransientError) as exc:
            # The deploy goes on as it did before digests: the replicas pull the tag, and say
            # why they cannot run if they cannot (the host is down, the image is not there).
            resolved[item["name"]] = None
            unresolved.append(f"{item['name']}: {spec['image']} not resolved ({exc})")
    with ctx.session() as session:
        stack = _stack(ctx, session)
        if stack.generation != generation or stack.removing:
            raise PermanentError(f"superseded by generation {stack.generation} of the stack")
        plan = {
            **stack.plan,
            "services": [
                {**item, "digest": resolved[item["name"]]} if item["name"] in resolved else item
                for item in stack.plan["services"]
            ],
        }
        stack.plan = plan
        release = session.execute(
            select(StackRelease).where(
                StackRelease.stack_id == stack.id, StackRelease.release == generation
            )
        ).scalar_one_or_none()
        if release is not None:
            release.plan = plan
            release.digests = digests(plan)
    ctx.log_lines(
        [("info", f"{name}: {digest}") for name, digest in resolved.items() if digest]
        + [("warning", line) for line in unresolved]
    )
    return plan


def _set_detail(stack: Stack, status: str, detail: str | None) -> None:
    if (stack.status, stack.status_detail) != (status, detail):
        stack.status, stack.status_detail = status, detail
        stack.updated_at = utcnow()
        stack.version += 1


@handler("stack.remove")
def remove(ctx: OperationContext) -> dict[str, Any]:
    with ctx.app.db.session(write=False) as session:
        stack = session.get(Stack, ctx.claim.target_id)
        if stack is None:
            return {"removed": True}
        remaining = [s.name for s in members(session, stack.id)]
        plan, name = stack.plan, stack.name
    if remaining:
        ctx.progress({"step": f"removing services {', '.join(remaining)}"})
        raise Deferred(_LOOK_AGAIN_SECONDS)
    engine = ctx.engine()
    removed: list[str] = []
    try:
        for network in plan.get("networks", []):
            if engine.remove_network(network):
                removed.append(f"network {network}")
        # The project files' volumes are the stack's own copies: always removed, every
        # generation's (kept until now so that a rollback could mount them).
        for volume in plan.get("content_volumes", []):
            if engine.remove_volume(volume):
                removed.append(f"volume {volume}")
        if ctx.params.get("volumes"):
            for volume in plan.get("volumes", []):
                if engine.remove_volume(volume):
                    removed.append(f"volume {volume}")
        # Every image built for the stack, earlier generations' too (kept until now so that
        # a rollback could use them).
        prefix = f"{LOCAL_BUILD_REGISTRY}/{name}/"
        for image in engine.list_images():
            for tag in image.get("RepoTags") or []:
                if tag.startswith(prefix):
                    with contextlib.suppress(ObjectNotFound):
                        engine.remove_image(tag, force=False)
                    removed.append(f"image {tag}")
    except EngineError as exc:
        if exc.transient:
            raise
        raise TransientError(str(exc)) from exc
    for line in removed:
        ctx.log(f"removed {line}")
    with ctx.session() as session:
        stack = session.get(Stack, ctx.claim.target_id)
        if stack is not None:
            session.delete(stack)
    return {"removed": removed}
