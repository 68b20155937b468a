"""A container spec as the Engine API's `POST /containers/create` body. Pure: no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_

from app.containers.models import Container
from app.containers.schemas import ContainerSpec, VolumeMount

_NANOS = 1_000_000_000


def labels_for(
    container_id: str, operation_id: str, spec: ContainerSpec, extra: dict[str, str]
) -> dict[str, str]:
    """The user's labels plus Berth's own, which tie the Docker object to its Berth id."""
    return {
        **spec.labels,
        **extra,
        "berth.managed": "true",
        "berth.container": container_id,
        "berth.operation": operation_id,
    }


def restart_policy(value: str) -> dict[str, Any]:
    name, _, count = value.partition(":")
    return {"Name": "" if name == "no" else name, "MaximumRetryCount": int(count or 0)}


def _device(text: str) -> dict[str, str]:
    """`/dev/x[:/dev/in-container[:rwm]]` as the Engine API's device mapping."""
    host, _, rest = text.partition(":")
    inside, _, permissions = rest.partition(":")
    return {
        "PathOnHost": host,
        "PathInContainer": inside or host,
        "CgroupPermissions": permissions or "rwm",
    }


def _mount(volume: VolumeMount, project_files: Mapping[str, str]) -> dict[str, Any]:
    mount: dict[str, Any] = {
        "Type": "bind" if volume.is_bind else "volume",
        "Source": volume.source,
        "Target": volume.target,
        "ReadOnly": volume.read_only,
    }
    if volume.content is not None and volume.content.file:
        # One file of a project volume: its path on the engine's host, which only the worker
        # knows (from the engine); the spec names the volume, never a host path.
        mount |= {"Type": "bind", "Source": project_files[volume.source]}
    elif volume.content is not None:
        # A project folder that is empty stays empty, as the folder bound would be.
        mount["VolumeOptions"] = {"NoCopy": True}
    return mount


def create_body(
    spec: ContainerSpec,
    *,
    labels: dict[str, str],
    image: str,
    project_files: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The create body; `project_files` is the host path of each project file mount's file
    (app.containers.project_files), by volume name."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for key in spec.exposed_ports():
        exposed[key] = {}
    for port in spec.ports:
        key = f"{port.container_port}/{port.protocol}"
        exposed[key] = {}
        bindings.setdefault(key, []).append(
            {"HostIp": port.host_ip, "HostPort": str(port.host_port) if port.host_port else ""}
        )
    mounts = [_mount(volume, project_files or {}) for volume in spec.volumes] + [
        # No source: the engine makes a fresh volume for this container alone.
        {"Type": "volume", "Target": target, "VolumeOptions": {"Labels": {"berth.managed": "true"}}}
        for target in spec.anonymous_volumes
    ]
    network_mode = spec.network_mode or (spec.networks[0] if spec.networks else "bridge")
    host_config: dict[str, Any] = {
        "PortBindings": bindings,
        "Mounts": mounts,
        "RestartPolicy": restart_policy(spec.restart_policy),
        "NetworkMode": network_mode,
        "Privileged": spec.privileged,
        "CapAdd": spec.cap_add or None,
        "Devices": [_device(d) for d in spec.devices] or None,
    }
    if spec.pid_mode:
        host_config["PidMode"] = spec.pid_mode
    if spec.ipc_mode:
        host_config["IpcMode"] = spec.ipc_mode
    if spec.resources.cpus:
        host_config["NanoCpus"] = int(spec.resources.cpus * _NANOS)
    if spec.resources.memory_bytes:
        host_config["Memory"] = spec.resources.memory_bytes
    reservations = spec.resources.reservations
    if reservations is not None and reservations.memory_bytes:
        host_config["MemoryReservation"] = reservations.memory_bytes
    host_config |= _runtime_host_config(spec)
    body: dict[str, Any] = {
        "Image": image,
        "Env": [f"{key}={value}" for key, value in spec.env.items()],
        "Labels": labels,
        "ExposedPorts": exposed,
        "HostConfig": host_config,
    }
    if spec.networks and spec.network_aliases:
        body["NetworkingConfig"] = {
            "EndpointsConfig": {spec.networks[0]: {"Aliases": spec.network_aliases}}
        }
    if spec.command is not None:
        body["Cmd"] = spec.command
    if spec.entrypoint is not None:
        body["Entrypoint"] = spec.entrypoint
    if spec.user:
        body["User"] = spec.user
    body |= {
        key: value
        for key, value in (
            ("Hostname", spec.hostname),
            ("Domainname", spec.domainname),
            ("StopSignal", spec.stop_signal),
            ("WorkingDir", spec.working_dir),
        )
        if value is not None
    }
    if spec.stop_grace_period_s is not None:
        # The engine takes whole seconds; a part second waits the next whole one.
        body["StopTimeout"] = math.ceil(spec.stop_grace_period_s)
    if spec.stdin_open:
        body |= {"OpenStdin": True, "AttachStdin": True}
    if spec.tty:
        body["Tty"] = True
    if spec.healthcheck is not None:
        check = spec.healthcheck
        body["Healthcheck"] = {
            "Test": check.test,
            "Interval": int(check.interval_s * _NANOS),
            "Timeout": int(check.timeout_s * _NANOS),
            "Retries": check.retries,
            "StartPeriod": int(check.start_period_s * _NANOS),
        }
    return body


# Runtime options the engine takes as they are, by HostConfig key; each is set only when given.
_AS_GIVEN = (
    ("cap_drop", "CapDrop"),
    ("read_only", "ReadonlyRootfs"),
    ("extra_hosts", "ExtraHosts"),
    ("dns", "Dns"),
    ("dns_search", "DnsSearch"),
    ("security_opt", "SecurityOpt"),
    ("sysctls", "Sysctls"),
)


def _runtime_host_config(spec: ContainerSpec) -> dict[str, Any]:
    """The HostConfig fields of the spec's runtime options, only those that are set."""
    host_config: dict[str, Any] = {
        key: getattr(spec, name) for name, key in _AS_GIVEN if getattr(spec, name)
    }
    if spec.init is not None:
        host_config["Init"] = spec.init
    if spec.shm_size_bytes is not None:
        host_config["ShmSize"] = spec.shm_size_bytes
    if spec.ulimits:
        host_config["Ulimits"] = [
            {"Name": name, "Soft": limit.soft, "Hard": limit.hard}
            for name, limit in spec.ulimits.items()
        ]
    if spec.tmpfs:
        host_config["Tmpfs"] = {
            path: options for path, _, options in (entry.partition(":") for entry in spec.tmpfs)
        }
    if spec.logging is not None:
        host_config["LogConfig"] = {"Type": spec.logging.driver, "Config": spec.logging.options}
    return host_config


def observed(details: dict[str, Any]) -> dict[str, Any]:
    """What `GET /containers/{id}/json` says about a container's state, as Container columns."""
    state = details.get("State") or {}
    status = str(state.get("Status", "unknown"))
    health = (state.get("Health") or {}).get("Status")
    return {
        "docker_id": details.get("Id"),
        "state": status,
        "health": health,
        "exit_code": int(state.get("ExitCode", 0)) if status in ("exited", "dead") else None,
    }


# Several writers store what an engine says about a container: the operation that just acted on
# it, the event follower and the re-list. Each reads the engine, then writes; the reading that
# was taken last wins, not the write that lands last (a container that dies just after an
# operation inspected it must not be stored as running until the next re-list).


def is_newer(row: Container, docker_id: str | None, read_at: datetime) -> bool:
    """Whether `row` already holds a reading of the same container taken after `read_at`."""
    return row.observed_at is not None and row.observed_at > read_at and row.docker_id == docker_id


def not_newer_than(read_at: datetime) -> ColumnElement[bool]:
    """The SQL form of `not is_newer`, for writes by id that do not load the row."""
    return or_(Container.observed_at.is_(None), Container.observed_at <= read_at)
