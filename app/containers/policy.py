"""The container security policy: what would let a container own its host is refused unless an
admin setting allows it. Every violation is reported, each naming its rule and field."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection

from app.containers.schemas import ContainerSpec
from app.core.config import Settings
from app.core.errors import PolicyViolation

# Even under an allowed path: a mounted engine socket is root on the host.
_ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock")


# Kernel parameters the engine namespaces per container (as Docker documents for --sysctl):
# any other one is the host's own.
_NAMESPACED_SYSCTLS = re.compile(r"^(net\.|kernel\.shm|kernel\.msg|kernel\.sem$|fs\.mqueue\.)")
# Security options that switch a confinement off, or replace it with a profile of the user's
# own (a seccomp profile can allow every system call).
_UNCONFINED = re.compile(
    r"^(seccomp[=:](?!builtin$).*|apparmor[=:]unconfined|label[=:]disable|systempaths[=:]unconfined)$"
)


def _within(path: str, roots: list[str]) -> bool:
    normal = posixpath.normpath(path)
    return any(normal == root or normal.startswith(root + "/") for root in roots)


def check_container(
    spec: ContainerSpec, settings: Settings, *, loc: str = "body", relaxed: Collection[str] = ()
) -> None:
    """Refuse what the settings do not allow. `relaxed` names the rules the container's
    project may break (app/projects/schemas.py `Relaxation`, set by an admin): each stands
    for the setting of the same name, for this project only."""
    problems: list[dict[str, str]] = []
    allow_privileged = settings.allow_privileged or "privileged" in relaxed
    allow_host_namespaces = settings.allow_host_namespaces or "host_namespaces" in relaxed
    allow_devices = settings.allow_devices or "devices" in relaxed
    any_capability = "capabilities" in relaxed
    any_bind_path = "bind_paths" in relaxed

    def refuse(field: str, message: str) -> None:
        problems.append({"loc": f"{loc}.{field}", "msg": message})

    if spec.privileged and not allow_privileged:
        refuse("privileged", "privileged containers are refused (rule: BERTH_ALLOW_PRIVILEGED)")
    if not allow_host_namespaces:
        for field, value in (
            ("network_mode", spec.network_mode),
            ("pid_mode", spec.pid_mode),
            ("ipc_mode", spec.ipc_mode),
        ):
            if value == "host":
                refuse(field, f"{field} host is refused (rule: BERTH_ALLOW_HOST_NAMESPACES)")
        # The first network becomes the engine's network mode: a network named `host` is
        # network_mode host by another name.
        for index, network in enumerate(spec.networks):
            if network == "host":
                refuse(
                    f"networks.{index}",
                    "the host network is refused (rule: BERTH_ALLOW_HOST_NAMESPACES)",
                )
    if spec.network_mode is not None and spec.network_mode.startswith("container:"):
        # Another container's namespace is its traffic and its ports (an unmanaged one's too):
        # no setting allows it.
        refuse(
            "network_mode",
            f"network_mode {spec.network_mode} is refused "
            "(rule: no container joins another container's namespace)",
        )
    allowed_caps = settings.capability_allow_list
    for capability in spec.cap_add:
        name = capability.upper().removeprefix("CAP_")
        if name == "ALL" or (name not in allowed_caps and not any_capability):
            refuse(
                "cap_add",
                f"adding capability {capability} is refused (rule: BERTH_ALLOWED_CAPABILITIES)",
            )
    if not allow_privileged:
        for index, option in enumerate(spec.security_opt):
            if _UNCONFINED.match(option):
                refuse(
                    f"security_opt[{index}]",
                    f"security_opt {option} is refused (rule: BERTH_ALLOW_PRIVILEGED)",
                )
        for name in spec.sysctls:
            host_network = spec.network_mode == "host" and name.startswith("net.")
            if host_network or not _NAMESPACED_SYSCTLS.match(name):
                refuse(
                    f"sysctls.{name}",
                    f"sysctl {name} is the host's, not the container's "
                    "(rule: BERTH_ALLOW_PRIVILEGED)",
                )
    if spec.devices and not allow_devices:
        refuse("devices", "host devices are refused (rule: BERTH_ALLOW_DEVICES)")
    roots = settings.bind_path_allow_list
    for index, volume in enumerate(spec.volumes):
        if not volume.is_bind:
            continue
        source = posixpath.normpath(volume.source)
        if source in _ENGINE_SOCKETS or source.endswith("/docker.sock"):
            if not allow_privileged:
                refuse(
                    f"volumes.{index}.source",
                    f"mounting the engine socket {source} is refused "
                    "(rule: BERTH_ALLOW_PRIVILEGED)",
                )
        elif not any_bind_path and not _within(source, roots):
            allowed = ", ".join(roots) or "none"
            refuse(
                f"volumes.{index}.source",
                f"bind mount of {source} is outside the allowed host paths ({allowed}) "
                "(rule: BERTH_ALLOWED_BIND_PATHS)",
            )
    if problems:
        summary = "; ".join(p["msg"] for p in problems)
        raise PolicyViolation(
            f"refused by the container security policy: {summary}", errors=problems
        )
