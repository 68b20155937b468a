"""The Compose keys real files use: each mapped onto the service spec, or refused by name.
Pure: parsing, the spec's validation, its engine body and the container policy; no engine."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

from app.containers.engine_config import create_body
from app.containers.policy import check_container
from app.containers.schemas import ContainerSpec, RuntimeOptions
from app.core.config import Settings
from app.core.errors import PolicyViolation
from app.services.schemas import ServiceSpec
from app.services.service import container_spec
from app.stacks.compose import BuildSpec, ComposeError, ComposeProject, parse


def _project(text: str, profiles: tuple[str, ...] = ()) -> ComposeProject:
    return parse(
        textwrap.dedent(text), project="shop", variables={}, env_files={}, profiles=profiles
    )


def _errors(text: str, profiles: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with pytest.raises(ComposeError) as caught:
        _project(text, profiles)
    return caught.value.errors


def _web(service_yaml: str) -> str:
    return "services:\n  web:\n    image: nginx\n" + textwrap.indent(
        textwrap.dedent(service_yaml), "    "
    )


def _spec(service_yaml: str) -> dict[str, Any]:
    return _project(_web(service_yaml)).services[0].spec


def test_runtime_keys_map_onto_the_spec() -> None:
    spec = _spec(
        """
        container_name: shop-web
        hostname: web
        domainname: example.org
        stop_signal: SIGQUIT
        stop_grace_period: 1m30s
        stdin_open: true
        tty: true
        working_dir: /app
        init: true
        platform: linux/amd64
        extra_hosts: ["db.local:10.0.0.5", "cache.local=10.0.0.6"]
        dns: 1.1.1.1
        dns_search: [example.org]
        ulimits:
          nproc: 512
          nofile: {soft: 1024, hard: 4096}
        tmpfs: /run
        shm_size: 64m
        read_only: true
        logging:
          driver: json-file
          options: {max-size: 10m, max-file: 3}
        cap_add: [NET_BIND_SERVICE]
        cap_drop: [ALL]
        security_opt: ["no-new-privileges:true"]
        sysctls: {net.core.somaxconn: 1024}
        pull_policy: always
        expose: ["3000", 8080]
        """
    )

    assert {key: value for key, value in spec.items() if key not in ("networks", "aliases")} == {
        "image": "nginx",
        "container_name": "shop-web",
        "hostname": "web",
        "domainname": "example.org",
        "stop_signal": "SIGQUIT",
        "stop_grace_period_s": 90.0,
        "stdin_open": True,
        "tty": True,
        "working_dir": "/app",
        "init": True,
        "platform": "linux/amd64",
        "extra_hosts": ["db.local:10.0.0.5", "cache.local:10.0.0.6"],
        "dns": ["1.1.1.1"],
        "dns_search": ["example.org"],
        "ulimits": {"nproc": {"soft": 512, "hard": 512}, "nofile": {"soft": 1024, "hard": 4096}},
        "tmpfs": ["/run"],
        "shm_size_bytes": 64 * 2**20,
        "read_only": True,
        "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}},
        "cap_add": ["NET_BIND_SERVICE"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "sysctls": {"net.core.somaxconn": "1024"},
        "pull_policy": "always",
        "expose": ["3000", "8080"],
    }
    # Every key is one the service spec takes as it is.
    service = ServiceSpec.model_validate(spec)
    assert service.update_config.order == "stop-first"  # a named container goes first


def test_extra_hosts_as_a_mapping() -> None:
    spec = _spec("extra_hosts:\n  db.local: 10.0.0.5\n  both: [10.0.0.7, '::1']\n")

    assert spec["extra_hosts"] == ["db.local:10.0.0.5", "both:10.0.0.7", "both:::1"]


@pytest.mark.parametrize(
    ("compose", "berth"),
    [
        ("always", "always"),
        ("missing", "missing"),
        ("if_not_present", "missing"),
        ("never", "never"),
    ],
)
def test_pull_policies(compose: str, berth: str) -> None:
    assert _spec(f"pull_policy: {compose}\n")["pull_policy"] == berth


def test_build_target_args_labels_cache_from() -> None:
    project = _project(
        """
        services:
          web:
            build:
              context: .
              target: prod
              args: {VERSION: "2"}
              labels: {org.example.team: shop}
              cache_from: [registry.example.org/shop/web:cache]
        """
    )

    build = project.services[0].build
    assert build == BuildSpec(
        context=".",
        dockerfile="Dockerfile",
        args={"VERSION": "2"},
        target="prod",
        labels={"org.example.team": "shop"},
        cache_from=("registry.example.org/shop/web:cache",),
    )
    assert build.options() == {
        "target": "prod",
        "labels": {"org.example.team": "shop"},
        "cache_from": ["registry.example.org/shop/web:cache"],
    }


def test_a_build_without_new_options_has_none() -> None:
    """So the tag of an image built before these options existed does not change."""
    build = _project("services:\n  web:\n    build: .\n").services[0].build

    assert build is not None and build.options() == {}


def test_build_labels_of_berth_are_refused() -> None:
    errors = _errors(
        "services:\n  web:\n    build:\n      context: .\n      labels: {berth.x: y}\n"
    )

    assert [error["loc"] for error in errors] == ["compose.services.web.build.labels.berth.x"]


def test_container_name_needs_a_single_replica() -> None:
    errors = _errors(_web("container_name: web\ndeploy:\n  replicas: 2\n"))

    assert errors == [
        {
            "loc": "compose.services.web.container_name",
            "msg": "container_name names one container: it needs a single replica",
        }
    ]


def test_container_name_on_the_service_spec() -> None:
    with pytest.raises(ValidationError, match="replicas must be 0 or 1"):
        ServiceSpec(image="nginx", container_name="web", replicas=2)
    with pytest.raises(ValidationError, match=r"update_config\.order stop-first"):
        ServiceSpec.model_validate(
            {"image": "nginx", "container_name": "web", "update_config": {"order": "start-first"}}
        )
    with pytest.raises(ValidationError, match=r"rollback_config\.order stop-first"):
        ServiceSpec.model_validate(
            {"image": "nginx", "container_name": "web", "rollback_config": {"order": "start-first"}}
        )
    named = ServiceSpec.model_validate(
        {"image": "nginx", "container_name": "web", "rollback_config": {"parallelism": 1}}
    )
    assert named.rollback_config is not None and named.rollback_config.order == "stop-first"


def test_anonymous_volumes() -> None:
    spec = _spec("volumes:\n  - /data\n  - type: volume\n    target: /cache\n")

    assert spec["anonymous_volumes"] == ["/data", "/cache"]
    assert spec["volumes"] == []


def test_an_anonymous_volume_needs_an_absolute_path() -> None:
    errors = _errors(_web("volumes:\n  - data\n"))

    assert errors == [
        {"loc": "compose.services.web.volumes[0]", "msg": "the container path must be absolute"}
    ]


def test_healthcheck_start_period() -> None:
    spec = _spec("healthcheck:\n  test: ['CMD', 'true']\n  start_period: 40s\n")

    assert spec["healthcheck"]["start_period_s"] == 40.0


def test_deploy_reservations_and_rollback_config() -> None:
    spec = _spec(
        """
        deploy:
          resources:
            limits: {cpus: "1", memory: 512m}
            reservations: {cpus: "0.25", memory: 128m}
          rollback_config:
            parallelism: 2
            delay: 5s
        """
    )

    assert spec["resources"] == {
        "cpus": 1.0,
        "memory_bytes": 512 * 2**20,
        "reservations": {"cpus": 0.25, "memory_bytes": 128 * 2**20},
    }
    # Compose's default order, stop-first, unless the file says otherwise.
    assert spec["rollback_config"] == {"order": "stop-first", "parallelism": 2, "delay_s": 5.0}
    ServiceSpec.model_validate(spec)


# A web that waits for its init service `migrate` to complete.
_WITH_INIT = """
services:
  web:
    image: nginx
    depends_on:
      migrate: {condition: service_completed_successfully}
  migrate:
    image: busybox
"""


def test_an_init_service_runs_once() -> None:
    project = _project(
        _WITH_INIT
        + "  seed:\n    image: busybox\n    restart: on-failure\n"
        + "  api:\n    image: nginx\n"
        + "    depends_on:\n      seed: {condition: service_completed_successfully}\n"
    )

    by_name = {service.name: service for service in project.services}
    assert [service.name for service in project.services] == ["migrate", "web", "seed", "api"]
    assert by_name["web"].depends_on == {"migrate": "service_completed_successfully"}
    # Compose does not restart a service unless it says so; Berth's own default is `any`.
    assert (by_name["migrate"].spec["one_shot"], by_name["migrate"].spec["restart_policy"]) == (
        True,
        "none",
    )
    assert by_name["seed"].spec["restart_policy"] == "on-failure"
    assert "one_shot" not in by_name["web"].spec
    ServiceSpec.model_validate(by_name["migrate"].spec)


def test_an_init_service_cannot_restart_always() -> None:
    errors = _errors(_WITH_INIT + "    restart: always\n")

    assert [error["loc"] for error in errors] == ["compose.services.migrate.restart"]
    with pytest.raises(ValidationError, match="one_shot"):
        ServiceSpec(image="busybox", one_shot=True)


_PROFILED = """
services:
  web:
    image: nginx
  debug:
    image: busybox
    profiles: [debug]
  tools:
    image: busybox
    profiles: [tools, debug]
"""


@pytest.mark.parametrize(
    ("profiles", "services"),
    [((), ["web"]), (("debug",), ["web", "debug", "tools"]), (("tools",), ["web", "tools"])],
)
def test_profiles_choose_services(profiles: tuple[str, ...], services: list[str]) -> None:
    assert [service.name for service in _project(_PROFILED, profiles).services] == services


def test_plain_parse_chooses_no_profile() -> None:
    project = parse(_PROFILED, project="shop", variables={}, env_files={})

    assert [service.name for service in project.services] == ["web"]


def test_a_dependency_in_a_left_out_profile() -> None:
    errors = _errors(
        "services:\n  web:\n    image: nginx\n    depends_on: [debug]\n"
        "  debug:\n    image: busybox\n    profiles: [debug]\n"
    )

    assert errors == [
        {
            "loc": "compose.services.web.depends_on[0]",
            "msg": "service 'debug' is in a profile that was not chosen",
        }
    ]


@pytest.mark.parametrize(
    ("service_yaml", "loc"),
    [
        ("runtime: nvidia\n", "compose.services.web.runtime"),
        ("privileged: true\n", "compose.services.web.privileged"),
        ("pid: host\n", "compose.services.web.pid"),
        ("ipc: host\n", "compose.services.web.ipc"),
        ("userns_mode: host\n", "compose.services.web.userns_mode"),
        ("cgroup_parent: /x\n", "compose.services.web.cgroup_parent"),
        ("devices: [/dev/kvm]\n", "compose.services.web.devices"),
    ],
)
def test_keys_that_give_the_host_are_refused_by_name(service_yaml: str, loc: str) -> None:
    errors = _errors(_web(service_yaml))

    assert [error["loc"] for error in errors] == [loc]
    assert "host" in errors[0]["msg"]


def test_an_unknown_pull_policy_is_refused() -> None:
    errors = _errors(_web("pull_policy: daily\n"))

    assert [error["loc"] for error in errors] == ["compose.services.web.pull_policy"]


# --- The policy ---------------------------------------------------------------------------------


def _refusals(settings: Settings, **spec: Any) -> list[dict[str, str]]:
    with pytest.raises(PolicyViolation) as caught:
        check_container(ContainerSpec(image="nginx", **spec), settings)
    return list(caught.value.errors or [])


@pytest.mark.parametrize("capability", ["SYS_ADMIN", "NET_ADMIN", "ALL", "CAP_SYS_ADMIN"])
def test_cap_add_of_host_capabilities_is_refused(settings: Settings, capability: str) -> None:
    [refusal] = _refusals(settings, cap_add=[capability])

    assert refusal["loc"] == "body.cap_add"
    assert "BERTH_ALLOWED_CAPABILITIES" in refusal["msg"]


@pytest.mark.parametrize(
    "option",
    [
        "seccomp=unconfined",
        "seccomp:unconfined",
        'seccomp={"defaultAction": "SCMP_ACT_ALLOW"}',
        "apparmor=unconfined",
        "apparmor:unconfined",
        "label=disable",
        "systempaths=unconfined",
    ],
)
def test_unconfined_security_options_are_refused(settings: Settings, option: str) -> None:
    [refusal] = _refusals(settings, security_opt=["no-new-privileges:true", option])

    assert refusal["loc"] == "body.security_opt[1]"
    assert "BERTH_ALLOW_PRIVILEGED" in refusal["msg"]


@pytest.mark.parametrize(
    "name", ["kernel.core_pattern", "vm.overcommit_memory", "kernel.panic", "fs.file-max"]
)
def test_host_sysctls_are_refused_by_name(settings: Settings, name: str) -> None:
    [refusal] = _refusals(settings, sysctls={name: "1"})

    assert refusal["loc"] == f"body.sysctls.{name}"
    assert name in refusal["msg"] and "BERTH_ALLOW_PRIVILEGED" in refusal["msg"]


def test_net_sysctls_with_the_host_network_are_the_hosts(settings_factory: Any) -> None:
    settings = settings_factory(allow_host_namespaces=True)

    [refusal] = _refusals(settings, network_mode="host", sysctls={"net.ipv4.ip_forward": "1"})

    assert refusal["loc"] == "body.sysctls.net.ipv4.ip_forward"


def test_namespaced_options_pass_the_policy(settings: Settings) -> None:
    check_container(
        ContainerSpec(
            image="nginx",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true", "apparmor=docker-default", "seccomp=builtin"],
            sysctls={
                "net.core.somaxconn": "1024",
                "kernel.shmmax": "1",
                "kernel.msgmax": "1",
                "kernel.sem": "1 1 1 1",
                "fs.mqueue.msg_max": "10",
            },
        ),
        settings,
    )


def test_an_admin_can_allow_them(settings_factory: Any) -> None:
    settings = settings_factory(allow_privileged=True, allowed_capabilities="SYS_ADMIN")

    check_container(
        ContainerSpec(
            image="nginx",
            cap_add=["SYS_ADMIN"],
            security_opt=["seccomp=unconfined"],
            sysctls={"kernel.panic": "1"},
        ),
        settings,
    )


def test_the_policy_checks_a_service_replica(settings: Settings) -> None:
    replica = container_spec(ServiceSpec(image="nginx", security_opt=["apparmor=unconfined"]))

    with pytest.raises(PolicyViolation):
        check_container(replica, settings)


# --- The spec and its engine body ---------------------------------------------------------------


def test_options_enter_a_stored_spec_only_when_set() -> None:
    """An existing service's stored spec, read and written again, is unchanged: so its
    revision does not roll, and a stored dict compares equal."""
    stored = ServiceSpec(image="nginx").model_dump(mode="json")

    assert not set(stored) & {"hostname", "cap_add", "container_name", "rollback_config"}
    assert "reservations" not in stored["resources"]
    assert ServiceSpec.model_validate(stored).model_dump(mode="json") == stored
    assert ServiceSpec(image="nginx", tty=True).model_dump(mode="json")["tty"] is True


def test_every_runtime_option_is_stored_only_when_set() -> None:
    assert set(RuntimeOptions.model_fields) == RuntimeOptions._SET_ONLY


def test_a_replica_carries_the_service_options() -> None:
    service = ServiceSpec(
        image="nginx", hostname="web", tmpfs=["/run"], anonymous_volumes=["/data"], init=True
    )

    replica = container_spec(service)

    assert (replica.hostname, replica.tmpfs, replica.anonymous_volumes, replica.init) == (
        "web",
        ["/run"],
        ["/data"],
        True,
    )


def test_the_engine_body_of_the_options() -> None:
    spec = ContainerSpec.model_validate(
        {
            "image": "nginx",
            "hostname": "web",
            "domainname": "example.org",
            "stop_signal": "SIGQUIT",
            "stop_grace_period_s": 2.5,
            "stdin_open": True,
            "tty": True,
            "working_dir": "/app",
            "init": True,
            "extra_hosts": ["db.local:10.0.0.5"],
            "dns": ["1.1.1.1"],
            "dns_search": ["example.org"],
            "ulimits": {"nofile": {"soft": 1024, "hard": 4096}},
            "tmpfs": ["/run:size=64m", "/tmp"],
            "shm_size_bytes": 2**26,
            "read_only": True,
            "logging": {"driver": "json-file", "options": {"max-size": "10m"}},
            "cap_drop": ["NET_RAW"],
            "security_opt": ["no-new-privileges:true"],
            "sysctls": {"net.core.somaxconn": "1024"},
            "expose": ["3000", "9000-9001/udp"],
            "anonymous_volumes": ["/data"],
            "resources": {"memory_bytes": 2**28, "reservations": {"memory_bytes": 2**27}},
        }
    )

    body = create_body(spec, labels={}, image="nginx")
    host = body["HostConfig"]

    assert {key: body[key] for key in ("Hostname", "Domainname", "StopSignal", "WorkingDir")} == {
        "Hostname": "web",
        "Domainname": "example.org",
        "StopSignal": "SIGQUIT",
        "WorkingDir": "/app",
    }
    assert (body["StopTimeout"], body["OpenStdin"], body["Tty"]) == (3, True, True)
    assert set(body["ExposedPorts"]) == {"3000/tcp", "9000/udp", "9001/udp"}
    assert host["Init"] is True and host["ReadonlyRootfs"] is True
    assert host["ExtraHosts"] == ["db.local:10.0.0.5"]
    assert (host["Dns"], host["DnsSearch"]) == (["1.1.1.1"], ["example.org"])
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 4096}]
    assert host["Tmpfs"] == {"/run": "size=64m", "/tmp": ""}
    assert host["ShmSize"] == 2**26
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m"}}
    assert (host["CapDrop"], host["SecurityOpt"]) == (["NET_RAW"], ["no-new-privileges:true"])
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["MemoryReservation"] == 2**27
    assert host["Mounts"] == [
        {
            "Type": "volume",
            "Target": "/data",
            "VolumeOptions": {"Labels": {"berth.managed": "true"}},
        }
    ]


def test_an_unset_option_leaves_the_engine_default() -> None:
    body = create_body(ContainerSpec(image="nginx"), labels={}, image="nginx")

    assert not set(body) & {"Hostname", "StopSignal", "StopTimeout", "Tty", "OpenStdin"}
    assert not set(body["HostConfig"]) & {"Init", "ReadonlyRootfs", "Tmpfs", "Ulimits", "LogConfig"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("extra_hosts", ["no-address"]),
        ("tmpfs", ["relative"]),
        ("tmpfs", ["/"]),
        ("expose", ["70000"]),
        ("expose", ["1-2000"]),
        ("ulimits", {"nofile": {"soft": 10, "hard": 5}}),
        ("cap_drop", ["not a cap"]),
        ("working_dir", "relative"),
        ("platform", "amd64"),
        ("anonymous_volumes", ["data"]),
    ],
)
def test_invalid_options(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        ContainerSpec.model_validate({"image": "nginx", field: value})


def test_an_anonymous_volume_and_a_mount_on_one_path() -> None:
    with pytest.raises(ValidationError, match="same target"):
        ContainerSpec.model_validate(
            {
                "image": "nginx",
                "volumes": [{"source": "data", "target": "/data"}],
                "anonymous_volumes": ["/data"],
            }
        )
