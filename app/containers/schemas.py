"""The container spec and its validation: every field is checked before any work is queued."""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    field_validator,
    model_serializer,
    model_validator,
)

from app.hosts.schemas import EnvName, LabelKey, LabelValue
from app.operations.schemas import OperationRead
from app.projects.schemas import InProject
from app.secrets.schemas import SecretReference, SecretUse

ContainerName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
VolumeName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
NetworkName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]


def _not_reserved(labels: dict[str, str]) -> dict[str, str]:
    reserved = [key for key in labels if key.startswith("berth.")]
    if reserved:
        raise ValueError(f"labels starting with 'berth.' are Berth's own: {reserved}")
    return labels


# A user's labels on a container or service: `berth.*` ones tie Docker objects to Berth.
UserLabels = Annotated[
    dict[LabelKey, LabelValue], Field(max_length=64), AfterValidator(_not_reserved)
]
NetworkAlias = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")]
Arg = Annotated[str, StringConstraints(max_length=8192)]
_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:[1-9][0-9]{0,3})?)$")
_USER = re.compile(r"^[a-zA-Z0-9_.-]{1,64}(:[a-zA-Z0-9_.-]{1,64})?$")
_CAPABILITY = re.compile(r"^[A-Z_]{2,40}$")
AbsolutePath = Annotated[
    str, StringConstraints(min_length=2, max_length=4096, pattern=r"^/[^\x00]*$")
]
_EXPOSE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?(?:/(tcp|udp|sctp))?$")
_MAX_EXPOSED = 1024


class SetOnly(BaseModel):
    """A model whose `_SET_ONLY` fields are left out of its dump while at their default: the
    options added after specs were first stored change neither a stored spec nor what an
    equal spec compares to, so an existing service keeps its revision."""

    _SET_ONLY: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _set_only(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, default in _set_only_defaults(type(self)).items():
                if name in data and getattr(self, name) == default:
                    del data[name]
        return data


@cache
def _set_only_defaults(model: type[SetOnly]) -> dict[str, Any]:
    """The defaults of `model`'s `_SET_ONLY` fields, worked out once per class: pydantic's
    `get_default` inspects the default factory's signature on every call, which was more than
    half of the time to serialize a page of specs. Only compared with, never handed out."""
    fields = model.model_fields
    return {name: fields[name].get_default(call_default_factory=True) for name in model._SET_ONLY}


class PortMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    container_port: int = Field(ge=1, le=65535)
    host_port: int | None = Field(
        default=None, ge=1, le=65535, description="None: the engine picks a free port"
    )
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    host_ip: Annotated[str, StringConstraints(max_length=45)] = Field(
        default="", description="Address to publish on; empty: all of the host's addresses"
    )

    @field_validator("host_ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        import ipaddress

        if value:
            try:
                ipaddress.ip_address(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an IP address") from exc
        return value


# The volumes Berth makes for a project's files: `<stack>_file_<hash>` or `<stack>_folder_<hash>`.
_PROJECT_VOLUME = re.compile(r"_(file|folder)_[0-9a-f]{16}$")


def project_volume_name(stack: str, *, file: bool, sha256: str) -> str:
    """The volume that holds one file or folder of a stack's project: named by its content, so
    a changed file is a new volume in the spec of exactly the services that mount it."""
    return f"{stack}_{'file' if file else 'folder'}_{sha256[:16]}"


class ProjectContent(BaseModel):
    """A file or folder of a stack's project, which Berth ships to the host in a volume of its
    own (stacks set this; the content is stored with the stack)."""

    model_config = ConfigDict(extra="forbid")

    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="The digest of the tar that holds the content"
    )
    file: bool = Field(
        description="A single file, mounted alone at the target; else a folder (the volume)"
    )


class VolumeMount(SetOnly):
    """`source` is a named volume, or an absolute host path (a bind mount, under the policy)."""

    model_config = ConfigDict(extra="forbid")
    _SET_ONLY: ClassVar[frozenset[str]] = frozenset({"content"})

    source: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    target: Annotated[str, StringConstraints(min_length=2, max_length=4096, pattern=r"^/")]
    read_only: bool = False
    content: ProjectContent | None = Field(
        default=None,
        description="Set by stacks for a relative bind mount of their project: `source` is "
        "then the volume Berth fills with that content",
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("/"):
            if "\x00" in value or any(part == ".." for part in value.split("/")):
                raise ValueError("a bind mount source must be an absolute path without '..'")
            return value
        if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$", value):
            raise ValueError(
                "a volume name is letters, digits, '_', '.', '-' (or use /an/absolute/path)"
            )
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        if "\x00" in value or any(part == ".." for part in value.split("/")) or value == "/":
            raise ValueError("the target must be an absolute path other than '/', without '..'")
        return value

    @model_validator(mode="after")
    def _project_volume(self) -> VolumeMount:
        # A project file is bind-mounted from its volume's folder on the host: only a volume
        # that Berth filled and no container can write to as a whole may be that folder.
        if self.content is None:
            if _PROJECT_VOLUME.search(self.source):
                raise ValueError(
                    f"'{self.source}' is the name of a volume Berth makes for a stack's project "
                    "files: choose another volume name"
                )
        elif not self.source.endswith(
            project_volume_name("", file=self.content.file, sha256=self.content.sha256)
        ):
            raise ValueError("a project content's volume is named by its kind and digest")
        return self

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


class Reservations(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU cores, e.g. 0.5")
    memory_bytes: int | None = Field(default=None, ge=0, description="Bytes")


class Resources(SetOnly):
    model_config = ConfigDict(extra="forbid")
    _SET_ONLY: ClassVar[frozenset[str]] = frozenset({"reservations"})

    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU cores, e.g. 0.5")
    memory_bytes: int | None = Field(default=None, ge=6 * 2**20, description="At least 6 MiB")
    reservations: Reservations | None = Field(
        default=None,
        description="What placement sets aside on the host (Compose deploy.resources."
        "reservations); without it, placement sets aside the limits above",
    )


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test: Annotated[list[Arg], Field(min_length=1, max_length=100)] = Field(
        description='["CMD", "wget", "-q", "..."], ["CMD-SHELL", "wget ... || exit 1"], or ["NONE"]'
    )
    interval_s: float = Field(default=30, ge=0.001, le=86400)
    timeout_s: float = Field(default=30, ge=0.001, le=86400)
    retries: int = Field(default=3, ge=0, le=100)
    start_period_s: float = Field(default=0, ge=0, le=86400)

    @field_validator("test")
    @classmethod
    def _test(cls, value: list[str]) -> list[str]:
        if value[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ValueError('the first element is "CMD", "CMD-SHELL" or "NONE"')
        if value[0] != "NONE" and len(value) < 2:
            raise ValueError("name the command to run after CMD / CMD-SHELL")
        return value


class Placement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    constraints: Annotated[list[str], Field(max_length=32)] = Field(
        default_factory=list,
        description='Host label rules: "zone==a", "disk!=hdd"; also "host.name==h1", "host.id==…"',
    )

    @field_validator("constraints")
    @classmethod
    def _rules(cls, value: list[str]) -> list[str]:
        for rule in value:
            if not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_./-]{0,62}\s*(==|!=)\s*[^\s].{0,254}$", rule):
                raise ValueError(f"{rule!r}: a constraint is label==value or label!=value")
        return value


class Ulimit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    soft: int = Field(ge=-1, description="-1: unlimited")
    hard: int = Field(ge=-1, description="-1: unlimited")

    @model_validator(mode="after")
    def _order(self) -> Ulimit:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError("the soft limit cannot exceed the hard limit")
        return self


class LogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    driver: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_./:-]{0,127}$")]
    options: Annotated[
        dict[
            Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")],
            Annotated[str, StringConstraints(max_length=4096)],
        ],
        Field(max_length=64),
    ] = Field(default_factory=dict)


_Short = Annotated[str, StringConstraints(min_length=1, max_length=255)]
_Hostname = Annotated[
    str, StringConstraints(pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,253}[a-zA-Z0-9])?$")
]
_Capability = Annotated[str, StringConstraints(max_length=44)]


class RuntimeOptions(SetOnly):
    """How the engine runs a container beyond what it runs: each maps to the Engine API field of
    the same meaning, named as Compose names it. The security policy checks the ones that could
    give a container its host (cap_add, security_opt, sysctls)."""

    _SET_ONLY: ClassVar[frozenset[str]] = frozenset(
        {
            "cap_add", "hostname", "domainname", "stop_signal", "stop_grace_period_s", "stdin_open",
            "tty", "working_dir", "init", "platform", "extra_hosts", "dns", "dns_search",
            "ulimits", "tmpfs", "shm_size_bytes", "read_only", "logging", "cap_drop",
            "security_opt", "sysctls", "pull_policy", "expose", "anonymous_volumes",
        }
    )  # fmt: skip

    hostname: _Hostname | None = Field(default=None, description="The container's host name")
    domainname: _Hostname | None = Field(default=None, description="Its domain name")
    stop_signal: (
        Annotated[str, StringConstraints(pattern=r"^(SIG)?[A-Z0-9+-]{2,12}$|^[0-9]{1,2}$")] | None
    ) = Field(default=None, description="Sent on stop instead of SIGTERM")
    stop_grace_period_s: float | None = Field(
        default=None, ge=0, le=3600, description="How long a stop waits before SIGKILL"
    )
    stdin_open: bool = Field(default=False, description="Keep stdin open (docker run -i)")
    tty: bool = Field(default=False, description="Allocate a pseudo-TTY (docker run -t)")
    working_dir: AbsolutePath | None = None
    init: bool | None = Field(
        default=None, description="Run an init process as PID 1 (None: the engine's default)"
    )
    platform: (
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")] | None
    ) = Field(default=None, description="os/arch[/variant] to pull and run, e.g. linux/amd64")
    extra_hosts: Annotated[list[_Short], Field(max_length=100)] = Field(
        default_factory=list, description='Lines for /etc/hosts: "name:address"'
    )
    dns: Annotated[list[_Short], Field(max_length=16)] = Field(default_factory=list)
    dns_search: Annotated[list[_Short], Field(max_length=16)] = Field(default_factory=list)
    ulimits: Annotated[
        dict[Annotated[str, StringConstraints(pattern=r"^[a-z]{2,16}$")], Ulimit],
        Field(max_length=32),
    ] = Field(default_factory=dict, description='e.g. {"nofile": {"soft": 1024, "hard": 4096}}')
    tmpfs: Annotated[
        list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=32)
    ] = Field(default_factory=list, description='"/path[:options]", e.g. "/run:size=64m"')
    shm_size_bytes: int | None = Field(default=None, ge=0, description="Size of /dev/shm")
    read_only: bool = Field(default=False, description="A read-only root filesystem")
    logging: LogConfig | None = Field(default=None, description="The log driver and its options")
    cap_add: Annotated[list[_Capability], Field(max_length=64)] = Field(default_factory=list)
    cap_drop: Annotated[list[_Capability], Field(max_length=64)] = Field(default_factory=list)
    security_opt: Annotated[list[_Short], Field(max_length=32)] = Field(
        default_factory=list, description='e.g. "no-new-privileges:true"'
    )
    sysctls: Annotated[
        dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_./-]{1,128}$")], _Short],
        Field(max_length=64),
    ] = Field(default_factory=dict, description="Namespaced kernel parameters")
    pull_policy: Literal["always", "missing", "never"] | None = Field(
        default=None,
        description="always: pull before each create; missing (default): pull when the host "
        "lacks the image; never: the image must be on the host",
    )
    expose: Annotated[list[_Short], Field(max_length=100)] = Field(
        default_factory=list, description='Ports the container listens on: "3000", "8000-8010/udp"'
    )
    anonymous_volumes: Annotated[list[AbsolutePath], Field(max_length=100)] = Field(
        default_factory=list,
        description="Container paths that each get a fresh volume of their own, removed with "
        "the container when it is removed with its volumes",
    )

    @field_validator("cap_add", "cap_drop")
    @classmethod
    def _caps(cls, value: list[str]) -> list[str]:
        for capability in value:
            if not _CAPABILITY.match(capability.removeprefix("CAP_")):
                raise ValueError(f"{capability!r} is not a capability name")
        return value

    @field_validator("extra_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            name, separator, address = entry.partition(":")
            if not separator or not name or not address:
                raise ValueError(f"{entry!r}: an extra host is name:address")
        return value

    @field_validator("tmpfs")
    @classmethod
    def _tmpfs(cls, value: list[str]) -> list[str]:
        for entry in value:
            path = entry.partition(":")[0]
            if not path.startswith("/") or path == "/" or ".." in path.split("/"):
                raise ValueError(f"{entry!r}: a tmpfs mounts on an absolute path other than '/'")
        return value

    @field_validator("expose")
    @classmethod
    def _expose(cls, value: list[str]) -> list[str]:
        total = 0
        for entry in value:
            match = _EXPOSE.match(entry)
            first, last = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
            if not 1 <= first <= last <= 65535:
                raise ValueError(f"{entry!r}: expose a port or range, e.g. 3000, 8000-8010/udp")
            total += last - first + 1
        if total > _MAX_EXPOSED:
            raise ValueError(f"at most {_MAX_EXPOSED} exposed ports")
        return value

    def runtime_options(self) -> dict[str, Any]:
        """These options as keyword arguments, to carry them to another spec."""
        return {name: getattr(self, name) for name in RuntimeOptions.model_fields}

    def exposed_ports(self) -> list[str]:
        """`expose` as the engine's port keys ("3000/tcp")."""
        keys: list[str] = []
        for entry in self.expose:
            match = _EXPOSE.match(entry)
            assert match is not None  # validated
            first, last = int(match[1]), int(match[2] or match[1])
            keys.extend(f"{port}/{match[3] or 'tcp'}" for port in range(first, last + 1))
        return keys


class ContainerSpec(RuntimeOptions):
    """What to run. Shared by containers and (later) each replica of a service."""

    model_config = ConfigDict(extra="forbid")

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    command: Annotated[list[Arg], Field(max_length=1000)] | None = None
    entrypoint: Annotated[list[Arg], Field(max_length=1000)] | None = None
    env: Annotated[
        dict[EnvName, Annotated[str, StringConstraints(max_length=32768)]], Field(max_length=1000)
    ] = Field(default_factory=dict)
    ports: Annotated[list[PortMapping], Field(max_length=100)] = Field(default_factory=list)
    volumes: Annotated[list[VolumeMount], Field(max_length=100)] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    restart_policy: str = Field(
        default="no", description="no | always | unless-stopped | on-failure[:N]"
    )
    labels: UserLabels = Field(default_factory=dict)
    healthcheck: HealthCheck | None = None
    networks: Annotated[list[NetworkName], Field(max_length=16)] = Field(default_factory=list)
    privileged: bool = False
    network_mode: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        default=None,
        description="bridge (default), none or host; the policy refuses container:<name>. "
        "With host or none, `networks` must be empty.",
    )
    pid_mode: Literal["host"] | None = None
    ipc_mode: Literal["private", "shareable", "host", "none"] | None = None
    devices: Annotated[
        list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)
    ] = Field(default_factory=list)
    user: str | None = None
    registry_id: str | None = Field(default=None, description="Credentials for pulling the image")
    secrets: Annotated[list[SecretUse], Field(max_length=100)] = Field(
        default_factory=list,
        description="Delivered when the container is created: files (default) or env values. "
        'Each a name alone (`"db_password"`: the file /run/secrets/db_password) or an object.',
    )
    network_aliases: Annotated[list[NetworkAlias], Field(max_length=16)] = Field(
        default_factory=list, description="Extra DNS names on each of `networks`"
    )

    @field_validator("restart_policy")
    @classmethod
    def _restart(cls, value: str) -> str:
        if not _RESTART.match(value):
            raise ValueError("no, always, unless-stopped or on-failure[:N]")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not _USER.match(value):
            raise ValueError("user is name|uid[:group|gid]")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ContainerSpec:
        seen: set[tuple[str, int, str]] = set()
        for port in self.ports:
            if port.host_port is None:
                continue
            key = (port.host_ip, port.host_port, port.protocol)
            if key in seen:
                raise ValueError(f"host port {port.host_port}/{port.protocol} is published twice")
            seen.add(key)
        targets = [v.target for v in self.volumes] + self.anonymous_volumes
        if len(targets) != len(set(targets)):
            raise ValueError("two volumes mount on the same target")
        if self.network_mode not in (None, "bridge", "none", "host", "default") and not (
            self.network_mode.startswith("container:")
        ):
            raise ValueError("network_mode is bridge, none, host or container:<name>")
        if self.networks and self.network_mode in ("host", "none"):
            raise ValueError(f"networks cannot be joined with network_mode {self.network_mode}")
        paths = [ref.path for ref in self.secrets if ref.env is None]
        if len(paths) != len(set(paths)):
            raise ValueError("two secrets are delivered to the same file")
        clashing = [ref.env for ref in self.secrets if ref.env is not None and ref.env in self.env]
        if clashing:
            raise ValueError(f"secrets and env both set {clashing}")
        return self


class ContainerCreate(ContainerSpec):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "web",
                    "image": "registry.example.com/team/app:1.0",
                    "env": {"LOG_LEVEL": "info"},
                    "ports": [{"container_port": 8080, "host_port": 8080}],
                    "resources": {"cpus": 0.5, "memory_bytes": 268435456},
                    "healthcheck": {
                        "test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/ || exit 1"],
                        "interval_s": 5,
                    },
                    "secrets": ["db_password"],
                }
            ]
        }
    )

    name: ContainerName | None = Field(default=None, description="Default: generated")
    host_id: str | None = Field(default=None, description="Default: the scheduler picks a host")
    placement: Placement = Field(default_factory=Placement)
    start: bool = Field(default=True, description="Start it once created (desired_state running)")
    project: InProject = None


class ContainerRead(RuntimeOptions):
    _SET_ONLY: ClassVar[frozenset[str]] = frozenset()  # a read shows every option

    id: str
    name: str
    project: str
    host_id: str
    service_id: str | None
    image: str
    command: list[str] | None
    entrypoint: list[str] | None
    env: dict[str, str]
    ports: list[PortMapping]
    volumes: list[VolumeMount]
    resources: Resources
    restart_policy: str
    labels: dict[str, str]
    healthcheck: HealthCheck | None
    networks: list[str]
    privileged: bool
    network_mode: str | None
    pid_mode: str | None
    ipc_mode: str | None
    devices: list[str]
    user: str | None
    secrets: list[SecretReference] = Field(description="Which secrets it receives, and how")
    network_aliases: list[str]
    managed: bool = Field(description="False for containers Berth did not create (never changed)")
    desired_state: Literal["running", "stopped", "removed"]
    state: str = Field(description="What the host reports; `missing` when it is gone")
    health: str | None
    exit_code: int | None
    docker_id: str | None
    error: str | None
    created_at: datetime
    observed_at: datetime | None
    version: int


class ContainerAccepted(BaseModel):
    operation: OperationRead
    container: ContainerRead


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: int = Field(default=10, ge=0, le=3600)


class KillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: Annotated[str, StringConstraints(pattern=r"^(SIG)?[A-Z0-9+-]{2,12}$|^[0-9]{1,2}$")] = (
        "SIGKILL"
    )
