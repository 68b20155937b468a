"""Bodies written as the contract and Compose write them are taken as they are, on a real
engine: a secret named alone, and a service replaced with the body that created it."""

from __future__ import annotations

from tests.support import Api, Services

VALUE = "short-form-secret-value-3c9a"


def test_a_secret_named_alone_is_a_file_under_run_secrets(services: Services, api: Api) -> None:
    assert api.post("/secrets", json={"name": "db_password", "value": VALUE}).status_code == 201
    body = services.create(replicas=1, secrets=["db_password"])
    svc = services.settled(body["service"]["id"], 1)

    # Stored as the object form with its defaults: the same spec as `{"name": "db_password"}`.
    [reference] = svc["spec"]["secrets"]
    assert reference == {
        "name": "db_password",
        "target": None,
        "env": None,
        "uid": 0,
        "gid": 0,
        "mode": 0o444,
    }
    [task] = [t for t in svc["tasks"] if t["desired_state"] == "running"]
    docker_id = api.get(f"/containers/{task['container_id']}").json()["docker_id"]
    host = next(name for name, hid in services.hosts.items() if hid == task["host_id"])
    container = services.engines[host].containers.get(docker_id)
    result = container.exec_run(["cat", "/run/secrets/db_password"])
    assert (result.exit_code, result.output) == (0, VALUE.encode())

    # A bare name is still a name: one that breaks the pattern is refused, naming the item.
    refused = api.post(
        "/services", json={"name": "bad-secret", "spec": {"image": "x", "secrets": ["../x"]}}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"].startswith("body.spec.secrets.0")


def test_put_takes_the_body_post_took_and_refuses_a_new_name(services: Services, api: Api) -> None:
    body = services.create(replicas=1, env={"STAGE": "one"})
    service = body["service"]
    services.settled(service["id"], 1)
    spec = {**service["spec"], "env": {"STAGE": "two"}}

    renamed = api.request(
        "PUT", f"/services/{service['id']}", json={"name": "another-name", "spec": spec}
    )
    assert renamed.status_code == 422, renamed.text
    assert [e["loc"] for e in renamed.json()["errors"]] == ["body.name"]
    assert services.get(service["id"])["revision"] == 1  # nothing changed

    replaced = api.request(
        "PUT", f"/services/{service['id']}", json={"name": service["name"], "spec": spec}
    )
    assert replaced.status_code == 202, replaced.text
    answered = replaced.json()["service"]
    assert (answered["revision"], answered["spec"]["env"]) == (2, {"STAGE": "two"})
    revisions = api.get(f"/services/{service['id']}/revisions").json()["items"]
    assert [(r["revision"], r["spec"]["env"]) for r in revisions] == [
        (1, {"STAGE": "one"}),
        (2, {"STAGE": "two"}),
    ]
    # How the rollout goes is the reconciler's (tests/services); here it only has to end.
    api.wait_operation(replaced.json()["operation"]["id"], timeout=90)
