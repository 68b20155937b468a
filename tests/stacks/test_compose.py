"""app.stacks.compose: Compose file -> Berth service specs, or errors located in the file."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from app.stacks.compose import BuildSpec, ComposeError, ComposeProject, parse


def _parse(
    text: str,
    variables: dict[str, str] | None = None,
    env_files: dict[str, str] | None = None,
) -> ComposeProject:
    return parse(
        textwrap.dedent(text),
        project="shop",
        variables=variables or {},
        env_files=env_files or {},
    )


def _errors(
    text: str,
    variables: dict[str, str] | None = None,
    env_files: dict[str, str] | None = None,
) -> list[dict[str, str]]:
    with pytest.raises(ComposeError) as caught:
        _parse(text, variables, env_files)
    return caught.value.errors


def _service_spec(service_yaml: str, **kwargs: Any) -> dict[str, Any]:
    """The spec of service `web`, given the YAML under it (indented by 4)."""
    text = "services:\n  web:\n    image: nginx\n" + textwrap.indent(
        textwrap.dedent(service_yaml), "    "
    )
    return _parse(text, **kwargs).services[0].spec


def _service_errors(service_yaml: str, **kwargs: Any) -> list[dict[str, str]]:
    text = "services:\n  web:\n    image: nginx\n" + textwrap.indent(
        textwrap.dedent(service_yaml), "    "
    )
    return _errors(text, **kwargs)


def test_classic_flask_and_redis() -> None:
    project = _parse(
        """
        version: "3.9"
        services:
          web:
            build: .
            ports:
              - "8000:5000"
            depends_on:
              - redis
          redis:
            image: "redis:alpine"
        """
    )

    assert [service.name for service in project.services] == ["redis", "web"]
    redis, web = project.services
    assert redis.spec == {
        "image": "redis:alpine",
        "networks": ["shop_default"],
        "aliases": ["redis"],
    }
    assert redis.build is None
    assert web.build == BuildSpec(context=".", dockerfile="Dockerfile", args={})
    assert web.depends_on == {"redis": "service_started"}
    assert web.spec["image"] is None
    assert web.spec["ports"] == [
        {"container_port": 5000, "host_port": 8000, "protocol": "tcp", "host_ip": ""}
    ]
    assert web.spec["aliases"] == ["web"]
    assert project.networks == ["shop_default"]
    assert project.volumes == []
    assert project.secrets == []


def test_compose_error_message_joins_the_first_five_errors() -> None:
    error = ComposeError([{"loc": f"compose.l{i}", "msg": f"m{i}"} for i in range(7)])

    assert str(error) == "; ".join(f"compose.l{i}: m{i}" for i in range(5))
    assert len(error.errors) == 7


@pytest.mark.parametrize(
    ("value", "variables", "expected"),
    [
        ("$NAME", {"NAME": "a"}, "a"),
        ("${NAME}-x", {"NAME": "a"}, "a-x"),
        ("${NAME:-dflt}", {}, "dflt"),
        ("${NAME:-dflt}", {"NAME": ""}, "dflt"),
        ("${NAME-dflt}", {"NAME": ""}, ""),
        ("${NAME-dflt}", {}, "dflt"),
        ("${NAME:?needed}", {"NAME": "a"}, "a"),
        ("${NAME:+alt}", {"NAME": "a"}, "alt"),
        ("${NAME:+alt}", {"NAME": ""}, ""),
        ("${NAME+alt}", {"NAME": ""}, "alt"),
        ("${NAME+alt}", {}, ""),
        ("${NAME:-${OTHER}}", {"OTHER": "o"}, "o"),
        ("${NAME:-${OTHER:-deep}}", {}, "deep"),
        ("${NAME:-$$OTHER}", {}, "$OTHER"),
        ("${NAME:-${MISSING}}", {"NAME": "set"}, "set"),
        ("cost: $$5", {}, "cost: $5"),
        ("no variables", {}, "no variables"),
    ],
)
def test_interpolation(value: str, variables: dict[str, str], expected: str) -> None:
    spec = _service_spec(f"environment:\n  VALUE: '{value}'\n", variables=variables)

    assert spec["env"] == {"VALUE": expected}


@pytest.mark.parametrize(
    ("value", "variables", "msg"),
    [
        (
            "${DB_URL}",
            {},
            "variable 'DB_URL' is not set (give it in `variables` or a default: ${DB_URL:-value})",
        ),
        (
            "$DB_URL",
            {},
            "variable 'DB_URL' is not set (give it in `variables` or a default: ${DB_URL:-value})",
        ),
        ("${DB_URL:?set the database}", {"DB_URL": ""}, "set the database"),
        ("${DB_URL?set the database}", {}, "set the database"),
        ("${DB_URL", {}, "without a closing"),
        ("${DB URL}", {}, "invalid interpolation '${DB URL}'"),
        ("${DB_URL:x}", {}, "invalid interpolation"),
        ("100$", {}, "write '$$' for a literal '$'"),
    ],
)
def test_interpolation_errors(value: str, variables: dict[str, str], msg: str) -> None:
    errors = _service_errors(f"environment:\n  DB_URL: '{value}'\n", variables=variables)

    assert len(errors) == 1
    assert errors[0]["loc"] == "compose.services.web.environment.DB_URL"
    assert msg in errors[0]["msg"]


def test_interpolation_applies_to_values_not_keys_and_skips_extensions() -> None:
    project = _parse(
        """
        x-unused: ${NOT_SET}
        services:
          web:
            image: "nginx:${TAG:-latest}"
            labels:
              ${KEY}: ${VALUE}
            deploy:
              replicas: ${REPLICAS}
        """,
        variables={"REPLICAS": "3", "VALUE": "v"},
    )

    spec = project.services[0].spec
    assert (spec["image"], spec["labels"], spec["replicas"]) == ("nginx:latest", {"${KEY}": "v"}, 3)


@pytest.mark.parametrize(
    ("service_yaml", "loc", "msg"),
    [
        (
            "runtime: runsc\n",
            "compose.services.web.runtime",
            "'runtime' is not supported by Berth",
        ),
        (
            "privileged: true\n",
            "compose.services.web.privileged",
            "'privileged' is not supported by Berth",
        ),
        ("network_mode: host\n", "compose.services.web.network_mode", "not supported by Berth"),
        ("pid: host\n", "compose.services.web.pid", "not supported by Berth"),
        (
            "deploy:\n  resources:\n    reservations:\n      devices:\n"
            "        - capabilities: [gpu]\n",
            "compose.services.web.deploy.resources.reservations.devices",
            "'devices' is not supported by Berth",
        ),
        (
            "deploy:\n  resources:\n    limits:\n      pids: 10\n",
            "compose.services.web.deploy.resources.limits.pids",
            "'pids' is not supported by Berth",
        ),
        ("deploy:\n  mode: global\n", "compose.services.web.deploy.mode", "not supported"),
        (
            "deploy:\n  restart_policy:\n    max_attempts: 3\n",
            "compose.services.web.deploy.restart_policy.max_attempts",
            "not supported",
        ),
        (
            "deploy:\n  update_config:\n    failure_action: continue\n",
            "compose.services.web.deploy.update_config.failure_action",
            "'failure_action: continue' is not supported by Berth",
        ),
        (
            "deploy:\n  placement:\n    preferences:\n      - spread: node.labels.zone\n",
            "compose.services.web.deploy.placement.preferences",
            "not supported",
        ),
        (
            "healthcheck:\n  test: ['CMD', 'true']\n  start_interval: 1s\n",
            "compose.services.web.healthcheck.start_interval",
            "not supported",
        ),
        (
            "ports:\n  - target: 80\n    mode: ingress\n",
            "compose.services.web.ports[0].mode",
            "'mode: ingress' is not supported by Berth",
        ),
        (
            "volumes_from:\n  - other\n",
            "compose.services.web.volumes_from",
            "'volumes_from' is not supported by Berth",
        ),
        (
            "volumes:\n  - type: tmpfs\n    target: /tmp\n",
            "compose.services.web.volumes[0].type",
            "'type: tmpfs' is not supported by Berth",
        ),
        (
            "build:\n  context: .\n  ssh: [default]\n",
            "compose.services.web.build.ssh",
            "not supported",
        ),
    ],
)
def test_unsupported_keys_are_located(service_yaml: str, loc: str, msg: str) -> None:
    errors = _service_errors(service_yaml)

    assert [error["loc"] for error in errors] == [loc]
    assert msg in errors[0]["msg"]


@pytest.mark.parametrize(
    ("text", "loc"),
    [
        ("configs:\n  app:\n    file: ./app.conf\n", "compose.configs"),
        ("networks:\n  back:\n    internal: true\n", "compose.networks.back.internal"),
        ("networks:\n  back:\n    driver: overlay\n", "compose.networks.back.driver"),
        ("volumes:\n  data:\n    driver: nfs\n", "compose.volumes.data.driver"),
    ],
)
def test_unsupported_top_level_keys(text: str, loc: str) -> None:
    errors = _errors("services:\n  web:\n    image: nginx\n" + text)

    assert [error["loc"] for error in errors] == [loc]
    assert "not supported by Berth" in errors[0]["msg"]


def test_invalid_yaml_reports_the_line() -> None:
    errors = _errors("services:\n  web:\n    image: nginx\n   ports: [\n")

    assert len(errors) == 1
    assert errors[0]["loc"] == "compose"
    assert errors[0]["msg"] == (
        "invalid YAML at line 4, column 4: expected <block end>, but found '<block mapping start>'"
    )


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", ""])
def test_a_compose_file_is_a_mapping(text: str) -> None:
    assert _errors(text) == [{"loc": "compose", "msg": "a Compose file is a mapping of keys"}]


@pytest.mark.parametrize(
    ("text", "loc", "msg"),
    [
        ("services: []\n", "compose.services", "[] is not of type 'object'"),
        (
            "services:\n  web:\n    image: nginx\n    ports: 12\n",
            "compose.services.web.ports",
            "12 is not of type 'array'",
        ),
        (
            "services:\n  web:\n    image: nginx\n    imag: typo\n",
            "compose.services.web.imag",
            "not allowed here by the Compose Spec",
        ),
        (
            "services:\n  web:\n    image: nginx\n"
            "    ports:\n      - target: 80\n        port: 1\n",
            "compose.services.web.ports[0].port",
            "not allowed here by the Compose Spec",
        ),
        ("servics: {}\n", "compose.servics", "not allowed here by the Compose Spec"),
    ],
)
def test_schema_errors_are_located(text: str, loc: str, msg: str) -> None:
    errors = _errors(text)

    assert [error["loc"] for error in errors] == [loc]
    assert msg in errors[0]["msg"]


def test_extension_keys_are_ignored_everywhere() -> None:
    project = _parse(
        """
        x-defaults: &defaults
          restart: always
        services:
          x-template:
            anything: goes
          web:
            <<: *defaults
            image: nginx
            x-note: hello
            deploy:
              x-team: web
              resources:
                x-why: measured
                limits:
                  memory: 64m
        networks:
          x-comment: nothing
        """
    )

    assert [service.name for service in project.services] == ["web"]
    assert project.services[0].spec["restart_policy"] == "any"
    assert project.services[0].spec["resources"] == {"memory_bytes": 64 * 2**20}


def test_a_service_needs_image_or_build() -> None:
    errors = _errors("services:\n  web:\n    command: echo\n")

    assert errors == [{"loc": "compose.services.web", "msg": "a service needs `image` or `build`"}]


def test_service_names_must_map_to_distinct_berth_names() -> None:
    errors = _errors(
        "services:\n  my_web:\n    image: nginx\n  my.web:\n    image: nginx\n"
        f"  {'a' * 60}:\n    image: nginx\n"
    )

    assert [error["loc"] for error in errors] == [
        "compose.services.my.web",
        f"compose.services.{'a' * 60}",
    ]


def test_build_mapping() -> None:
    project = _parse(
        """
        services:
          web:
            build:
              context: ./web
              dockerfile: Dockerfile.prod
              args:
                - VERSION=${VERSION}
                - FROM_VARIABLES
                - DROPPED
        """,
        variables={"VERSION": "1.2", "FROM_VARIABLES": "yes"},
    )

    assert project.services[0].build == BuildSpec(
        context="./web",
        dockerfile="Dockerfile.prod",
        args={"VERSION": "1.2", "FROM_VARIABLES": "yes"},
    )


def test_command_entrypoint_user_restart_labels() -> None:
    spec = _service_spec(
        """
        command: python -m app --name "two words"
        entrypoint: ["/bin/sh", "-c"]
        user: "1000:1000"
        restart: on-failure:3
        labels:
          team: shop
          on_call: yes
        deploy:
          replicas: 2
          labels:
            tier: front
        """
    )

    assert spec["command"] == ["python", "-m", "app", "--name", "two words"]
    assert spec["entrypoint"] == ["/bin/sh", "-c"]
    assert spec["user"] == "1000:1000"
    assert spec["restart_policy"] == "on-failure"
    assert spec["labels"] == {"team": "shop", "on_call": "yes", "tier": "front"}
    assert spec["replicas"] == 2


@pytest.mark.parametrize(
    ("restart", "policy"),
    [("'no'", "none"), ("always", "any"), ("unless-stopped", "any"), ("on-failure", "on-failure")],
)
def test_restart_policies(restart: str, policy: str) -> None:
    assert _service_spec(f"restart: {restart}\n")["restart_policy"] == policy


def test_deploy_restart_policy_overrides_restart() -> None:
    spec = _service_spec("restart: always\ndeploy:\n  restart_policy:\n    condition: none\n")

    assert spec["restart_policy"] == "none"


def test_berth_labels_are_reserved() -> None:
    errors = _service_errors("labels:\n  - berth.stack=x\n")

    assert errors[0]["loc"] == "compose.services.web.labels[0]"
    assert "Berth's own" in errors[0]["msg"]


def test_environment_forms_and_scalar_values() -> None:
    spec = _service_spec(
        """
        environment:
          DEBUG: true
          WORKERS: 4
          RATIO: 0.5
          FROM_VARIABLES:
          DROPPED:
        """,
        variables={"FROM_VARIABLES": "v"},
    )
    listed = _service_spec("environment:\n  - A=1=2\n  - B\n  - C=\n", variables={"B": "b"})

    assert spec["env"] == {"DEBUG": "true", "WORKERS": "4", "RATIO": "0.5", "FROM_VARIABLES": "v"}
    assert listed["env"] == {"A": "1=2", "B": "b", "C": ""}


def test_env_file_parsing_and_precedence() -> None:
    content = textwrap.dedent(
        """
        # settings
        export PLAIN=value  # trailing comment

        SINGLE='it''s $HOME'
        DOUBLE="line1\\nline2"
        OVERRIDDEN=from-file
        EMPTY=
        FROM_VARIABLES
        """
    )
    spec = _service_spec(
        """
        env_file:
          - .env
          - path: ./optional.env
            required: false
        environment:
          OVERRIDDEN: from-environment
        """,
        env_files={".env": content},
        variables={"FROM_VARIABLES": "v"},
    )

    assert spec["env"] == {
        "PLAIN": "value",
        "SINGLE": "it''s $HOME",
        "DOUBLE": "line1\nline2",
        "OVERRIDDEN": "from-environment",
        "EMPTY": "",
        "FROM_VARIABLES": "v",
    }


def test_missing_env_file_is_an_error() -> None:
    errors = _service_errors("env_file:\n  - ./prod.env\n")

    assert errors[0]["loc"] == "compose.services.web.env_file[0]"
    assert "'./prod.env' was not uploaded" in errors[0]["msg"]


def test_env_file_string_form_and_bad_line() -> None:
    errors = _service_errors("env_file: app.env\n", env_files={"app.env": "OK=1\nnot valid\n"})

    assert errors == [
        {
            "loc": "compose.services.web.env_file",
            "msg": "env_file 'app.env' line 2: expected KEY=VALUE",
        }
    ]


def _port(container: int, host: int | None, protocol: str = "tcp", ip: str = "") -> dict[str, Any]:
    return {"container_port": container, "host_port": host, "protocol": protocol, "host_ip": ip}


@pytest.mark.parametrize(
    ("port_yaml", "expected"),
    [
        ('"5000"', [_port(5000, None)]),
        ("5000", [_port(5000, None)]),
        ('"8000:5000"', [_port(5000, 8000)]),
        ("22:22", [_port(22, 22)]),
        ('"127.0.0.1:8000:5000"', [_port(5000, 8000, ip="127.0.0.1")]),
        ('"127.0.0.1::5000"', [_port(5000, None, ip="127.0.0.1")]),
        ('"8000:5000/udp"', [_port(5000, 8000, "udp")]),
        ('"[::1]:8000:5000"', [_port(5000, 8000, ip="::1")]),
        ('"8000-8001:5000-5001"', [_port(5000, 8000), _port(5001, 8001)]),
        ('"5000-5001"', [_port(5000, None), _port(5001, None)]),
        ("{target: 80, published: 8080, protocol: udp, host_ip: 10.0.0.1, mode: host}",
         [_port(80, 8080, "udp", "10.0.0.1")]),
        ('{target: "80", published: "8080", name: web, app_protocol: http}', [_port(80, 8080)]),
        ("{target: 80}", [_port(80, None)]),
    ],
)  # fmt: skip
def test_ports(port_yaml: str, expected: list[dict[str, Any]]) -> None:
    assert _service_spec(f"ports:\n  - {port_yaml}\n")["ports"] == expected


@pytest.mark.parametrize(
    ("port_yaml", "msg"),
    [
        ('"8000-8002:5000-5001"', "differ in length"),
        ('"70000:80"', "ports are 1 to 65535"),
        ('"8000:5000/icmp"', "protocol 'icmp'"),
        ('"host:8000:5000"', "invalid port"),
        ("{published: 8080}", "needs a `target`"),
    ],
)
def test_port_errors(port_yaml: str, msg: str) -> None:
    errors = _service_errors(f"ports:\n  - {port_yaml}\n")

    assert errors[0]["loc"] == "compose.services.web.ports[0]"
    assert msg in errors[0]["msg"]


def test_volumes_and_engine_names() -> None:
    project = _parse(
        """
        services:
          db:
            image: postgres
            volumes:
              - data:/var/lib/postgresql/data
              - shared:/shared:ro
              - /srv/backups:/backups
              - type: volume
                source: named
                target: /named
                read_only: true
              - type: bind
                source: /etc/ssl
                target: /etc/ssl
        volumes:
          data:
          shared:
            external: true
            name: team-shared
          named:
            name: fixed-name
          unused: {}
        """
    )

    assert project.services[0].spec["volumes"] == [
        {"source": "shop_data", "target": "/var/lib/postgresql/data", "read_only": False},
        {"source": "team-shared", "target": "/shared", "read_only": True},
        {"source": "/srv/backups", "target": "/backups", "read_only": False},
        {"source": "fixed-name", "target": "/named", "read_only": True},
        {"source": "/etc/ssl", "target": "/etc/ssl", "read_only": False},
    ]
    assert project.volumes == ["shop_data", "fixed-name", "shop_unused"]


@pytest.mark.parametrize(
    ("volume_yaml", "loc", "msg"),
    [
        ("./data:/data", "compose.services.web.volumes[0]", "relative bind mounts need a path"),
        ("../data:/data", "compose.services.web.volumes[0]", "relative bind mounts need a path"),
        ("~/data:/data", "compose.services.web.volumes[0]", "relative bind mounts need a path"),
        (
            "{type: bind, source: ./data, target: /data}",
            "compose.services.web.volumes[0]",
            "relative bind mounts need a path on the host; use an absolute path",
        ),
        (
            "cache:/cache",
            "compose.services.web.volumes[0]",
            "volume 'cache' is not declared in the top-level `volumes`",
        ),
    ],
)
def test_volume_errors(volume_yaml: str, loc: str, msg: str) -> None:
    errors = _service_errors(f"volumes:\n  - {volume_yaml}\n")

    assert [error["loc"] for error in errors] == [loc]
    assert msg in errors[0]["msg"]


def test_networks_and_aliases() -> None:
    project = _parse(
        """
        services:
          api:
            image: api
            networks:
              back:
                aliases: [backend, api]
              default:
          worker:
            image: worker
            networks: [back, shared]
          web:
            image: nginx
        networks:
          back: {}
          shared:
            external: true
          named:
            name: my-net
        """
    )

    api, worker, web = (service.spec for service in project.services)
    assert (api["networks"], api["aliases"]) == (["shop_back", "shop_default"], ["api", "backend"])
    assert (worker["networks"], worker["aliases"]) == (["shop_back", "shared"], ["worker"])
    assert web["networks"] == ["shop_default"]
    assert project.networks == ["shop_default", "shop_back", "my-net"]


def test_default_network_can_be_overridden() -> None:
    project = _parse(
        "services:\n  web:\n    image: nginx\nnetworks:\n  default:\n    name: edge\n"
        "    external: true\n"
    )

    assert project.services[0].spec["networks"] == ["edge"]
    assert project.networks == []


def test_undeclared_network() -> None:
    errors = _service_errors("networks:\n  - default\n  - back\n")

    assert errors == [
        {
            "loc": "compose.services.web.networks[1]",
            "msg": "network 'back' is not declared in the top-level `networks`",
        }
    ]


def test_depends_on_order_is_stable_and_follows_dependencies() -> None:
    project = _parse(
        """
        services:
          web:
            image: web
            depends_on:
              api: {condition: service_started}
              db: {condition: service_healthy, required: true, restart: true}
          api:
            image: api
            depends_on: [db]
          db:
            image: postgres
            healthcheck:
              test: pg_isready
          cache:
            image: redis
        """
    )

    assert [service.name for service in project.services] == ["db", "api", "web", "cache"]
    assert project.services[2].depends_on == {"api": "service_started", "db": "service_healthy"}


@pytest.mark.parametrize(
    ("depends_yaml", "loc", "msg"),
    [
        ("[ghost]", "compose.services.web.depends_on[0]", "service 'ghost' is not defined"),
        (
            "{db: {condition: service_healthy}}",
            "compose.services.web.depends_on.db.condition",
            "service 'db' has no healthcheck",
        ),
    ],
)
def test_depends_on_errors(depends_yaml: str, loc: str, msg: str) -> None:
    errors = _errors(
        f"services:\n  web:\n    image: web\n    depends_on: {depends_yaml}\n"
        "  db:\n    image: postgres\n    healthcheck:\n      disable: true\n"
    )

    assert [error["loc"] for error in errors] == [loc]
    assert msg in errors[0]["msg"]


def test_depends_on_cycle() -> None:
    errors = _errors(
        """
        services:
          web: {image: web, depends_on: [api]}
          api: {image: api, depends_on: [db]}
          db: {image: db, depends_on: [web]}
          cache: {image: redis}
        """
    )

    assert errors == [
        {"loc": "compose.services", "msg": "depends_on forms a cycle: web -> api -> db -> web"}
    ]


def test_healthcheck() -> None:
    spec = _service_spec(
        """
        healthcheck:
          test: ["CMD", "curl", "-f", "http://localhost"]
          interval: 1m30s
          timeout: 500ms
          start_period: 1h
          retries: 3
        """
    )
    shell = _service_spec("healthcheck:\n  test: curl -f localhost || exit 1\n")
    disabled = _service_spec("healthcheck:\n  disable: true\n")

    assert spec["healthcheck"] == {
        "test": ["CMD", "curl", "-f", "http://localhost"],
        "interval_s": 90.0,
        "timeout_s": 0.5,
        "start_period_s": 3600.0,
        "retries": 3,
    }
    assert shell["healthcheck"] == {"test": ["CMD-SHELL", "curl -f localhost || exit 1"]}
    assert disabled["healthcheck"] == {"test": ["NONE"]}


def test_bad_healthcheck_duration() -> None:
    errors = _service_errors("healthcheck:\n  test: 'true'\n  interval: 10 seconds\n")

    assert errors[0]["loc"] == "compose.services.web.healthcheck.interval"
    assert "invalid duration" in errors[0]["msg"]


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        ("512M", 512 * 2**20),
        ("1g", 2**30),
        ("1gb", 2**30),
        ("100m", 100 * 2**20),
        ("64k", 64 * 2**10),
        ("1.5g", 3 * 2**29),
        ("'1048576'", 2**20),
        ("300b", 300),
    ],
)
def test_memory_units(memory: str, expected: int) -> None:
    spec = _service_spec(f"deploy:\n  resources:\n    limits:\n      memory: {memory}\n")

    assert spec["resources"] == {"memory_bytes": expected}


def test_cpus_and_bad_memory() -> None:
    spec = _service_spec("deploy:\n  resources:\n    limits:\n      cpus: '0.5'\n")
    errors = _service_errors("deploy:\n  resources:\n    limits:\n      memory: lots\n")

    assert spec["resources"] == {"cpus": 0.5}
    assert errors[0]["loc"] == "compose.services.web.deploy.resources.limits.memory"


def test_update_config() -> None:
    spec = _service_spec(
        """
        deploy:
          update_config:
            parallelism: 2
            delay: 10s
            order: start-first
            failure_action: pause
            monitor: 1m
        """
    )

    assert spec["update_config"] == {
        "parallelism": 2,
        "delay_s": 10.0,
        "order": "start-first",
        "failure_action": "pause",
        "monitor_s": 60.0,
    }


def test_placement() -> None:
    spec = _service_spec(
        """
        deploy:
          placement:
            constraints:
              - node.labels.zone == a
              - node.labels.disk!=hdd
              - node.hostname==h1
              - node.id==abc123
            max_replicas_per_node: 1
        """
    )

    assert spec["placement"] == {
        "constraints": ["zone==a", "disk!=hdd", "host.name==h1", "host.id==abc123"],
        "max_per_host": 1,
    }


@pytest.mark.parametrize("constraint", ["node.role==manager", "engine.labels.os==linux"])
def test_unsupported_placement_constraints(constraint: str) -> None:
    errors = _service_errors(
        f"deploy:\n  placement:\n    constraints:\n      - node.labels.a==b\n      - {constraint}\n"
    )

    assert [error["loc"] for error in errors] == [
        "compose.services.web.deploy.placement.constraints[1]"
    ]
    assert "not supported by Berth" in errors[0]["msg"]


def test_secrets_short_and_long() -> None:
    project = _parse(
        """
        services:
          web:
            image: web
            secrets:
              - db_password
              - source: tls_key
                target: /etc/ssl/key.pem
                uid: "101"
                gid: "102"
                mode: 0440
              - source: api_token
                mode: "0o400"
        secrets:
          db_password:
            external: true
          tls_key:
            name: shop-tls-key
            external: true
          api_token:
            name: shop-api-token
        """
    )

    assert project.services[0].spec["secrets"] == [
        {"name": "db_password"},
        {"name": "shop-tls-key", "target": "/etc/ssl/key.pem", "uid": 101, "gid": 102, "mode": 288},
        {"name": "shop-api-token", "mode": 0o400},
    ]
    assert project.secrets == ["db_password", "shop-tls-key", "shop-api-token"]


@pytest.mark.parametrize("source", ["file: ./password.txt", "environment: DB_PASSWORD"])
def test_secret_sources_outside_berth_are_refused(source: str) -> None:
    errors = _errors(
        f"services:\n  web:\n    image: web\n    secrets: [pw]\nsecrets:\n  pw:\n    {source}\n"
    )

    key = source.split(":")[0]
    assert errors == [
        {
            "loc": f"compose.secrets.pw.{key}",
            "msg": "Berth keeps secrets in its own store: create it with POST /api/v1/secrets "
            "and declare it `external: true`",
        }
    ]


def test_undeclared_secret() -> None:
    errors = _service_errors("secrets:\n  - source: pw\n")

    assert errors == [
        {
            "loc": "compose.services.web.secrets[0]",
            "msg": "secret 'pw' is not declared in the top-level `secrets`",
        }
    ]


def test_errors_are_collected_across_services() -> None:
    errors = _errors(
        """
        services:
          web:
            image: web
            runtime: runsc
            volumes: ["./src:/src"]
          cache:
            image: redis
            volumes: ["/data:/data", "cache:/cache"]
            privileged: true
        """
    )

    assert [error["loc"] for error in errors] == [
        "compose.services.web.runtime",
        "compose.services.web.volumes[0]",
        "compose.services.cache.privileged",
        "compose.services.cache.volumes[1]",
    ]


def test_expose_is_mapped() -> None:
    assert _service_spec("expose: ['3000', 8080]\n")["expose"] == ["3000", "8080"]


@pytest.mark.parametrize("text", ["version: '3'\n", "services: {}\n"])
def test_a_compose_file_needs_a_service(text: str) -> None:
    assert _errors(text) == [
        {"loc": "compose", "msg": "a Compose file needs at least one service under `services`"}
    ]
