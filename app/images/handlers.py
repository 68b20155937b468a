"""Operation kinds for images: pull, build, push, tag, delete. Each ends by re-reading the
host's inventory, so the API shows the result as soon as the operation succeeds."""

from __future__ import annotations

import io
import re
from typing import Any

from sqlalchemy import delete, select

from app.core.errors import PolicyViolation
from app.engine.errors import EngineError, ObjectNotFound
from app.engine.protocol import Engine
from app.images.inventory import sync_host
from app.images.models import Blob
from app.images.reference import (
    LOCAL_BUILD_REGISTRY,
    ImageReference,
    parse_reference,
    recorded_digest,
)
from app.images.service import enforce_tag_source
from app.operations.context import Cancelled, OperationContext, PermanentError
from app.operations.models import Operation
from app.operations.registry import handler
from app.registries import service as registries
from app.registries.service import Credentials, ForeignRegistry
from app.security.roles import DEFAULT_PROJECT_ID

_AUTH_FAILURE = re.compile(r"unauthorized|authentication required|denied|incorrect username", re.I)
_NOT_FOUND = re.compile(r"manifest unknown|not found|does not exist|no such", re.I)
# Registry errors that another attempt will not fix.
_DONE_FRAMES = {
    "Pull complete",
    "Already exists",
    "Download complete",
    "Pushed",
    "Layer already exists",
}


def _credentials(ctx: OperationContext, host: str, registry_id: str | None) -> Credentials | None:
    with ctx.app.db.session(write=False) as session:
        # Credentials serve their own project's work only: the operation's project.
        project_id = session.execute(
            select(Operation.project_id).where(Operation.id == ctx.id)
        ).scalar_one_or_none()
        try:
            return registries.credentials(
                session,
                ctx.app.cipher,
                registry_id=registry_id,
                host=host,
                project_id=project_id or DEFAULT_PROJECT_ID,
            )
        except ForeignRegistry as exc:
            raise PermanentError(exc.detail) from exc


def registry_failure(
    message: str, *, reference: str, registry: str, authenticated: bool
) -> Exception:
    """A plain-words error for what a registry said; permanent where retrying cannot help."""
    if _AUTH_FAILURE.search(message):
        how = "with the stored credentials" if authenticated else "without credentials"
        return PermanentError(f"authentication failed for registry {registry} ({how}): {message}")
    if _NOT_FOUND.search(message):
        return PermanentError(f"image {reference} not found in registry {registry}: {message}")
    return PermanentError(message)


class LayerProgress:
    """Folds a pull or push event stream into progress figures and a few log lines."""

    def __init__(self, ctx: OperationContext, verb: str) -> None:
        self.ctx = ctx
        self.verb = verb
        self.layers: dict[str, str] = {}
        self.current: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def feed(self, event: dict[str, Any]) -> None:
        layer, status = event.get("id"), str(event.get("status", ""))
        detail = event.get("progressDetail") or {}
        if layer and len(str(layer)) == 12:  # a layer's short id, not a tag line
            layer = str(layer)
            before = self.layers.get(layer)
            self.layers[layer] = status
            if detail.get("total"):
                self.total[layer] = int(detail["total"])
                self.current[layer] = int(detail.get("current", 0))
            if status in _DONE_FRAMES:
                self.current[layer] = self.total.get(layer, 0)
                if before != status:
                    self.ctx.log(f"{layer}: {status}")
        elif status:
            self.ctx.log(status)
        done = sum(1 for s in self.layers.values() if s in _DONE_FRAMES)
        self.ctx.progress(
            {
                "phase": self.verb,
                "layers_done": done,
                "layers_total": len(self.layers),
                "bytes_done": sum(self.current.values()),
                "bytes_total": sum(self.total.values()),
            }
        )


def _refresh(ctx: OperationContext, engine: Engine) -> None:
    assert ctx.claim.host_id is not None
    sync_host(ctx.app.db, engine, ctx.claim.host_id)


def pull_image(
    ctx: OperationContext,
    engine: Engine,
    reference: ImageReference,
    registry_id: str | None,
    *,
    platform: str | None = None,
) -> dict[str, Any]:
    """Pull with progress and logs; credentials resolved the one way every pull uses.
    Shared by `image.pull` and by containers whose image is missing on their host (or whose
    pull_policy is always); `platform` (os/arch) chooses the image of a multi-platform tag."""
    credentials = _credentials(ctx, reference.registry_host, registry_id)
    tag = reference.digest or reference.tag or "latest"
    ctx.log(f"pulling {reference}" + (" with stored credentials" if credentials else ""))
    progress = LayerProgress(ctx, "pull")
    stream = engine.streaming()
    try:
        for event in stream.pull(
            reference.name,
            tag,
            credentials.auth_config() if credentials else None,
            platform=platform,
        ):
            ctx.checkpoint()
            if "error" in event:
                raise registry_failure(
                    str(event["error"]),
                    reference=str(reference),
                    registry=reference.registry_host,
                    authenticated=credentials is not None,
                )
            progress.feed(event)
    except EngineError as exc:
        if exc.transient and not (_AUTH_FAILURE.search(str(exc)) or _NOT_FOUND.search(str(exc))):
            raise
        raise registry_failure(
            str(exc),
            reference=str(reference),
            registry=reference.registry_host,
            authenticated=credentials is not None,
        ) from exc
    finally:
        stream.close()
    details = engine.inspect_image(
        f"{reference.name}@{reference.digest}" if reference.digest else f"{reference.name}:{tag}"
    )
    ctx.progress({**progress_summary(progress), "phase": "pulled"}, force=True)
    return {
        "reference": str(reference),
        "docker_id": details["Id"],
        "repo_digests": details.get("RepoDigests", []),
    }


def resolve_digest(
    ctx: OperationContext,
    engine: Engine,
    image: str,
    registry_id: str | None,
    *,
    pull_policy: str = "missing",
    platform: str | None = None,
) -> str | None:
    """What `image` names on this host, as a deploy records it (reference.recorded_digest).
    Pulled as a replica would be, so it names what the replicas would run: when the host
    lacks it, or always with pull_policy `always` (the tag may have moved since). An image
    Berth built is only inspected: it is on this host and in no registry."""
    reference = parse_reference(image)
    if reference.digest is not None:
        return str(reference)  # pinned in the file already
    local = reference.registry_host == LOCAL_BUILD_REGISTRY or pull_policy == "never"
    if local or pull_policy != "always":
        try:
            return recorded_digest(reference, engine.inspect_image(str(reference)))
        except ObjectNotFound:
            if local:
                return None  # the replica's create says why it cannot run
    pulled = pull_image(ctx, engine, reference, registry_id, platform=platform)
    return recorded_digest(
        reference, {"Id": pulled["docker_id"], "RepoDigests": pulled["repo_digests"]}
    )


@handler("image.pull")
def pull(ctx: OperationContext) -> dict[str, Any]:
    reference = parse_reference(str(ctx.params["reference"]))
    engine = ctx.engine()
    result = pull_image(ctx, engine, reference, ctx.params.get("registry_id"))
    _refresh(ctx, engine)
    return result


def progress_summary(progress: LayerProgress) -> dict[str, Any]:
    return {
        "layers_done": len(progress.layers),
        "layers_total": len(progress.layers),
        "bytes_done": sum(progress.total.values()),
        "bytes_total": sum(progress.total.values()),
    }


@handler("image.push")
def push(ctx: OperationContext) -> dict[str, Any]:
    reference = parse_reference(str(ctx.params["reference"]))
    credentials = _credentials(ctx, reference.registry_host, ctx.params.get("registry_id"))
    engine = ctx.engine()
    ctx.log(f"pushing {reference}" + (" with stored credentials" if credentials else ""))
    progress = LayerProgress(ctx, "push")
    digest = None
    stream = engine.streaming()
    try:
        for event in stream.push(
            reference.name,
            reference.tag or "latest",
            credentials.auth_config() if credentials else None,
        ):
            ctx.checkpoint()
            if "error" in event:
                raise registry_failure(
                    str(event["error"]),
                    reference=str(reference),
                    registry=reference.registry_host,
                    authenticated=credentials is not None,
                )
            aux = event.get("aux") or {}
            digest = aux.get("Digest", digest)
            progress.feed(event)
    except EngineError as exc:
        if exc.transient and not _AUTH_FAILURE.search(str(exc)):
            raise
        raise registry_failure(
            str(exc),
            reference=str(reference),
            registry=reference.registry_host,
            authenticated=credentials is not None,
        ) from exc
    finally:
        stream.close()
    _refresh(ctx, engine)
    return {"reference": str(reference), "digest": digest}


@handler("image.build")
def build(ctx: OperationContext) -> dict[str, Any]:
    blob_id = str(ctx.params["blob_id"])
    try:
        result = _build(ctx, blob_id)
    except (PermanentError, Cancelled):
        _forget_context(ctx, blob_id)
        raise
    _forget_context(ctx, blob_id)
    return result


def _forget_context(ctx: OperationContext, blob_id: str) -> None:
    """The upload is no longer needed once the build has an outcome that will not be retried."""
    with ctx.app.db.session() as session:
        session.execute(delete(Blob).where(Blob.id == blob_id))


def _build(ctx: OperationContext, blob_id: str) -> dict[str, Any]:
    tags = [str(t) for t in ctx.params.get("tags", [])]
    with ctx.app.db.session(write=False) as session:
        data = session.execute(select(Blob.data).where(Blob.id == blob_id)).scalar_one_or_none()
    if data is None:
        raise PermanentError("the uploaded build context is gone (was the operation run before?)")
    engine = ctx.engine()
    stream = engine.streaming()
    step = "before the first step"
    image_id = None
    try:
        events = stream.build(
            io.BytesIO(data),
            dockerfile=str(ctx.params.get("dockerfile", "Dockerfile")),
            tag=tags[0] if tags else None,
            build_args={str(k): str(v) for k, v in ctx.params.get("build_args", {}).items()},
            labels={**ctx.params.get("labels", {}), "berth.operation": ctx.id},
            target=ctx.params.get("target"),
            cache_from=ctx.params.get("cache_from"),
        )
        pending: list[tuple[str, str]] = []
        for event in events:
            ctx.checkpoint()
            if "stream" in event:
                for line in str(event["stream"]).splitlines():
                    if line.strip():
                        pending.append(("info", line))
                        if line.startswith("Step "):
                            step = line
            if "error" in event:
                ctx.log_lines(pending)
                raise PermanentError(f"build failed at {step}: {str(event['error']).strip()}")
            aux = event.get("aux") or {}
            image_id = aux.get("ID", image_id)
            if len(pending) >= 20:
                ctx.log_lines(pending)
                pending = []
        ctx.log_lines(pending)
    finally:
        stream.close()
    if image_id is None:
        raise PermanentError(f"the build ended without an image (last: {step})")
    for extra in tags[1:]:
        target = parse_reference(extra)
        engine.tag_image(image_id, target.name, target.tag or "latest")
    _refresh(ctx, engine)
    return {"docker_id": image_id, "tags": tags}


@handler("image.tag")
def tag(ctx: OperationContext) -> dict[str, Any]:
    source = str(ctx.params["source"])
    target = parse_reference(str(ctx.params["target"]))
    engine = ctx.engine()
    if ctx.app.settings.registry_allow_list:
        # Again on what the engine holds now: the request saw the inventory as last listed.
        details = engine.inspect_image(source)
        names = [*(details.get("RepoTags") or []), *(details.get("RepoDigests") or [])]
        try:
            enforce_tag_source(source, names, ctx.app.settings, field="source")
        except PolicyViolation as exc:
            raise PermanentError(exc.detail) from exc
    engine.tag_image(source, target.name, target.tag or "latest")
    ctx.log(f"tagged {source} as {target}")
    _refresh(ctx, engine)
    return {"source": source, "target": str(target)}


@handler("image.delete")
def remove(ctx: OperationContext) -> dict[str, Any]:
    docker_id = str(ctx.params["docker_id"])
    engine = ctx.engine()
    try:
        engine.remove_image(docker_id, force=bool(ctx.params.get("force", False)))
    except EngineError as exc:
        if exc.transient:
            raise
        raise PermanentError(f"the engine refused to delete the image: {exc}") from exc
    ctx.log(f"deleted image {docker_id[:19]}")
    _refresh(ctx, engine)
    return {"docker_id": docker_id}
