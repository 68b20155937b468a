"""What the schema fuzzer (scripts/fuzz.sh) found, kept as plain tests: input that broke a
rule was answered 500 instead of 422."""

from __future__ import annotations

from app.core.errors import PROBLEM_JSON
from tests.support import Api

SPEC = {"image": "busybox", "user": "\u001c\u00aa"}


def test_a_service_user_that_a_replica_refuses_is_a_422(api: Api) -> None:
    # The service's spec took any user; its replicas' spec refused it with a bare error.
    created = api.post("/services", json={"name": "web", "spec": {"image": "busybox"}})
    assert created.status_code == 202, created.text
    service_id = created.json()["service"]["id"]
    for response in (
        api.post("/services", json={"name": "web2", "spec": SPEC}),
        api.post(f"/services/{service_id}/plan", json={"spec": SPEC}),
    ):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.json()["errors"][0]["loc"] == "body.user"


def test_a_compose_file_with_unprintable_characters_is_a_422(api: Api) -> None:
    # YAML's reader refuses them as the loader is made, before the parse that was guarded.
    response = api.post("/stacks", json={"name": "s", "compose": "\u00ac\u008f(services: {}"})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == "compose"
    assert "invalid YAML" in response.json()["detail"]
