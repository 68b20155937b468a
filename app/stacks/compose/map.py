"""Step 4: a checked Compose document -> Berth service specs, in start order, with the
networks, volumes and secrets the stack needs. Each Compose feature Berth cannot honour is
refused at the key that uses it.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
import shlex
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from docker.utils.ports import PORT_SPEC, split_port
from dotenv.parser import parse_stream

from app.containers.schemas import project_volume_name
from app.stacks.compose import check
from app.stacks.compose.errors import Problems, at
from app.stacks.compose.extend import relative_to

# A file or folder of the project by its path from the project directory, as a tar that holds
# it (a file as its only member): (tar, is a file), or None when the project has no such path.
ContentReader = Callable[[str], tuple[bytes, bool] | None]

_SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MAX_BERTH_NAME_LENGTH = 63
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")
_PROTOCOLS = ("tcp", "udp", "sctp")
# python-dotenv refuses a quoted value that holds its own quote unescaped (`'it''s'`): Berth
# has always taken everything between the outer quotes.
_QUOTED_ASSIGNMENT = re.compile(
    r"(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(?P<quote>['\"])(?P<value>.*)(?P=quote)",
    re.DOTALL,
)
_CONSTRAINT = re.compile(r"\s*(?P<attribute>[\w.-]+)\s*(?P<operator>==|!=)\s*(?P<value>.+?)\s*")
_HEALTHCHECK_KINDS = ("CMD", "CMD-SHELL", "NONE")
_RESTART_POLICIES = {
    "no": "none",
    "always": "any",
    "unless-stopped": "any",
    "on-failure": "on-failure",
}
_OWN_STORE_HINT = (
    "Berth keeps secrets in its own store: create it with POST /api/v1/secrets "
    "and declare it `external: true`"
)


@dataclass(frozen=True)
class BuildSpec:
    context: str
    dockerfile: str
    args: dict[str, str]
    target: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    cache_from: tuple[str, ...] = ()

    def options(self) -> dict[str, Any]:
        """The build options beyond context, Dockerfile and args that the file sets: the
        `image.build` parameters of the same names. Only set ones, so that an image built
        before they existed keeps its tag."""
        options: dict[str, Any] = {}
        if self.target is not None:
            options["target"] = self.target
        if self.labels:
            options["labels"] = dict(self.labels)
        if self.cache_from:
            options["cache_from"] = list(self.cache_from)
        return options


@dataclass(frozen=True)
class ComposeService:
    name: str
    spec: dict[str, Any]
    build: BuildSpec | None
    depends_on: dict[str, str]


@dataclass(frozen=True)
class ComposeProject:
    services: list[ComposeService]
    networks: list[str]
    volumes: list[str]
    secrets: list[str]
    warnings: list[str] = field(default_factory=list)  # compose.errors.Problems.warn
    stored_secrets: dict[str, str] = field(default_factory=dict)  # compose.stored
    # Relative bind mounts of a project: each content's tar by its sha256, and the volumes
    # that hold them on the host.
    contents: dict[str, bytes] = field(default_factory=dict)
    content_volumes: list[str] = field(default_factory=list)


def berth_service_name(project: str, service: str) -> str:
    """The name of the Berth service that runs Compose service `service` of stack `project`."""
    return f"{project}-{re.sub(r'[_.]', '-', service.lower())}"


def project_of(
    document: dict[str, Any],
    *,
    project: str,
    variables: Mapping[str, str],
    env_files: Mapping[str, str],
    problems: Problems,
    profiles: Collection[str] = (),
    contents: ContentReader | None = None,
) -> ComposeProject:
    """The stack that `document` (interpolated, valid by the schema) describes, with the
    services of the chosen `profiles` (and those in no profile), as Compose starts them.
    `contents` reads the project's files for relative bind mounts (only with a project)."""
    check.keys(document, check.TOP_LEVEL_KEYS, "compose", problems)
    declared = document.get("services", {})
    services = {
        name: definition for name, definition in declared.items() if _enabled(definition, profiles)
    }
    if not declared:
        problems.add("compose", "a Compose file needs at least one service under `services`")
    elif not services:
        problems.add("compose.services", "no service is enabled by the chosen profiles")
    context = _Context(
        project=project,
        variables=variables,
        env_files=env_files,
        problems=problems,
        volumes=_declared_resources("volumes", document.get("volumes", {}), project, problems),
        networks=_declared_resources("networks", document.get("networks", {}), project, problems),
        secrets=_declared_secrets(document.get("secrets", {}), problems),
        service_names=frozenset(services),
        left_out=frozenset(declared) - frozenset(services),
        healthchecked=frozenset(
            name for name, definition in services.items() if _has_healthcheck(definition)
        ),
        one_shot=_awaited_to_complete(services),
        read_content=contents,
    )
    compose_services = _services(services, context)
    problems.raise_if_any()
    return ComposeProject(
        services=compose_services,
        networks=_created_networks(compose_services, context),
        volumes=[volume.engine_name for volume in context.volumes.values() if not volume.external],
        secrets=list(
            dict.fromkeys(
                reference["name"]
                for service in compose_services
                for reference in service.spec.get("secrets", [])
            )
        ),
        contents=context.contents,
        content_volumes=list(context.content_volumes),
    )


@dataclass(frozen=True)
class _Resource:
    """A top-level network or volume: its name on the engine, and whether the stack creates it."""

    engine_name: str
    external: bool


@dataclass(frozen=True)
class _Context:
    project: str
    variables: Mapping[str, str]
    env_files: Mapping[str, str]
    problems: Problems
    volumes: dict[str, _Resource]
    networks: dict[str, _Resource]
    secrets: dict[str, str]  # Compose secret key -> Berth secret name
    service_names: frozenset[str]
    left_out: frozenset[str]  # services of profiles that were not chosen
    healthchecked: frozenset[str]
    one_shot: frozenset[str]  # services another waits for with service_completed_successfully
    read_content: ContentReader | None = None  # only in a project
    contents: dict[str, bytes] = field(default_factory=dict)  # by sha256, as read
    content_volumes: dict[str, None] = field(default_factory=dict)  # in order, once each


def _pairs(value: dict[str, Any] | list[str], loc: str) -> Iterator[tuple[str, str | None, str]]:
    """(key, value, loc) of a Compose list-or-mapping (`["A=1", "B"]` or `{A: 1, B: null}`);
    the value is None where only the key is given."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, None if item is None else check.text(item), at(loc, key)
    else:
        for index, item in enumerate(value):
            key, equals, text = item.partition("=")
            yield key, text if equals else None, at(loc, index)


def _from_variables(
    value: dict[str, Any] | list[str], loc: str, variables: Mapping[str, str]
) -> dict[str, str]:
    """A list-or-mapping of values; a key given alone takes its value from `variables`, and
    is left out when there is none (as Compose leaves out what the shell does not define)."""
    resolved: dict[str, str] = {}
    for key, text, _ in _pairs(value, loc):
        if text is not None:
            resolved[key] = text
        elif key in variables:
            resolved[key] = variables[key]
    return resolved


# --- Top-level declarations -------------------------------------------------------------------


def _declared_resources(
    section: str, declarations: dict[str, Any], project: str, problems: Problems
) -> dict[str, _Resource]:
    """The top-level `networks` or `volumes` by Compose key."""
    supported_driver = "bridge" if section == "networks" else "local"
    resources: dict[str, _Resource] = {}
    for key, declared in declarations.items():
        loc = at(f"compose.{section}", key)
        declaration = declared or {}
        check.keys(declaration, check.RESOURCE_KEYS, loc, problems)
        driver = declaration.get("driver", supported_driver)
        if driver != supported_driver:
            problems.unsupported(
                at(loc, "driver"), f"driver: {driver}", f"only '{supported_driver}' is"
            )
        resources[key] = _resource(key, declaration, loc, project, problems)
    return resources


def _resource(
    key: str, declaration: dict[str, Any], loc: str, project: str, problems: Problems
) -> _Resource:
    external = declaration.get("external", False)
    name = declaration.get("name")
    if isinstance(external, dict):  # the deprecated `external: {name: ...}` form
        name = external.get("name", name)
        external = True
    if check.boolean(external, at(loc, "external"), problems):
        return _Resource(engine_name=name or key, external=True)
    return _Resource(engine_name=name or f"{project}_{key}", external=False)


def _declared_secrets(declarations: dict[str, Any], problems: Problems) -> dict[str, str]:
    """Compose secret key -> the existing Berth secret it refers to."""
    secrets: dict[str, str] = {}
    for key, declaration in declarations.items():
        loc = at("compose.secrets", key)
        check.keys(declaration, check.SECRET_KEYS, loc, problems)
        for source in ("file", "environment", "content"):
            if source in declaration:
                problems.add(at(loc, source), _OWN_STORE_HINT)
        external = declaration.get("external")
        name = declaration.get("name")
        if isinstance(external, dict):  # the deprecated `external: {name: ...}` form
            name = external.get("name", name)
        secrets[key] = name or key
    return secrets


def _created_networks(services: list[ComposeService], context: _Context) -> list[str]:
    default = f"{context.project}_default"
    on_default = any(default in service.spec["networks"] for service in services)
    created = [network.engine_name for network in context.networks.values() if not network.external]
    if on_default and "default" not in context.networks:
        created.insert(0, default)
    return created


# --- Services ---------------------------------------------------------------------------------


def _services(declarations: dict[str, Any], context: _Context) -> list[ComposeService]:
    services: list[ComposeService] = []
    compose_name_by_berth_name: dict[str, str] = {}
    for name, definition in declarations.items():
        loc = at("compose.services", name)
        berth_name = berth_service_name(context.project, name)
        if not _SERVICE_NAME.match(name):
            context.problems.add(loc, "a service name starts with a letter or digit")
        elif len(berth_name) > _MAX_BERTH_NAME_LENGTH:
            context.problems.add(
                loc, f"the Berth service name '{berth_name}' is longer than 63 characters"
            )
        elif berth_name in compose_name_by_berth_name:
            context.problems.add(
                loc,
                f"becomes Berth service '{berth_name}', "
                f"as service '{compose_name_by_berth_name[berth_name]}' does",
            )
        compose_name_by_berth_name.setdefault(berth_name, name)
        services.append(_service(name, definition, loc, context))
    return _start_order(services, context.problems)


def _service(name: str, definition: dict[str, Any], loc: str, context: _Context) -> ComposeService:
    problems = context.problems
    check.keys(definition, check.SERVICE_KEYS, loc, problems)
    build = (
        _build(definition["build"], at(loc, "build"), context) if "build" in definition else None
    )
    spec: dict[str, Any] = {"image": definition.get("image")}
    if spec["image"] is None and build is None:
        problems.add(loc, "a service needs `image` or `build`")
    for key in ("command", "entrypoint"):
        if definition.get(key) is not None:
            spec[key] = _command(definition[key], at(loc, key), problems)
    env = _environment(definition, loc, context)
    if env:
        spec["env"] = env
    if definition.get("ports"):
        spec["ports"] = _ports(definition["ports"], at(loc, "ports"), problems)
    if definition.get("volumes"):
        spec["volumes"], anonymous = _volumes(definition["volumes"], at(loc, "volumes"), context)
        if anonymous:
            spec["anonymous_volumes"] = anonymous
    spec["networks"], spec["aliases"] = _service_networks(name, definition, loc, context)
    if "restart" in definition:
        spec["restart_policy"] = _restart_policy(
            definition["restart"], at(loc, "restart"), problems
        )
    labels = _labels(definition.get("labels", {}), at(loc, "labels"), problems)
    if "user" in definition:
        spec["user"] = definition["user"]
    if definition.get("deploy"):
        deploy = _deploy(definition["deploy"], at(loc, "deploy"), problems)
        labels |= deploy.pop("labels", {})
        spec |= deploy
    spec |= _runtime(definition, loc, problems)
    if "container_name" in definition and spec.get("replicas", 1) > 1:
        problems.add(
            at(loc, "container_name"),
            "container_name names one container: it needs a single replica",
        )
    if name in context.one_shot:
        _one_shot(definition, spec, loc, problems)
    if labels:
        spec["labels"] = labels
    if definition.get("secrets"):
        spec["secrets"] = _service_secrets(definition["secrets"], at(loc, "secrets"), context)
    if "healthcheck" in definition:
        spec["healthcheck"] = _healthcheck(
            definition["healthcheck"], at(loc, "healthcheck"), problems
        )
    depends_on = _depends_on(definition.get("depends_on", []), at(loc, "depends_on"), context)
    return ComposeService(name=name, spec=spec, build=build, depends_on=depends_on)


def _build(value: str | dict[str, Any], loc: str, context: _Context) -> BuildSpec:
    if isinstance(value, str):
        return BuildSpec(context=value, dockerfile="Dockerfile", args={})
    check.keys(value, check.BUILD_KEYS, loc, context.problems)
    return BuildSpec(
        context=value.get("context", "."),
        dockerfile=value.get("dockerfile", "Dockerfile"),
        args=_from_variables(value.get("args", {}), at(loc, "args"), context.variables),
        target=value.get("target"),
        labels=_labels(value.get("labels", {}), at(loc, "labels"), context.problems),
        cache_from=tuple(value.get("cache_from", [])),
    )


# --- Runtime options --------------------------------------------------------------------------


def _runtime(definition: dict[str, Any], loc: str, problems: Problems) -> dict[str, Any]:
    """The spec's runtime options (ContainerSpec's RuntimeOptions) a service sets; the
    security policy checks them with the rest of the spec."""
    spec: dict[str, Any] = {
        key: definition[key]
        for key in (
            "container_name", "hostname", "domainname", "stop_signal", "working_dir",
            "platform", "cap_add", "cap_drop", "security_opt",
        )
        if key in definition
    }  # fmt: skip
    for key in ("stdin_open", "tty", "read_only", "init"):
        if key in definition:
            spec[key] = check.boolean(definition[key], at(loc, key), problems)
    for key in ("dns", "dns_search", "tmpfs"):
        if key in definition:
            value = definition[key]
            spec[key] = [value] if isinstance(value, str) else value
    if "stop_grace_period" in definition:
        spec["stop_grace_period_s"] = check.duration_seconds(
            definition["stop_grace_period"], at(loc, "stop_grace_period"), problems
        )
    if "shm_size" in definition:
        spec["shm_size_bytes"] = check.memory_bytes(
            definition["shm_size"], at(loc, "shm_size"), problems
        )
    if "extra_hosts" in definition:
        spec["extra_hosts"] = _extra_hosts(definition["extra_hosts"])
    if "sysctls" in definition:
        spec["sysctls"] = {
            key: text or "" for key, text, _ in _pairs(definition["sysctls"], at(loc, "sysctls"))
        }
    if "ulimits" in definition:
        spec["ulimits"] = {
            name: {"soft": limit, "hard": limit} if isinstance(limit, int) else limit
            for name, limit in definition["ulimits"].items()
        }
    if "logging" in definition:
        logging = definition["logging"]
        check.keys(logging, check.LOGGING_KEYS, at(loc, "logging"), problems)
        spec["logging"] = {
            "driver": logging.get("driver", "json-file"),
            "options": {key: check.text(v) for key, v in (logging.get("options") or {}).items()},
        }
    if "pull_policy" in definition:
        spec["pull_policy"] = _pull_policy(
            definition["pull_policy"], at(loc, "pull_policy"), problems
        )
    if "expose" in definition:
        spec["expose"] = [check.text(port) for port in definition["expose"]]
    return spec


def _extra_hosts(value: dict[str, Any] | list[str]) -> list[str]:
    """Compose's `name:address`, `name=address` or {name: address(es)} as `name:address`."""
    if isinstance(value, dict):
        return [
            f"{name}:{address}"
            for name, addresses in value.items()
            for address in (addresses if isinstance(addresses, list) else [addresses])
        ]
    return [item.replace("=", ":", 1) if "=" in item else item for item in value]


# Compose's pull policies by Berth's: `build` and `if_not_present` pull what is missing.
_PULL_POLICIES = {
    "always": "always",
    "missing": "missing",
    "if_not_present": "missing",
    "build": "missing",
    "never": "never",
}


def _pull_policy(value: str, loc: str, problems: Problems) -> str | None:
    policy = _PULL_POLICIES.get(value)
    if policy is None:
        problems.unsupported(loc, f"pull_policy: {value}", "use always, missing or never")
    return policy


def _one_shot(
    definition: dict[str, Any], spec: dict[str, Any], loc: str, problems: Problems
) -> None:
    """A service another waits to complete runs once: Compose does not restart it unless it
    says so, and only `on-failure` is a restart that still ends."""
    spec["one_shot"] = True
    if "restart_policy" not in spec:
        spec["restart_policy"] = "none"
    elif spec["restart_policy"] == "any":
        problems.add(
            at(loc, "restart"),
            "another service waits for this one to complete (service_completed_successfully): "
            "it cannot restart always",
        )


def _command(value: str | list[str], loc: str, problems: Problems) -> list[str]:
    if isinstance(value, list):
        return value
    try:
        return shlex.split(value)
    except ValueError as exc:
        problems.add(loc, f"cannot split into arguments: {exc}")
        return []


def _labels(value: dict[str, Any] | list[str], loc: str, problems: Problems) -> dict[str, str]:
    labels: dict[str, str] = {}
    for key, text, key_loc in _pairs(value, loc):
        if key.startswith("berth."):
            problems.add(key_loc, f"label '{key}': labels starting with 'berth.' are Berth's own")
        labels[key] = text or ""
    return labels


# --- Environment ------------------------------------------------------------------------------


def _environment(definition: dict[str, Any], loc: str, context: _Context) -> dict[str, str]:
    """`env_file` contents, overridden by `environment`."""
    env: dict[str, str] = {}
    if "env_file" in definition:
        for path, required, file_loc in _env_file_references(
            definition["env_file"], at(loc, "env_file"), context.problems
        ):
            if path in context.env_files:
                env |= _env_file(context.env_files[path], path, file_loc, context)
            elif required:
                context.problems.add(
                    file_loc,
                    f"env_file '{path}' was not uploaded: upload it with the Compose file "
                    "(or mark it `required: false`)",
                )
    environment_loc = at(loc, "environment")
    environment = definition.get("environment", {})
    for key, _, key_loc in _pairs(environment, environment_loc):
        if not _ENV_NAME.match(key):
            context.problems.add(key_loc, f"'{key}' is not a valid environment variable name")
    env |= _from_variables(environment, environment_loc, context.variables)
    return env


def _env_file_references(
    value: str | list[str | dict[str, Any]], loc: str, problems: Problems
) -> Iterator[tuple[str, bool, str]]:
    """(path, required, loc) of each file an `env_file` names."""
    if isinstance(value, str):
        yield value, True, loc
        return
    for index, item in enumerate(value):
        item_loc = at(loc, index)
        if isinstance(item, str):
            yield item, True, item_loc
        else:
            check.keys(item, check.ENV_FILE_KEYS, item_loc, problems)
            required = check.boolean(item.get("required", True), at(item_loc, "required"), problems)
            yield item["path"], required, item_loc


def _env_file(content: str, path: str, loc: str, context: _Context) -> dict[str, str]:
    """The variables of an uploaded env file, as python-dotenv reads it (without interpolation);
    a key given alone takes its value from `variables`."""
    env: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(content)):
        statement = binding.original.string
        stripped = statement.lstrip()
        # A statement's text starts with the blank lines before it.
        number = binding.original.line + statement[: len(statement) - len(stripped)].count("\n")
        key, value = binding.key, binding.value
        if binding.error and (quoted := _QUOTED_ASSIGNMENT.fullmatch(stripped.rstrip())):
            key, value = quoted["key"], quoted["value"]
            if quoted["quote"] == '"':
                value = value.replace("\\n", "\n").replace('\\"', '"')
        elif binding.key is None and not binding.error:
            continue  # a blank line or a comment
        if key is None or not _ENV_NAME.match(key):
            context.problems.add(loc, f"env_file '{path}' line {number}: expected KEY=VALUE")
        elif value is not None:
            env[key] = value
        elif key in context.variables:
            env[key] = context.variables[key]
    return env


# --- Ports ------------------------------------------------------------------------------------


def _ports(items: list[Any], loc: str, problems: Problems) -> list[dict[str, Any]]:
    return [
        port
        for index, item in enumerate(items)
        for port in (
            _long_port(item, at(loc, index), problems)
            if isinstance(item, dict)
            else _short_port(check.text(item), at(loc, index), problems)
        )
    ]


def _short_port(text: str, loc: str, problems: Problems) -> list[dict[str, Any]]:
    """`[host_ip:][published[-end]:]target[-end][/protocol]`, read by the docker SDK; Berth
    checks the address, the protocol and the port numbers itself."""
    address, slash, protocol = text.strip().partition("/")
    match = PORT_SPEC.match(address)
    if (
        match is None
        or (slash and not re.fullmatch(r"\w+", protocol))
        or (match["ext_end"] and not match["ext"])  # "-8001:5000"
        or not _is_host_ip(match["host"], address)
    ):
        problems.add(loc, f'invalid port {text!r} (e.g. "8000:5000", "127.0.0.1:8000:5000/udp")')
        return []
    protocol = protocol or "tcp"
    if protocol not in _PROTOCOLS:
        problems.add(loc, f"protocol '{protocol}' is not one of {', '.join(_PROTOCOLS)}")
        return []
    for first, last in (match.group("int", "int_end"), match.group("ext", "ext_end")):
        if first and not 1 <= int(first) <= int(last or first) <= 65535:
            shown = f"{first}-{last}" if last else first
            problems.add(loc, f"invalid port range '{shown}' (ports are 1 to 65535)")
            return []
    pairs = _port_pairs(address)
    if pairs is None:
        problems.add(loc, "the published and the container port ranges differ in length")
        return []
    host_ip = match["host"] or ""
    return [
        {
            "container_port": int(target),
            "host_port": None if host is None else int(host),
            "protocol": protocol,
            "host_ip": host_ip,
        }
        for host, target in pairs
    ]


def _port_pairs(address: str) -> list[tuple[str | None, str]] | None:
    """(published, target) port pairs by the docker SDK's split_port; None when the two ranges
    differ in length."""
    try:
        # Without an address, split_port reads an empty published port (":5000") as a range
        # of another length; Berth reads it as no published port.
        targets, published = split_port(address.removeprefix(":"))
    except ValueError:  # for a spec PORT_SPEC matches: ranges of unequal length
        return None
    host_ports = [
        entry[1] if isinstance(entry, tuple) else entry
        for entry in published or [None] * len(targets)
    ]
    # A published range for one target is split_port's "any port of the range": not Berth's.
    if any(port is not None and "-" in port for port in host_ports):
        return None
    return list(zip(host_ports, targets, strict=True))


def _is_host_ip(host: str | None, address: str) -> bool:
    """Whether `host` is an IP address, in brackets if it is IPv6: split_port's pattern takes
    any run of hex digits, dots and colons, with or without brackets."""
    if host is None:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.startswith(f"[{host}]:") or (ip.version == 4 and address[0] != "[")


def _long_port(item: dict[str, Any], loc: str, problems: Problems) -> list[dict[str, Any]]:
    check.keys(item, check.PORT_KEYS, loc, problems)
    mode = item.get("mode", "host")
    if mode == "ingress":
        problems.unsupported(
            at(loc, "mode"), "mode: ingress", "Berth publishes on each replica's host: use host"
        )
    elif mode != "host":
        problems.add(at(loc, "mode"), f"port mode '{mode}' is neither host nor ingress")
    protocol = item.get("protocol", "tcp")
    if protocol not in _PROTOCOLS:
        problems.add(at(loc, "protocol"), f"protocol '{protocol}' is not one of tcp, udp, sctp")
    if "target" not in item:
        problems.add(loc, "a port needs a `target` (the container port)")
        return []
    target = _port_number(item["target"], at(loc, "target"), problems)
    published = item.get("published")
    host_port = (
        None if published is None else _port_number(published, at(loc, "published"), problems)
    )
    host_ip = item.get("host_ip", "")
    return [
        {"container_port": target, "host_port": host_port, "protocol": protocol, "host_ip": host_ip}
    ]


def _port_number(value: Any, loc: str, problems: Problems) -> int | None:
    number = check.integer(value, loc, problems)
    if number is not None and not 1 <= number <= 65535:
        problems.add(loc, f"port {number} is not between 1 and 65535")
    return number


# --- Volumes ----------------------------------------------------------------------------------


def _volumes(
    items: list[Any], loc: str, context: _Context
) -> tuple[list[dict[str, Any]], list[str]]:
    """The mounts, and the container paths of anonymous volumes (`- /data`): each replica's
    container gets a fresh volume of its own there, as Compose gives each container."""
    mounts: list[dict[str, Any]] = []
    anonymous: list[str] = []
    for index, item in enumerate(items):
        item_loc = at(loc, index)
        if isinstance(item, dict):
            mount = _long_volume(item, item_loc, context)
        else:
            mount = _short_volume(item, item_loc, context)
        if mount is None:
            continue
        if "source" in mount:
            mounts.append(mount)
        elif not mount["target"].startswith("/"):
            context.problems.add(item_loc, "the container path must be absolute")
        else:
            anonymous.append(mount["target"])
    return mounts, anonymous


def _short_volume(text: str, loc: str, context: _Context) -> dict[str, Any] | None:
    """A mount, or {"target": path} for an anonymous volume."""
    parts = text.split(":")
    if len(parts) == 1:
        return {"target": text}
    if len(parts) > 3:
        context.problems.add(loc, f'invalid volume {text!r} (e.g. "data:/var/lib/data:ro")')
        return None
    options = parts[2].split(",") if len(parts) == 3 else []
    for option in options:
        if option not in ("ro", "rw"):
            context.problems.unsupported(loc, f"volume option {option}")
    source = parts[0]
    kind = "bind" if source.startswith(("/", ".", "~")) else "volume"
    return _mount(kind, source, parts[1], "ro" in options, loc, context)


def _long_volume(item: dict[str, Any], loc: str, context: _Context) -> dict[str, Any] | None:
    check.keys(item, check.VOLUME_KEYS, loc, context.problems)
    kind = item["type"]
    if kind not in ("volume", "bind"):
        context.problems.unsupported(at(loc, "type"), f"type: {kind}")
        return None
    if not item.get("source"):
        if kind == "volume":
            return {"target": item.get("target", "")}
        context.problems.add(loc, "a bind mount needs a `source`")
        return None
    read_only = check.boolean(item.get("read_only", False), at(loc, "read_only"), context.problems)
    return _mount(kind, item["source"], item.get("target", ""), read_only, loc, context)


def _mount(
    kind: str, source: str, target: str, read_only: bool, loc: str, context: _Context
) -> dict[str, Any] | None:
    if not target.startswith("/"):
        context.problems.add(loc, "the container path must be absolute")
        return None
    if kind == "bind":
        if not source.startswith("/"):
            return _project_mount(source, target, read_only, loc, context)
        return {"source": source, "target": target, "read_only": read_only}
    volume = context.volumes.get(source)
    if volume is None:
        context.problems.add(loc, f"volume '{source}' is not declared in the top-level `volumes`")
        return None
    return {"source": volume.engine_name, "target": target, "read_only": read_only}


def _project_mount(
    source: str, target: str, read_only: bool, loc: str, context: _Context
) -> dict[str, Any] | None:
    """A relative bind mount: the project's file or folder, in a volume Berth fills with it.
    (`extend` rewrote the paths of other files' services to start from the project directory.)"""
    if context.read_content is None:
        context.problems.add(
            loc,
            "relative bind mounts need a path on the host; use an absolute path, or send the "
            "project directory (a tar of it as the multipart part `project`)",
        )
        return None
    if source.startswith("~"):
        context.problems.add(loc, "`~` is no path in the project: use an absolute path")
        return None
    path = relative_to("", source)
    if path is None:
        context.problems.add(loc, f"'{source}' is outside the project")
        return None
    found = context.read_content(path)
    if found is None:
        context.problems.add(loc, f"the project has no file or folder '{path}'")
        return None
    data, is_file = found
    sha256 = hashlib.sha256(data).hexdigest()
    volume = project_volume_name(context.project, file=is_file, sha256=sha256)
    context.contents[sha256] = data
    context.content_volumes[volume] = None
    return {
        "source": volume,
        "target": target,
        "read_only": read_only,
        "content": {"sha256": sha256, "file": is_file},
    }


# --- Networks, secrets, dependencies ----------------------------------------------------------


def _service_networks(
    name: str, definition: dict[str, Any], loc: str, context: _Context
) -> tuple[list[str], list[str]]:
    """The engine names of the service's networks, and its aliases on them."""
    networks_loc = at(loc, "networks")
    attached = definition.get("networks") or ["default"]
    aliases = [name]
    engine_names: list[str] = []
    for index, network in enumerate(attached):
        network_loc = at(networks_loc, network if isinstance(attached, dict) else index)
        options = attached[network] if isinstance(attached, dict) else None
        if options:
            check.keys(options, check.SERVICE_NETWORK_KEYS, network_loc, context.problems)
            aliases.extend(options.get("aliases", []))
        declared = context.networks.get(network)
        if declared is not None:
            engine_names.append(declared.engine_name)
        elif network == "default":
            engine_names.append(f"{context.project}_default")
        else:
            context.problems.add(
                network_loc, f"network '{network}' is not declared in the top-level `networks`"
            )
    return engine_names, list(dict.fromkeys(aliases))


def _service_secrets(items: list[Any], loc: str, context: _Context) -> list[dict[str, Any]]:
    references: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        item_loc = at(loc, index)
        options: dict[str, Any] = {"source": item} if isinstance(item, str) else item
        check.keys(options, check.SERVICE_SECRET_KEYS, item_loc, context.problems)
        source = options.get("source")
        if source is None:
            context.problems.add(item_loc, "a secret needs a `source`")
            continue
        if source not in context.secrets:
            context.problems.add(
                item_loc, f"secret '{source}' is not declared in the top-level `secrets`"
            )
            continue
        reference: dict[str, Any] = {"name": context.secrets[source]}
        if "target" in options:
            reference["target"] = options["target"]
        for key in ("uid", "gid"):
            if key in options:
                reference[key] = check.integer(options[key], at(item_loc, key), context.problems)
        if "mode" in options:
            reference["mode"] = _file_mode(options["mode"], at(item_loc, "mode"), context.problems)
        references.append(reference)
    return references


def _file_mode(value: Any, loc: str, problems: Problems) -> int | None:
    """A YAML integer is taken as is (YAML already read `0440` as octal); a string is octal."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value).removeprefix("0o"), 8)
    except ValueError:
        problems.add(loc, f"invalid file mode {value!r} (e.g. 0440)")
        return None


def _depends_on(value: list[str] | dict[str, Any], loc: str, context: _Context) -> dict[str, str]:
    conditions = (
        dict.fromkeys(value, "service_started")
        if isinstance(value, list)
        else {dependency: options["condition"] for dependency, options in value.items()}
    )
    depends_on: dict[str, str] = {}
    for index, (dependency, condition) in enumerate(conditions.items()):
        dependency_loc = at(loc, index if isinstance(value, list) else dependency)
        condition_loc = at(dependency_loc, "condition")
        if isinstance(value, dict):
            check.keys(value[dependency], check.DEPENDS_ON_KEYS, dependency_loc, context.problems)
        if dependency in context.left_out:
            context.problems.add(
                dependency_loc, f"service '{dependency}' is in a profile that was not chosen"
            )
        elif dependency not in context.service_names:
            context.problems.add(dependency_loc, f"service '{dependency}' is not defined")
        elif condition == "service_healthy" and dependency not in context.healthchecked:
            context.problems.add(
                condition_loc, f"service '{dependency}' has no healthcheck to become healthy by"
            )
        else:
            depends_on[dependency] = condition
    return depends_on


def _enabled(definition: Any, profiles: Collection[str]) -> bool:
    """Compose's rule: a service in no profile always runs, else when one of its is chosen."""
    own = definition.get("profiles") if isinstance(definition, dict) else None
    return not own or any(profile in profiles for profile in own)


def _awaited_to_complete(services: dict[str, Any]) -> frozenset[str]:
    return frozenset(
        dependency
        for definition in services.values()
        if isinstance(definition, dict) and isinstance(definition.get("depends_on"), dict)
        for dependency, options in definition["depends_on"].items()
        if (options or {}).get("condition") == "service_completed_successfully"
    )


def _has_healthcheck(definition: Any) -> bool:
    healthcheck = definition.get("healthcheck") if isinstance(definition, dict) else None
    if not isinstance(healthcheck, dict) or healthcheck.get("disable") in (True, "true"):
        return False
    test = healthcheck.get("test")
    return bool(test) and test != ["NONE"]


def _start_order(services: list[ComposeService], problems: Problems) -> list[ComposeService]:
    """`services` with each after its dependencies, otherwise in file order."""
    ordered: list[ComposeService] = []
    started: set[str] = set()
    waiting = list(services)
    while waiting:
        ready = next((s for s in waiting if started.issuperset(s.depends_on)), None)
        if ready is None:
            problems.add("compose.services", f"depends_on forms a cycle: {_cycle(waiting)}")
            return ordered + waiting
        ordered.append(ready)
        started.add(ready.name)
        waiting.remove(ready)
    return ordered


def _cycle(waiting: list[ComposeService]) -> str:
    """A dependency cycle among `waiting`, where every service waits for another of them."""
    by_name = {service.name: service for service in waiting}
    path: list[str] = []
    current = waiting[0].name
    while current not in path:
        path.append(current)
        current = next(name for name in by_name[current].depends_on if name in by_name)
    return " -> ".join([*path[path.index(current) :], current])


# --- Health, restart, deploy ------------------------------------------------------------------


def _healthcheck(value: dict[str, Any], loc: str, problems: Problems) -> dict[str, Any]:
    check.keys(value, check.HEALTHCHECK_KEYS, loc, problems)
    if check.boolean(value.get("disable", False), at(loc, "disable"), problems):
        return {"test": ["NONE"]}
    test = value.get("test")
    if isinstance(test, str):
        healthcheck: dict[str, Any] = {"test": ["CMD-SHELL", test]}
    elif test and test[0] in _HEALTHCHECK_KINDS:
        healthcheck = {"test": test}
    else:
        problems.add(
            at(loc, "test"),
            "a healthcheck test is a string, or a list starting with CMD, CMD-SHELL or NONE "
            "(Berth does not inherit the image's HEALTHCHECK)",
        )
        healthcheck = {}
    for key in ("interval", "timeout", "start_period"):
        if key in value:
            healthcheck[f"{key}_s"] = check.duration_seconds(value[key], at(loc, key), problems)
    if "retries" in value:
        healthcheck["retries"] = check.integer(value["retries"], at(loc, "retries"), problems)
    return healthcheck


def _restart_policy(value: str, loc: str, problems: Problems) -> str | None:
    policy = _RESTART_POLICIES.get(
        value.split(":", 1)[0] if value.startswith("on-failure:") else value
    )
    if policy is None:
        problems.add(loc, f"restart '{value}' is not no, always, unless-stopped or on-failure[:N]")
    return policy


def _deploy(deploy: dict[str, Any], loc: str, problems: Problems) -> dict[str, Any]:
    """The spec fields that `deploy` sets, with its `labels` under "labels" for merging."""
    check.keys(deploy, check.DEPLOY_KEYS, loc, problems)
    fields: dict[str, Any] = {}
    mode = deploy.get("mode", "replicated")
    if mode == "global":
        problems.unsupported(at(loc, "mode"), "mode: global", "set `replicas` and placement")
    elif mode != "replicated":
        problems.add(at(loc, "mode"), f"mode '{mode}' is neither replicated nor global")
    if "replicas" in deploy:
        fields["replicas"] = check.integer(deploy["replicas"], at(loc, "replicas"), problems)
    if "labels" in deploy:
        fields["labels"] = _labels(deploy["labels"], at(loc, "labels"), problems)
    if "resources" in deploy:
        fields["resources"] = _resources(deploy["resources"], at(loc, "resources"), problems)
    if "restart_policy" in deploy:
        restart_policy = deploy["restart_policy"]
        restart_loc = at(loc, "restart_policy")
        check.keys(restart_policy, check.RESTART_POLICY_KEYS, restart_loc, problems)
        condition = restart_policy.get("condition", "any")
        if condition not in ("none", "on-failure", "any"):
            problems.add(
                at(restart_loc, "condition"), f"'{condition}' is not none, on-failure or any"
            )
        fields["restart_policy"] = condition
    if "update_config" in deploy:
        fields["update_config"] = _update_config(
            deploy["update_config"], at(loc, "update_config"), problems
        )
    if "rollback_config" in deploy:
        # Compose's default order, as for update_config (which the stack's plan sets).
        fields["rollback_config"] = {
            "order": "stop-first",
            **_update_config(deploy["rollback_config"], at(loc, "rollback_config"), problems),
        }
    if "placement" in deploy:
        fields["placement"] = _placement(deploy["placement"], at(loc, "placement"), problems)
    return fields


def _resources(value: dict[str, Any], loc: str, problems: Problems) -> dict[str, Any]:
    check.keys(value, check.RESOURCES_KEYS, loc, problems)
    resources = _amounts(value.get("limits", {}), at(loc, "limits"), problems)
    if "reservations" in value:
        resources["reservations"] = _amounts(
            value["reservations"], at(loc, "reservations"), problems
        )
    return resources


def _amounts(value: dict[str, Any], loc: str, problems: Problems) -> dict[str, Any]:
    """The CPUs and memory of `limits` or `reservations`."""
    check.keys(value, check.LIMITS_KEYS, loc, problems)
    amounts: dict[str, Any] = {}
    if "cpus" in value:
        try:
            amounts["cpus"] = float(value["cpus"])
        except ValueError:
            problems.add(at(loc, "cpus"), f"invalid number of CPUs {value['cpus']!r}")
    if "memory" in value:
        amounts["memory_bytes"] = check.memory_bytes(value["memory"], at(loc, "memory"), problems)
    return amounts


def _update_config(value: dict[str, Any], loc: str, problems: Problems) -> dict[str, Any]:
    check.keys(value, check.UPDATE_CONFIG_KEYS, loc, problems)
    update: dict[str, Any] = {}
    if "parallelism" in value:
        update["parallelism"] = check.integer(
            value["parallelism"], at(loc, "parallelism"), problems
        )
    for key in ("delay", "monitor"):
        if key in value:
            update[f"{key}_s"] = check.duration_seconds(value[key], at(loc, key), problems)
    if "order" in value:
        update["order"] = value["order"]
    if "failure_action" in value:
        action = value["failure_action"]
        if action == "continue":
            problems.unsupported(at(loc, "failure_action"), "failure_action: continue")
        elif action not in ("rollback", "pause"):
            problems.add(at(loc, "failure_action"), f"'{action}' is not rollback or pause")
        update["failure_action"] = action
    return update


def _placement(value: dict[str, Any], loc: str, problems: Problems) -> dict[str, Any]:
    check.keys(value, check.PLACEMENT_KEYS, loc, problems)
    constraints_loc = at(loc, "constraints")
    placement: dict[str, Any] = {
        "constraints": [
            rule
            for index, text in enumerate(value.get("constraints", []))
            if (rule := _constraint(text, at(constraints_loc, index), problems)) is not None
        ]
    }
    if "max_replicas_per_node" in value:
        placement["max_per_host"] = check.integer(
            value["max_replicas_per_node"], at(loc, "max_replicas_per_node"), problems
        )
    return placement


def _constraint(text: str, loc: str, problems: Problems) -> str | None:
    """A Swarm placement constraint as a Berth host rule: node labels are host labels."""
    match = _CONSTRAINT.fullmatch(text)
    if match is None:
        problems.add(loc, f"invalid constraint {text!r} (e.g. node.labels.zone==a)")
        return None
    attribute, operator, value = match.group("attribute", "operator", "value")
    if attribute.startswith("node.labels."):
        return f"{attribute.removeprefix('node.labels.')}{operator}{value}"
    if attribute == "node.hostname":
        return f"host.name{operator}{value}"
    if attribute == "node.id":
        return f"host.id{operator}{value}"
    problems.unsupported(
        loc, f"constraint on {attribute}", "use node.labels, node.hostname or node.id"
    )
    return None
