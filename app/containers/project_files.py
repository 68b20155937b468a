"""A stack's project files on a host: each file or folder that a relative bind mount names is
shipped in a volume of its own (named by its content, `<stack>_file_<hash>` or
`<stack>_folder_<hash>`), filled once per host before the first replica that mounts it.

The volume is filled through a stopped container (from the replica's own image) that mounts it:
the engine unpacks the stored tar into the volume, then the container is removed. That filler
has a fixed name, so a filler left behind (a crash between its create and its removal) means
the fill did not finish: it is filled again. The volume itself is made by the filler's create,
so a volume without a filler was filled in full.

A folder is mounted as the volume. A file is bind-mounted from the volume's folder on the
engine's host (`Mountpoint`, from the engine itself: Docker 20.10 has no volume subpath); the
schema keeps those volumes out of any user's mount, so no container can put a link there.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.containers import network_lock
from app.containers.schemas import ContainerSpec, VolumeMount
from app.engine.errors import ObjectNotFound
from app.engine.protocol import Engine
from app.images.models import Blob
from app.operations.context import OperationContext, PermanentError

# Creates a container from the spec's image, pulling it when the host lacks it: the replica's
# own way (app.containers.handlers), so that a filler needs no image of its own.
Creator = Callable[[str, dict[str, Any]], str]

_FILL_PATH = "/berth-fill"
FILE_MEMBER = "file"  # the one member of a file's tar (app.stacks.project)


def prepared(
    ctx: OperationContext, engine: Engine, spec: ContainerSpec, create: Creator
) -> dict[str, str]:
    """Every project volume the spec mounts, present and filled on the host; the host path of
    each file mount's file, by volume name."""
    files: dict[str, str] = {}
    for volume in spec.volumes:
        if volume.content is None:
            continue
        with network_lock.creating(ctx.app.db, host_id=str(ctx.claim.host_id), name=volume.source):
            filled = _fill(ctx, engine, spec, volume, create)
        if filled:  # logged once the lock is let go (a log line is a write of its own)
            ctx.log(f"filled volume {volume.source} with the project's files")
        if volume.content.file:
            mountpoint = str(engine.inspect_volume(volume.source)["Mountpoint"])
            files[volume.source] = f"{mountpoint}/{FILE_MEMBER}"
    return files


def _filler_name(volume: str) -> str:
    return f"{volume}.fill"


def _fill(
    ctx: OperationContext,
    engine: Engine,
    spec: ContainerSpec,
    volume: VolumeMount,
    create: Creator,
) -> bool:
    """Fill the volume unless an earlier filler finished; whether this one did."""
    assert volume.content is not None  # only project volumes are filled
    name = _filler_name(volume.source)
    leftover = engine.list_containers(labels={"berth.fill": volume.source})
    if not leftover:
        try:
            engine.inspect_volume(volume.source)
            return False  # made by an earlier filler, which finished
        except ObjectNotFound:
            pass
    for container in leftover:
        engine.remove_container(str(container["Id"]), force=True)
    data = _content(ctx, volume.content.sha256)
    if volume.content.file and not _one_file(data):
        raise PermanentError(f"the content of {volume.source} is not one regular file")
    labels = {
        "berth.managed": "true",
        "berth.stack": volume.source.rsplit("_", 2)[0],
        "berth.content": volume.content.sha256,
    }
    body = {
        "Image": spec.image,
        # Never started: any command will do, and one is needed when the image has none.
        "Entrypoint": [f"{_FILL_PATH}/.never-run"],
        "Cmd": [],
        "Labels": {"berth.managed": "true", "berth.fill": volume.source},
        "HostConfig": {
            "NetworkMode": "none",
            "Mounts": [
                {
                    "Type": "volume",
                    "Source": volume.source,
                    "Target": _FILL_PATH,
                    "VolumeOptions": {"Labels": labels, "NoCopy": True},
                }
            ],
        },
    }
    filler = create(name, body)
    engine.put_archive(filler, _FILL_PATH, data)
    engine.remove_container(filler, force=True)
    return True


def _one_file(data: bytes) -> bool:
    """Whether the tar holds only the regular file `file`: the file a bind mount takes from
    the volume's folder on the host must be no link (the engine would follow it there)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        members = archive.getmembers()
    return len(members) == 1 and members[0].isreg() and members[0].name == FILE_MEMBER


def _content(ctx: OperationContext, sha256: str) -> bytes:
    with ctx.app.db.session(write=False) as session:
        data = session.execute(
            select(Blob.data).where(Blob.sha256 == sha256).limit(1)
        ).scalar_one_or_none()
    if data is None:
        raise PermanentError(
            f"the project files {sha256[:16]} are no longer stored (the stack was removed?)"
        )
    return data
