"""What images each host really holds: read from the engine, written to the database.

Called by the container followers when an engine event says a host's images changed, by the
inventory loop on a slow interval (what events cannot say: changes while no one followed the
host), and by every image operation when it finishes, so `GET /images` is served from the
database. Container events change only how many containers use each image: the followers
recount those (`store_usage`, one container list) instead of re-reading the inventory.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from app.core.db import Database, utcnow
from app.engine.docker_engine import parse_engine_time
from app.engine.protocol import Engine
from app.events import recorder as events
from app.hosts.models import Host
from app.images.models import Image

_UNTAGGED = {"<none>:<none>", "<none>@<none>"}
# Engine events after which a host's images differ: images that came, went or were
# (un)tagged (a re-read of the inventory), and containers made or removed (only an image's
# count of containers using it: a recount).
_IMAGE_ACTIONS = {"pull", "tag", "untag", "delete", "import", "load"}
_USAGE_ACTIONS = {"create", "destroy"}
EVENT_TYPES = ("image", "container")


def _action(event: dict[str, Any]) -> str:
    return str(event.get("Action", "")).split(":")[0]


def changes_inventory(event: dict[str, Any]) -> bool:
    """Whether an engine event (of `EVENT_TYPES`) changes the host's images themselves."""
    return event.get("Type") == "image" and _action(event) in _IMAGE_ACTIONS


def changes_usage(event: dict[str, Any]) -> bool:
    """Whether an engine event changes only how many containers use the host's images."""
    return event.get("Type") == "container" and _action(event) in _USAGE_ACTIONS


def count_by_image(summaries: list[dict[str, Any]]) -> dict[str, int]:
    """How many of the listed containers (`GET /containers/json?all=1`) use each image id."""
    counts: dict[str, int] = {}
    for summary in summaries:
        image_id = str(summary.get("ImageID", ""))
        counts[image_id] = counts.get(image_id, 0) + 1
    return counts


def store_usage(db: Database, host_id: str, counts: dict[str, int], *, read_at: datetime) -> None:
    """Set each of the host's images' count of containers using it, as a container list read
    at `read_at` counted them; an image whose inventory was read after that keeps its count
    (that reading is newer). Images, tags and layers are left to `sync_host`."""
    with db.session(write=False) as session:
        stored = session.execute(
            select(Image.id, Image.docker_id, Image.containers).where(
                Image.host_id == host_id, Image.observed_at <= read_at
            )
        ).all()
    changed = [
        (row.id, counts.get(row.docker_id, 0))
        for row in stored
        if row.containers != counts.get(row.docker_id, 0)
    ]
    if not changed:
        return  # the usual case for a burst of replicas of an image already counted: no write
    with db.session() as session:
        for image_id, containers in changed:
            session.execute(
                update(Image)
                .where(Image.id == image_id, Image.observed_at <= read_at)
                .values(containers=containers)
                .execution_options(synchronize_session=False)
            )


def last_read(db: Database) -> dict[str, datetime]:
    """When each host's inventory was last read in full (its newest image's reading), for the
    hosts that hold any image."""
    with db.session(write=False) as session:
        rows = session.execute(
            select(Image.host_id, func.max(Image.observed_at)).group_by(Image.host_id)
        ).all()
    return {row.host_id: row[1] for row in rows}


def _metadata_only(entry: dict[str, Any]) -> bool:
    """History entries of the classic builder that made no layer (ENV, CMD, LABEL, ...)."""
    created_by = str(entry.get("CreatedBy", ""))
    if "#(nop)" not in created_by:
        return False
    return not any(f"#(nop) {verb}" in created_by for verb in ("COPY", "ADD"))


def layer_sizes(layer_digests: list[str], history: list[dict[str, Any]]) -> list[int]:
    """The size of each layer, matched from the image's history (which lists newest first).

    The engine reports sizes per history entry, not per layer, and some entries make no layer.
    Entries that made a layer are matched in order; when no rule gives exactly one entry per
    layer, the layers without a match count as empty (the total stays right in the usual case).
    """
    oldest_first = list(reversed(history))
    by_builder = [int(e.get("Size", 0)) for e in oldest_first if not _metadata_only(e)]
    if len(by_builder) == len(layer_digests):
        return by_builder
    nonzero = [int(e.get("Size", 0)) for e in oldest_first if int(e.get("Size", 0)) > 0]
    if len(nonzero) == len(layer_digests):
        return nonzero
    nonzero = nonzero[-len(layer_digests) :] if layer_digests else []
    return [0] * (len(layer_digests) - len(nonzero)) + nonzero


def references_text(tags: list[str], digests: list[str]) -> str:
    return "\n" + "".join(f"{reference}\n" for reference in [*tags, *digests])


def _describe(engine: Engine, docker_id: str) -> dict[str, Any]:
    details = engine.inspect_image(docker_id)
    digests = [str(d) for d in details.get("RootFS", {}).get("Layers", [])]
    sizes = layer_sizes(digests, engine.image_history(docker_id))
    created = details.get("Created")
    created_at = parse_engine_time(created) if isinstance(created, str) else None
    return {
        "layers": [{"digest": d, "size_bytes": s} for d, s in zip(digests, sizes, strict=True)],
        "size_bytes": sum(sizes),
        "image_created_at": created_at,
    }


def sync_host(db: Database, engine: Engine, host_id: str) -> int:
    """Make the database's images of one host match the engine. Returns how many it holds."""
    listed_at = utcnow()
    summaries = engine.list_images()
    usage = count_by_image(engine.list_containers())
    with db.session(write=False) as session:
        known = set(
            session.execute(select(Image.docker_id).where(Image.host_id == host_id)).scalars()
        )
    # Layers and sizes only for images new to us: an image id's content never changes.
    described = {
        str(s["Id"]): _describe(engine, str(s["Id"]))
        for s in summaries
        if str(s["Id"]) not in known
    }
    present = set()
    with db.session() as session:
        # One sync of a host at a time: an image operation that just finished and the
        # inventory loop would otherwise both insert an image new to both (PostgreSQL reads
        # committed; SQLite's single writer already serialises this). A key-share-compatible
        # lock, so inserts of containers and images that reference the host do not wait.
        if session.get(Host, host_id, with_for_update={"key_share": True}) is None:
            return 0
        rows = {
            row.docker_id: row
            for row in session.execute(select(Image).where(Image.host_id == host_id)).scalars()
        }
        if any(row.observed_at > listed_at for row in rows.values()):
            # A sync that listed the engine after this one has written already; this listing
            # is older and would undo it (drop a just-pulled image, restore an old tag).
            return len(rows)
        for summary in summaries:
            docker_id = str(summary["Id"])
            present.add(docker_id)
            tags = sorted(t for t in summary.get("RepoTags") or [] if t not in _UNTAGGED)
            digests = sorted(d for d in summary.get("RepoDigests") or [] if d not in _UNTAGGED)
            row = rows.get(docker_id)
            if row is None:
                if docker_id not in described:
                    continue  # appeared between the two reads; the next round adds it
                row = Image(host_id=host_id, docker_id=docker_id, **described[docker_id])
                session.add(row)
            elif row.repo_tags != tags or row.repo_digests != digests:
                row.version += 1
            row.repo_tags = tags
            row.repo_digests = digests
            row.references = references_text(tags, digests)
            row.containers = usage.get(docker_id, 0)
            row.observed_at = listed_at
        gone = [docker_id for docker_id in rows if docker_id not in present]
        if gone:
            removed = session.execute(
                delete(Image)
                .where(Image.host_id == host_id, Image.docker_id.in_(gone))
                .returning(Image.id)
            ).scalars()
            events.emit(
                session,
                (
                    events.row("image.deleted", "image", image_id, {"host_id": host_id})
                    for image_id in removed
                ),
            )
    return len(present)
