"""Compose file -> Berth service specs: pure parsing and checking, no I/O, no engine.

`parse` reads a file of the Compose Specification in four passes: YAML (read as YAML 1.2,
as Compose does), `${...}` interpolation from the given variables only (strict: an unset
variable without a default is an error, never an empty string), validation against the
official Compose Specification JSON schema, then mapping to Berth's ServiceSpec shape,
with an error for every Compose feature Berth cannot honour.

Supported service keys: image, build (context, dockerfile, args), command, entrypoint,
environment, env_file, ports (host mode), volumes (named volumes and absolute bind mounts),
networks (with aliases), depends_on (service_started, service_healthy), healthcheck,
restart, labels, user, secrets (Berth's own store), deploy (mode: replicated, replicas,
labels, resources.limits cpus/memory, restart_policy.condition, update_config, placement).

Accepted and ignored: the top-level `version` and `name`; a service's `expose` (it only
documents ports: services on a stack network reach every port anyway); the `name` and
`app_protocol` of a long-syntax port; `required`/`restart` of a depends_on entry; `labels`
of a top-level network or volume; and `x-*` extension keys wherever a mapping is.
Everything else is reported as not supported by Berth, at the key that uses it.

The schema in compose-spec.json is compose-spec/compose-spec schema/compose-spec.json at
commit b2835e8acc1e42e7aecbc27a9bc4a1fc66ef21ba, saved verbatim.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft201909Validator, ValidationError
from jsonschema.exceptions import best_match

_SCHEMA_PATH = Path(__file__).with_name("compose-spec.json")
_SERVICE_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MAX_BERTH_NAME_LENGTH = 63
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,255}$")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED_EXPRESSION = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<operator>:?[-?+])(?P<argument>.*))?", re.DOTALL
)
_SHORT_PORT = re.compile(
    r"(?:(?:\[(?P<ipv6>[0-9a-fA-F:.]+)\]|(?P<ipv4>\d{1,3}(?:\.\d{1,3}){3})):)?"
    r"(?:(?P<published>\d+(?:-\d+)?)?:)?"
    r"(?P<target>\d+(?:-\d+)?)"
    r"(?:/(?P<protocol>\w+))?"
)
_PROTOCOLS = ("tcp", "udp", "sctp")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_MEMORY = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[kmg]?)b?", re.IGNORECASE)
_BYTES_PER_UNIT = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}
_CONSTRAINT = re.compile(r"\s*(?P<attribute>[\w.-]+)\s*(?P<operator>==|!=)\s*(?P<value>.+?)\s*")
_ENV_FILE_LINE = re.compile(
    r"(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=(?P<value>.*))?"
)
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

_TOP_LEVEL_KEYS = frozenset({"version", "name", "services", "networks", "volumes", "secrets"})
_SERVICE_KEYS = frozenset(
    {
        "image", "build", "command", "entrypoint", "environment", "env_file", "ports",
        "volumes", "networks", "depends_on", "healthcheck", "restart", "labels", "user",
        "deploy", "secrets", "expose",
    }
)  # fmt: skip
_DEPLOY_KEYS = frozenset(
    {"mode", "replicas", "labels", "resources", "restart_policy", "update_config", "placement"}
)
_UPDATE_CONFIG_KEYS = frozenset({"parallelism", "delay", "order", "failure_action", "monitor"})
_HEALTHCHECK_KEYS = frozenset({"test", "interval", "timeout", "start_period", "retries", "disable"})
_UNSUPPORTED_REASONS = {
    "container_name": "replicated services cannot share one container name",
    "network_mode": "services join the stack's networks",
    "configs": "use secrets, or build the file into the image",
}


class ComposeError(Exception):
    """The Compose file cannot become a Berth stack; `errors` says where and why."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{error['loc']}: {error['msg']}" for error in errors[:5]))


@dataclass(frozen=True)
class BuildSpec:
    context: str
    dockerfile: str
    args: dict[str, str]


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


def berth_service_name(project: str, service: str) -> str:
    """The name of the Berth service that runs Compose service `service` of stack `project`."""
    return f"{project}-{re.sub(r'[_.]', '-', service.lower())}"


def parse(
    text: str, *, project: str, variables: Mapping[str, str], env_files: Mapping[str, str]
) -> ComposeProject:
    document = _load_yaml(text)
    problems = _Problems()
    document = _interpolated(document, "compose", variables, problems)
    _check_schema(document, problems)
    problems.raise_if_any()

    _check_keys(document, _TOP_LEVEL_KEYS, "compose", problems)
    services = document.get("services", {})
    if not services:
        problems.add("compose", "a Compose file needs at least one service under `services`")
    context = _Context(
        project=project,
        variables=variables,
        env_files=env_files,
        problems=problems,
        volumes=_declared_resources("volumes", document.get("volumes", {}), project, problems),
        networks=_declared_resources("networks", document.get("networks", {}), project, problems),
        secrets=_declared_secrets(document.get("secrets", {}), problems),
        service_names=frozenset(services),
        healthchecked=frozenset(
            name for name, definition in services.items() if _has_healthcheck(definition)
        ),
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
    )


class _Problems:
    """The errors found so far: parsing goes on after one to report as many as it can."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def add(self, loc: str, msg: str) -> None:
        self.errors.append({"loc": loc, "msg": msg})

    def unsupported(self, loc: str, feature: str, reason: str = "") -> None:
        self.add(loc, f"'{feature}' is not supported by Berth" + (f" ({reason})" if reason else ""))

    def raise_if_any(self) -> None:
        if self.errors:
            raise ComposeError(self.errors)


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
    problems: _Problems
    volumes: dict[str, _Resource]
    networks: dict[str, _Resource]
    secrets: dict[str, str]  # Compose secret key -> Berth secret name
    service_names: frozenset[str]
    healthchecked: frozenset[str]


# --- YAML -------------------------------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """Resolves plain scalars as YAML 1.2 (like Compose), not YAML 1.1: `22:22` is not the
    sexagesimal 1342, `2024-01-01` is not a date, and yes/no/on/off are not booleans."""


_YAML_1_1_TAGS = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:timestamp"}
_ComposeLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in _YAML_1_1_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_ComposeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    # Leading-zero octal stays: Compose reads a secret's `mode: 0440` as octal too.
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def _load_yaml(text: str) -> dict[str, Any]:
    loader = _ComposeLoader(text)
    try:
        document = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ComposeError(
            [{"loc": "compose", "msg": f"invalid YAML{where}: {exc.problem}"}]
        ) from exc
    except yaml.YAMLError as exc:
        raise ComposeError([{"loc": "compose", "msg": f"invalid YAML: {exc}"}]) from exc
    finally:
        loader.dispose()
    if not isinstance(document, dict):
        raise ComposeError([{"loc": "compose", "msg": "a Compose file is a mapping of keys"}])
    return document


# --- Interpolation ----------------------------------------------------------------------------


class _InterpolationError(Exception):
    pass


def _interpolated(node: Any, loc: str, variables: Mapping[str, str], problems: _Problems) -> Any:
    """`node` with every string value interpolated; keys stay as written. `x-*` extension keys
    are left out here, so that no later pass sees them."""
    if isinstance(node, dict):
        return {
            str(key): _interpolated(value, _at(loc, str(key)), variables, problems)
            for key, value in node.items()
            if not str(key).startswith("x-")
        }
    if isinstance(node, list):
        return [
            _interpolated(item, _at(loc, index), variables, problems)
            for index, item in enumerate(node)
        ]
    if isinstance(node, str):
        try:
            return _interpolate(node, variables)
        except _InterpolationError as exc:
            problems.add(loc, str(exc))
    return node


def _interpolate(text: str, variables: Mapping[str, str]) -> str:
    parts: list[str] = []
    position = 0
    while (dollar := text.find("$", position)) != -1:
        parts.append(text[position:dollar])
        following = text[dollar + 1 : dollar + 2]
        if following == "$":
            parts.append("$")
            position = dollar + 2
        elif following == "{":
            closing = _closing_brace(text, dollar + 2)
            parts.append(_expand(text[dollar + 2 : closing], variables))
            position = closing + 1
        elif name := _VARIABLE_NAME.match(text, dollar + 1):
            parts.append(_value_of(name.group(), variables))
            position = name.end()
        else:
            raise _InterpolationError("a '$' must start a variable: write '$$' for a literal '$'")
    parts.append(text[position:])
    return "".join(parts)


def _closing_brace(text: str, start: int) -> int:
    """The index of the `}` closing the `${` before `start`, skipping nested `${...}`."""
    depth = 1
    index = start
    while index < len(text):
        if text.startswith("${", index):
            depth += 1
            index += 2
            continue
        if text.startswith("$$", index):
            index += 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise _InterpolationError(f"'${{' without a closing '}}' in {text!r}")


def _expand(expression: str, variables: Mapping[str, str]) -> str:
    """The value of one `${...}`: `expression` is what is between the braces."""
    match = _BRACED_EXPRESSION.fullmatch(expression)
    if match is None:
        raise _InterpolationError(f"invalid interpolation '${{{expression}}}'")
    name, operator, argument = match.group("name", "operator", "argument")
    if operator is None:
        return _value_of(name, variables)
    value = variables.get(name)
    # With a colon, an empty value counts as unset (Compose rule).
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return (value or "") if present else _interpolate(argument, variables)
    if operator.endswith("+"):
        return _interpolate(argument, variables) if present else ""
    if present:
        return value or ""
    raise _InterpolationError(
        f"required variable '{name}' is missing a value" + (f": {argument}" if argument else "")
    )


def _value_of(name: str, variables: Mapping[str, str]) -> str:
    if name not in variables:
        raise _InterpolationError(
            f"variable '{name}' is not set "
            f"(give it in `variables` or a default: ${{{name}:-value}})"
        )
    return variables[name]


# --- Schema -----------------------------------------------------------------------------------


@functools.cache
def _schema_validator() -> Draft201909Validator:
    return Draft201909Validator(json.loads(_SCHEMA_PATH.read_text(encoding="utf-8")))


def _check_schema(document: dict[str, Any], problems: _Problems) -> None:
    for error in _schema_validator().iter_errors(document):
        # For a oneOf/anyOf failure: the error of the alternative that fits the value best.
        specific = best_match([error])
        loc = "compose"
        for part in specific.absolute_path:
            loc = _at(loc, part)
        if specific.validator == "additionalProperties":
            for key in _unexpected_keys(specific):
                problems.add(_at(loc, key), f"'{key}' is not allowed here by the Compose Spec")
        else:
            problems.add(loc, specific.message)


def _unexpected_keys(error: ValidationError) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    instance = error.instance if isinstance(error.instance, dict) else {}
    known = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    return [
        key
        for key in instance
        if key not in known and not any(re.search(pattern, key) for pattern in patterns)
    ]


# --- Shared helpers ---------------------------------------------------------------------------


def _at(loc: str, key: str | int) -> str:
    return f"{loc}[{key}]" if isinstance(key, int) else f"{loc}.{key}"


def _check_keys(
    mapping: dict[str, Any], supported: Collection[str], loc: str, problems: _Problems
) -> None:
    for key in mapping:
        if key not in supported:
            problems.unsupported(_at(loc, key), key, _UNSUPPORTED_REASONS.get(key, ""))


def _text(value: Any) -> str:
    """A YAML scalar as the string Compose makes of it (`true`, not Python's `True`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _integer(value: Any, loc: str, problems: _Problems) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    problems.add(loc, f"expected an integer, got {value!r}")
    return None


def _boolean(value: Any, loc: str, problems: _Problems) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.add(loc, f"expected true or false, got {value!r}")
    return False


def _pairs(value: dict[str, Any] | list[str], loc: str) -> Iterator[tuple[str, str | None, str]]:
    """(key, value, loc) of a Compose list-or-mapping (`["A=1", "B"]` or `{A: 1, B: null}`);
    the value is None where only the key is given."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, None if item is None else _text(item), _at(loc, key)
    else:
        for index, item in enumerate(value):
            key, equals, text = item.partition("=")
            yield key, text if equals else None, _at(loc, index)


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


def _duration_seconds(value: str, loc: str, problems: _Problems) -> float | None:
    if not _DURATION.fullmatch(value):
        problems.add(loc, f"invalid duration {value!r} (e.g. 10s, 1m30s, 500ms)")
        return None
    return sum(float(n) * _SECONDS_PER_UNIT[unit] for n, unit in _DURATION_PART.findall(value))


def _memory_bytes(value: Any, loc: str, problems: _Problems) -> int | None:
    match = _MEMORY.fullmatch(_text(value).strip())
    if match is None:
        problems.add(loc, f"invalid memory size {value!r} (e.g. 512m, 1g)")
        return None
    return int(float(match["amount"]) * _BYTES_PER_UNIT[match["unit"].lower()])


# --- Top-level declarations -------------------------------------------------------------------


def _declared_resources(
    section: str, declarations: dict[str, Any], project: str, problems: _Problems
) -> dict[str, _Resource]:
    """The top-level `networks` or `volumes` by Compose key."""
    supported_driver = "bridge" if section == "networks" else "local"
    resources: dict[str, _Resource] = {}
    for key, declared in declarations.items():
        loc = _at(f"compose.{section}", key)
        declaration = declared or {}
        _check_keys(declaration, {"name", "external", "driver", "labels"}, loc, problems)
        driver = declaration.get("driver", supported_driver)
        if driver != supported_driver:
            problems.unsupported(
                _at(loc, "driver"), f"driver: {driver}", f"only '{supported_driver}' is"
            )
        resources[key] = _resource(key, declaration, loc, project, problems)
    return resources


def _resource(
    key: str, declaration: dict[str, Any], loc: str, project: str, problems: _Problems
) -> _Resource:
    external = declaration.get("external", False)
    name = declaration.get("name")
    if isinstance(external, dict):  # the deprecated `external: {name: ...}` form
        name = external.get("name", name)
        external = True
    if _boolean(external, _at(loc, "external"), problems):
        return _Resource(engine_name=name or key, external=True)
    return _Resource(engine_name=name or f"{project}_{key}", external=False)


def _declared_secrets(declarations: dict[str, Any], problems: _Problems) -> dict[str, str]:
    """Compose secret key -> the existing Berth secret it refers to."""
    secrets: dict[str, str] = {}
    for key, declaration in declarations.items():
        loc = _at("compose.secrets", key)
        supported = {"name", "external", "file", "environment", "content"}
        _check_keys(declaration, supported, loc, problems)
        for source in ("file", "environment", "content"):
            if source in declaration:
                problems.add(_at(loc, source), _OWN_STORE_HINT)
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
        loc = _at("compose.services", name)
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
    _check_keys(definition, _SERVICE_KEYS, loc, problems)
    build = (
        _build(definition["build"], _at(loc, "build"), context) if "build" in definition else None
    )
    spec: dict[str, Any] = {"image": definition.get("image")}
    if spec["image"] is None and build is None:
        problems.add(loc, "a service needs `image` or `build`")
    for key in ("command", "entrypoint"):
        if definition.get(key) is not None:
            spec[key] = _command(definition[key], _at(loc, key), problems)
    env = _environment(definition, loc, context)
    if env:
        spec["env"] = env
    if definition.get("ports"):
        spec["ports"] = _ports(definition["ports"], _at(loc, "ports"), problems)
    if definition.get("volumes"):
        spec["volumes"] = _volumes(definition["volumes"], _at(loc, "volumes"), context)
    spec["networks"], spec["aliases"] = _service_networks(name, definition, loc, context)
    if "restart" in definition:
        spec["restart_policy"] = _restart_policy(
            definition["restart"], _at(loc, "restart"), problems
        )
    labels = _labels(definition.get("labels", {}), _at(loc, "labels"), problems)
    if "user" in definition:
        spec["user"] = definition["user"]
    if definition.get("deploy"):
        deploy = _deploy(definition["deploy"], _at(loc, "deploy"), problems)
        labels |= deploy.pop("labels", {})
        spec |= deploy
    if labels:
        spec["labels"] = labels
    if definition.get("secrets"):
        spec["secrets"] = _service_secrets(definition["secrets"], _at(loc, "secrets"), context)
    if "healthcheck" in definition:
        spec["healthcheck"] = _healthcheck(
            definition["healthcheck"], _at(loc, "healthcheck"), problems
        )
    depends_on = _depends_on(definition.get("depends_on", []), _at(loc, "depends_on"), context)
    return ComposeService(name=name, spec=spec, build=build, depends_on=depends_on)


def _build(value: str | dict[str, Any], loc: str, context: _Context) -> BuildSpec:
    if isinstance(value, str):
        return BuildSpec(context=value, dockerfile="Dockerfile", args={})
    _check_keys(value, {"context", "dockerfile", "args"}, loc, context.problems)
    return BuildSpec(
        context=value.get("context", "."),
        dockerfile=value.get("dockerfile", "Dockerfile"),
        args=_from_variables(value.get("args", {}), _at(loc, "args"), context.variables),
    )


def _command(value: str | list[str], loc: str, problems: _Problems) -> list[str]:
    if isinstance(value, list):
        return value
    try:
        return shlex.split(value)
    except ValueError as exc:
        problems.add(loc, f"cannot split into arguments: {exc}")
        return []


def _labels(value: dict[str, Any] | list[str], loc: str, problems: _Problems) -> dict[str, str]:
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
            definition["env_file"], _at(loc, "env_file"), context.problems
        ):
            if path in context.env_files:
                env |= _parse_env_file(context.env_files[path], path, file_loc, context)
            elif required:
                context.problems.add(
                    file_loc,
                    f"env_file '{path}' was not uploaded: upload it with the Compose file "
                    "(or mark it `required: false`)",
                )
    environment_loc = _at(loc, "environment")
    environment = definition.get("environment", {})
    for key, _, key_loc in _pairs(environment, environment_loc):
        if not _ENV_NAME.match(key):
            context.problems.add(key_loc, f"'{key}' is not a valid environment variable name")
    env |= _from_variables(environment, environment_loc, context.variables)
    return env


def _env_file_references(
    value: str | list[str | dict[str, Any]], loc: str, problems: _Problems
) -> Iterator[tuple[str, bool, str]]:
    """(path, required, loc) of each file an `env_file` names."""
    if isinstance(value, str):
        yield value, True, loc
        return
    for index, item in enumerate(value):
        item_loc = _at(loc, index)
        if isinstance(item, str):
            yield item, True, item_loc
        else:
            _check_keys(item, {"path", "required"}, item_loc, problems)
            required = _boolean(item.get("required", True), _at(item_loc, "required"), problems)
            yield item["path"], required, item_loc


def _parse_env_file(content: str, path: str, loc: str, context: _Context) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(content.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_FILE_LINE.fullmatch(stripped)
        if match is None:
            context.problems.add(loc, f"env_file '{path}' line {number}: expected KEY=VALUE")
        elif match["value"] is not None:
            env[match["key"]] = _env_file_value(match["value"])
        elif match["key"] in context.variables:
            env[match["key"]] = context.variables[match["key"]]
    return env


def _env_file_value(raw: str) -> str:
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner.replace("\\n", "\n").replace('\\"', '"') if value[0] == '"' else inner
    return value.split(" #", 1)[0].rstrip()


# --- Ports ------------------------------------------------------------------------------------


def _ports(items: list[Any], loc: str, problems: _Problems) -> list[dict[str, Any]]:
    ports: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        item_loc = _at(loc, index)
        if isinstance(item, dict):
            ports.extend(_long_port(item, item_loc, problems))
        else:
            ports.extend(_short_port(_text(item), item_loc, problems))
    return ports


def _short_port(text: str, loc: str, problems: _Problems) -> list[dict[str, Any]]:
    match = _SHORT_PORT.fullmatch(text.strip())
    if match is None:
        problems.add(loc, f'invalid port {text!r} (e.g. "8000:5000", "127.0.0.1:8000:5000/udp")')
        return []
    protocol = match["protocol"] or "tcp"
    if protocol not in _PROTOCOLS:
        problems.add(loc, f"protocol '{protocol}' is not one of {', '.join(_PROTOCOLS)}")
        return []
    try:
        targets = _port_range(match["target"])
        published = _port_range(match["published"]) if match["published"] else [None] * len(targets)
    except ValueError as exc:
        problems.add(loc, str(exc))
        return []
    if len(published) != len(targets):
        problems.add(loc, "the published and the container port ranges differ in length")
        return []
    host_ip = match["ipv6"] or match["ipv4"] or ""
    return [
        {"container_port": target, "host_port": host, "protocol": protocol, "host_ip": host_ip}
        for host, target in zip(published, targets, strict=True)
    ]


def _port_range(text: str) -> list[int | None]:
    """ "5000" -> [5000]; "5000-5002" -> [5000, 5001, 5002]."""
    first, _, last = text.partition("-")
    start, end = int(first), int(last or first)
    if not 1 <= start <= end <= 65535:
        raise ValueError(f"invalid port range '{text}' (ports are 1 to 65535)")
    return list(range(start, end + 1))


def _long_port(item: dict[str, Any], loc: str, problems: _Problems) -> list[dict[str, Any]]:
    supported = {"target", "published", "host_ip", "protocol", "mode", "name", "app_protocol"}
    _check_keys(item, supported, loc, problems)
    mode = item.get("mode", "host")
    if mode == "ingress":
        problems.unsupported(
            _at(loc, "mode"), "mode: ingress", "Berth publishes on each replica's host: use host"
        )
    elif mode != "host":
        problems.add(_at(loc, "mode"), f"port mode '{mode}' is neither host nor ingress")
    protocol = item.get("protocol", "tcp")
    if protocol not in _PROTOCOLS:
        problems.add(_at(loc, "protocol"), f"protocol '{protocol}' is not one of tcp, udp, sctp")
    if "target" not in item:
        problems.add(loc, "a port needs a `target` (the container port)")
        return []
    target = _port_number(item["target"], _at(loc, "target"), problems)
    published = item.get("published")
    host_port = (
        None if published is None else _port_number(published, _at(loc, "published"), problems)
    )
    host_ip = item.get("host_ip", "")
    return [
        {"container_port": target, "host_port": host_port, "protocol": protocol, "host_ip": host_ip}
    ]


def _port_number(value: Any, loc: str, problems: _Problems) -> int | None:
    number = _integer(value, loc, problems)
    if number is not None and not 1 <= number <= 65535:
        problems.add(loc, f"port {number} is not between 1 and 65535")
    return number


# --- Volumes ----------------------------------------------------------------------------------


def _volumes(items: list[Any], loc: str, context: _Context) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        item_loc = _at(loc, index)
        if isinstance(item, dict):
            mount = _long_volume(item, item_loc, context)
        else:
            mount = _short_volume(item, item_loc, context)
        if mount is not None:
            mounts.append(mount)
    return mounts


def _short_volume(text: str, loc: str, context: _Context) -> dict[str, Any] | None:
    parts = text.split(":")
    if len(parts) == 1:
        context.problems.unsupported(loc, "anonymous volume", "declare a named volume")
        return None
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
    _check_keys(item, {"type", "source", "target", "read_only"}, loc, context.problems)
    kind = item["type"]
    if kind not in ("volume", "bind"):
        context.problems.unsupported(_at(loc, "type"), f"type: {kind}")
        return None
    if not item.get("source"):
        if kind == "volume":
            context.problems.unsupported(loc, "anonymous volume", "declare a named volume")
        else:
            context.problems.add(loc, "a bind mount needs a `source`")
        return None
    read_only = _boolean(item.get("read_only", False), _at(loc, "read_only"), context.problems)
    return _mount(kind, item["source"], item.get("target", ""), read_only, loc, context)


def _mount(
    kind: str, source: str, target: str, read_only: bool, loc: str, context: _Context
) -> dict[str, Any] | None:
    if not target.startswith("/"):
        context.problems.add(loc, "the container path must be absolute")
        return None
    if kind == "bind":
        if not source.startswith("/"):
            context.problems.add(
                loc, "relative bind mounts need a path on the host; use an absolute path"
            )
            return None
        return {"source": source, "target": target, "read_only": read_only}
    volume = context.volumes.get(source)
    if volume is None:
        context.problems.add(loc, f"volume '{source}' is not declared in the top-level `volumes`")
        return None
    return {"source": volume.engine_name, "target": target, "read_only": read_only}


# --- Networks, secrets, dependencies ----------------------------------------------------------


def _service_networks(
    name: str, definition: dict[str, Any], loc: str, context: _Context
) -> tuple[list[str], list[str]]:
    """The engine names of the service's networks, and its aliases on them."""
    networks_loc = _at(loc, "networks")
    attached = definition.get("networks") or ["default"]
    aliases = [name]
    engine_names: list[str] = []
    for index, network in enumerate(attached):
        network_loc = _at(networks_loc, network if isinstance(attached, dict) else index)
        options = attached[network] if isinstance(attached, dict) else None
        if options:
            _check_keys(options, {"aliases"}, network_loc, context.problems)
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
        item_loc = _at(loc, index)
        options: dict[str, Any] = {"source": item} if isinstance(item, str) else item
        _check_keys(options, {"source", "target", "uid", "gid", "mode"}, item_loc, context.problems)
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
                reference[key] = _integer(options[key], _at(item_loc, key), context.problems)
        if "mode" in options:
            reference["mode"] = _file_mode(options["mode"], _at(item_loc, "mode"), context.problems)
        references.append(reference)
    return references


def _file_mode(value: Any, loc: str, problems: _Problems) -> int | None:
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
        dependency_loc = _at(loc, index if isinstance(value, list) else dependency)
        condition_loc = _at(dependency_loc, "condition")
        if isinstance(value, dict):
            _check_keys(
                value[dependency],
                {"condition", "required", "restart"},
                dependency_loc,
                context.problems,
            )
        if dependency not in context.service_names:
            context.problems.add(dependency_loc, f"service '{dependency}' is not defined")
        elif condition == "service_completed_successfully":
            context.problems.unsupported(condition_loc, f"condition: {condition}")
        elif condition == "service_healthy" and dependency not in context.healthchecked:
            context.problems.add(
                condition_loc, f"service '{dependency}' has no healthcheck to become healthy by"
            )
        else:
            depends_on[dependency] = condition
    return depends_on


def _has_healthcheck(definition: Any) -> bool:
    healthcheck = definition.get("healthcheck") if isinstance(definition, dict) else None
    if not isinstance(healthcheck, dict) or healthcheck.get("disable") in (True, "true"):
        return False
    test = healthcheck.get("test")
    return bool(test) and test != ["NONE"]


def _start_order(services: list[ComposeService], problems: _Problems) -> list[ComposeService]:
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


def _healthcheck(value: dict[str, Any], loc: str, problems: _Problems) -> dict[str, Any]:
    _check_keys(value, _HEALTHCHECK_KEYS, loc, problems)
    if _boolean(value.get("disable", False), _at(loc, "disable"), problems):
        return {"test": ["NONE"]}
    test = value.get("test")
    if isinstance(test, str):
        healthcheck: dict[str, Any] = {"test": ["CMD-SHELL", test]}
    elif test and test[0] in _HEALTHCHECK_KINDS:
        healthcheck = {"test": test}
    else:
        problems.add(
            _at(loc, "test"),
            "a healthcheck test is a string, or a list starting with CMD, CMD-SHELL or NONE "
            "(Berth does not inherit the image's HEALTHCHECK)",
        )
        healthcheck = {}
    for key in ("interval", "timeout", "start_period"):
        if key in value:
            healthcheck[f"{key}_s"] = _duration_seconds(value[key], _at(loc, key), problems)
    if "retries" in value:
        healthcheck["retries"] = _integer(value["retries"], _at(loc, "retries"), problems)
    return healthcheck


def _restart_policy(value: str, loc: str, problems: _Problems) -> str | None:
    policy = _RESTART_POLICIES.get(
        value.split(":", 1)[0] if value.startswith("on-failure:") else value
    )
    if policy is None:
        problems.add(loc, f"restart '{value}' is not no, always, unless-stopped or on-failure[:N]")
    return policy


def _deploy(deploy: dict[str, Any], loc: str, problems: _Problems) -> dict[str, Any]:
    """The spec fields that `deploy` sets, with its `labels` under "labels" for merging."""
    _check_keys(deploy, _DEPLOY_KEYS, loc, problems)
    fields: dict[str, Any] = {}
    mode = deploy.get("mode", "replicated")
    if mode == "global":
        problems.unsupported(_at(loc, "mode"), "mode: global", "set `replicas` and placement")
    elif mode != "replicated":
        problems.add(_at(loc, "mode"), f"mode '{mode}' is neither replicated nor global")
    if "replicas" in deploy:
        fields["replicas"] = _integer(deploy["replicas"], _at(loc, "replicas"), problems)
    if "labels" in deploy:
        fields["labels"] = _labels(deploy["labels"], _at(loc, "labels"), problems)
    if "resources" in deploy:
        fields["resources"] = _resources(deploy["resources"], _at(loc, "resources"), problems)
    if "restart_policy" in deploy:
        restart_policy = deploy["restart_policy"]
        restart_loc = _at(loc, "restart_policy")
        _check_keys(restart_policy, {"condition"}, restart_loc, problems)
        condition = restart_policy.get("condition", "any")
        if condition not in ("none", "on-failure", "any"):
            problems.add(
                _at(restart_loc, "condition"), f"'{condition}' is not none, on-failure or any"
            )
        fields["restart_policy"] = condition
    if "update_config" in deploy:
        fields["update_config"] = _update_config(
            deploy["update_config"], _at(loc, "update_config"), problems
        )
    if "placement" in deploy:
        fields["placement"] = _placement(deploy["placement"], _at(loc, "placement"), problems)
    return fields


def _resources(value: dict[str, Any], loc: str, problems: _Problems) -> dict[str, Any]:
    _check_keys(value, {"limits"}, loc, problems)
    limits = value.get("limits", {})
    limits_loc = _at(loc, "limits")
    _check_keys(limits, {"cpus", "memory"}, limits_loc, problems)
    resources: dict[str, Any] = {}
    if "cpus" in limits:
        try:
            resources["cpus"] = float(limits["cpus"])
        except ValueError:
            problems.add(_at(limits_loc, "cpus"), f"invalid number of CPUs {limits['cpus']!r}")
    if "memory" in limits:
        resources["memory_bytes"] = _memory_bytes(
            limits["memory"], _at(limits_loc, "memory"), problems
        )
    return resources


def _update_config(value: dict[str, Any], loc: str, problems: _Problems) -> dict[str, Any]:
    _check_keys(value, _UPDATE_CONFIG_KEYS, loc, problems)
    update: dict[str, Any] = {}
    if "parallelism" in value:
        update["parallelism"] = _integer(value["parallelism"], _at(loc, "parallelism"), problems)
    for key in ("delay", "monitor"):
        if key in value:
            update[f"{key}_s"] = _duration_seconds(value[key], _at(loc, key), problems)
    if "order" in value:
        update["order"] = value["order"]
    if "failure_action" in value:
        action = value["failure_action"]
        if action == "continue":
            problems.unsupported(_at(loc, "failure_action"), "failure_action: continue")
        elif action not in ("rollback", "pause"):
            problems.add(_at(loc, "failure_action"), f"'{action}' is not rollback or pause")
        update["failure_action"] = action
    return update


def _placement(value: dict[str, Any], loc: str, problems: _Problems) -> dict[str, Any]:
    _check_keys(value, {"constraints", "max_replicas_per_node"}, loc, problems)
    constraints_loc = _at(loc, "constraints")
    placement: dict[str, Any] = {
        "constraints": [
            rule
            for index, text in enumerate(value.get("constraints", []))
            if (rule := _constraint(text, _at(constraints_loc, index), problems)) is not None
        ]
    }
    if "max_replicas_per_node" in value:
        placement["max_per_host"] = _integer(
            value["max_replicas_per_node"], _at(loc, "max_replicas_per_node"), problems
        )
    return placement


def _constraint(text: str, loc: str, problems: _Problems) -> str | None:
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
