"""A stack's releases: what each generation deployed (the Compose file, its variables with the
secret-bearing ones masked, the plan and each service's image digest), the difference between
two, and a rollback that deploys a past release again as a new generation."""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.pagination import Page, paginate
from app.core.errors import Invalid, NotFound
from app.services.diff import changes
from app.stacks.models import Stack, StackRelease
from app.stacks.schemas import ReleaseDiff, ReleaseRead, ServiceDiff

MASK = "***"
# Names that usually carry a credential; matched anywhere in the name, in any case (masking a
# harmless `MONKEY` costs nothing; showing a `DB_PASSWORD` would).
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|PASS|SECRET|TOKEN|KEY|CREDENTIAL|PRIVATE|AUTH", re.I)


def masked(variables: Mapping[str, str]) -> dict[str, str]:
    """The variables as a release keeps them: secret-bearing names' values replaced."""
    return {name: MASK if _SECRET_NAME.search(name) else value for name, value in variables.items()}


def digests(plan: Mapping[str, Any]) -> dict[str, str | None]:
    """Each service's recorded image digest, by Compose service name (null: not resolved)."""
    return {item["compose_name"]: item.get("digest") for item in plan.get("services", [])}


def record(
    session: Session, *, stack: Stack, created_by: str, rollback_of: int | None = None
) -> None:
    """The release of the stack's current generation, as it was just accepted; its digests
    follow once the deploy has resolved them on the host (stacks.handlers)."""
    session.add(
        StackRelease(
            stack_id=stack.id,
            release=stack.generation,
            compose=stack.compose,
            variables=masked(stack.variables),
            plan=stack.plan,
            digests=digests(stack.plan),
            rollback_of=rollback_of,
            created_by=created_by,
        )
    )


def get(session: Session, *, stack_id: str, release: int, field: str | None = None) -> StackRelease:
    """The release; a 404 if there is none, or, when it was named in a body `field`, a 422."""
    row = session.execute(
        select(StackRelease).where(
            StackRelease.stack_id == stack_id, StackRelease.release == release
        )
    ).scalar_one_or_none()
    if row is not None:
        return row
    message = f"stack {stack_id!r} has no release {release}"
    if field is not None:
        raise Invalid(message, errors=[{"loc": field, "msg": "no such release"}])
    raise NotFound(message)


def to_read(row: StackRelease) -> ReleaseRead:
    return ReleaseRead(
        release=row.release,
        compose=row.compose,
        variables=row.variables,
        digests=row.digests,
        images={
            item["compose_name"]: item["spec"]["image"] for item in row.plan.get("services", [])
        },
        rollback_of=row.rollback_of,
        created_at=row.created_at,
        created_by=row.created_by,
    )


def read_page(
    session: Session, *, stack_id: str, limit: int, cursor: str | None
) -> Page[ReleaseRead]:
    """The stack's releases, newest first (the caller has checked that the stack exists)."""
    rows, next_cursor = paginate(
        session,
        select(StackRelease).where(StackRelease.stack_id == stack_id),
        StackRelease.id,
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    return Page(items=[to_read(r) for r in rows], next_cursor=next_cursor)


def diff(before: StackRelease, after: StackRelease) -> ReleaseDiff:
    """From release `before` to release `after`: the Compose file's lines, the variables and,
    per service, its digest and the spec fields that changed."""
    old_specs = {i["compose_name"]: i["spec"] for i in before.plan.get("services", [])}
    new_specs = {i["compose_name"]: i["spec"] for i in after.plan.get("services", [])}
    services = []
    for name in sorted(set(old_specs) | set(new_specs)):
        old, new = old_specs.get(name), new_specs.get(name)
        change = "added" if old is None else "removed" if new is None else "changed"
        fields = changes(old or {}, new or {}) if old is not None and new is not None else []
        old_digest, new_digest = before.digests.get(name), after.digests.get(name)
        if change == "changed" and not fields and old_digest == new_digest:
            continue
        services.append(
            ServiceDiff(
                compose_name=name,
                change=change,
                digest_before=old_digest,
                digest_after=new_digest,
                fields=fields,
            )
        )
    return ReleaseDiff(
        before=before.release,
        after=after.release,
        compose="".join(
            difflib.unified_diff(
                before.compose.splitlines(keepends=True),
                after.compose.splitlines(keepends=True),
                fromfile=f"release {before.release}",
                tofile=f"release {after.release}",
            )
        ),
        variables=changes(before.variables, after.variables),
        services=services,
    )


def rollback_plan(current: Mapping[str, Any], release: StackRelease) -> dict[str, Any]:
    """The release's plan, deployed again as it was: its digests (tags are not resolved
    again) and its builds' images (built then, not rebuilt: their operations are done, or
    gone). The stack's own secrets and project volumes of every generation stay listed, for
    the stack's removal to find them."""
    plan = copy.deepcopy(release.plan)
    for item in plan.get("services", []):
        if item.get("build"):
            item["build"].pop("operation_id", None)
    for kept in ("stored_secrets", "content_volumes"):
        plan[kept] = list(dict.fromkeys([*current.get(kept, []), *plan.get(kept, [])]))
    return plan
