"""Releases without an engine: masking, the recorded digest, the diff of two releases and the
plan a rollback deploys."""

from __future__ import annotations

from typing import Any

from app.images.reference import parse_reference, recorded_digest
from app.services.diff import changes
from app.stacks.models import StackRelease
from app.stacks.releases import MASK, diff, digests, masked, rollback_plan

SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64


def _release(
    number: int, compose: str, services: list[dict[str, Any]], **rest: Any
) -> StackRelease:
    plan = {"services": services, **rest}
    return StackRelease(
        release=number,
        compose=compose,
        variables={},
        plan=plan,
        digests=digests(plan),
    )


def _item(name: str, image: str, digest: str | None, **spec: Any) -> dict[str, Any]:
    return {
        "compose_name": name,
        "name": f"s-{name}",
        "spec": {"image": image, **spec},
        "digest": digest,
    }


def test_secret_bearing_variables_are_masked_in_any_case() -> None:
    shown = masked(
        {
            "WEB_PORT": "8080",
            "DB_PASSWORD": "hunter2",
            "api_token": "t",
            "AWS_SECRET_ACCESS_KEY": "k",
            "SSH_PRIVATE": "p",
            "BASIC_AUTH": "u:p",
            "LOG_LEVEL": "debug",
        }
    )
    assert shown == {
        "WEB_PORT": "8080",
        "DB_PASSWORD": MASK,
        "api_token": MASK,
        "AWS_SECRET_ACCESS_KEY": MASK,
        "SSH_PRIVATE": MASK,
        "BASIC_AUTH": MASK,
        "LOG_LEVEL": "debug",
    }


def test_recorded_digest_is_the_repository_digest_of_the_pulled_name() -> None:
    ref = parse_reference("10.0.0.1:5000/team/app:1")
    details = {
        "Id": SHA_B,
        "RepoDigests": [f"10.0.0.1:5000/other/app@{SHA_B}", f"10.0.0.1:5000/team/app@{SHA_A}"],
    }
    assert recorded_digest(ref, details) == f"10.0.0.1:5000/team/app@{SHA_A}"


def test_a_docker_hub_name_matches_its_short_repository_digest() -> None:
    assert recorded_digest(parse_reference("busybox"), {"RepoDigests": [f"busybox@{SHA_A}"]}) == (
        f"busybox@{SHA_A}"
    )


def test_an_image_berth_built_is_recorded_by_its_id() -> None:
    ref = parse_reference("berth.local/shop/web:0123456789abcdef")
    assert recorded_digest(ref, {"Id": SHA_B, "RepoDigests": []}) == SHA_B


def test_an_image_no_registry_has_records_nothing() -> None:
    assert recorded_digest(parse_reference("busybox"), {"Id": SHA_B, "RepoDigests": []}) is None


def test_changes_compare_mappings_key_by_key_and_the_rest_whole() -> None:
    found = changes(
        {"image": "a", "env": {"A": "1", "B": "2"}, "ports": [80]},
        {"image": "a", "env": {"A": "1", "C": "3"}, "ports": [80, 443]},
    )
    assert [(c.field, c.before, c.after) for c in found] == [
        ("env.B", "2", None),
        ("env.C", None, "3"),
        ("ports", [80], [80, 443]),
    ]


def test_diff_shows_file_variables_digests_and_spec_fields() -> None:
    old = _release(
        1,
        "services:\n  web:\n    image: app:1\n",
        [_item("web", "app:1", SHA_A), _item("cache", "redis", None), _item("gone", "x", None)],
    )
    old.variables = {"PORT": "80", "DB_PASSWORD": MASK}
    new = _release(
        2,
        "services:\n  web:\n    image: app:1\n    env: {A: b}\n",
        [
            _item("web", "app:1", SHA_B, env={"A": "b"}),
            _item("cache", "redis", None),
            _item("new", "y", None),
        ],
    )
    new.variables = {"PORT": "81", "DB_PASSWORD": MASK}
    result = diff(old, new)
    assert (result.before, result.after) == (1, 2)
    assert "+    env: {A: b}" in result.compose
    assert [(c.field, c.before, c.after) for c in result.variables] == [("PORT", "80", "81")]
    by_name = {s.compose_name: s for s in result.services}
    assert set(by_name) == {"web", "gone", "new"}  # cache: unchanged, so not listed
    assert (by_name["web"].change, by_name["web"].digest_before, by_name["web"].digest_after) == (
        "changed",
        SHA_A,
        SHA_B,
    )
    assert [f.field for f in by_name["web"].fields] == ["env"]
    assert by_name["gone"].change == "removed"
    assert by_name["new"].change == "added"


def test_a_changed_digest_alone_is_a_change() -> None:
    old = _release(1, "f", [_item("web", "app:1", SHA_A)])
    new = _release(2, "f", [_item("web", "app:1", SHA_B)])
    (web,) = diff(old, new).services
    assert web.fields == [] and web.digest_after == SHA_B
    assert diff(old, old).services == [] and diff(old, old).compose == ""


def test_rollback_plan_keeps_digests_drops_build_operations_and_keeps_every_generations_own() -> (
    None
):
    built = _item("web", "berth.local/s/web:1", SHA_A)
    built["build"] = {"operation_id": "op1", "context": "."}
    past = _release(1, "f", [built], stored_secrets=["s1"], content_volumes=["v1"])
    plan = rollback_plan({"stored_secrets": ["s2"], "content_volumes": ["v2", "v1"]}, past)
    (item,) = plan["services"]
    assert item["digest"] == SHA_A
    assert item["build"] == {"context": "."}  # built then, not again
    assert plan["stored_secrets"] == ["s2", "s1"]
    assert plan["content_volumes"] == ["v2", "v1"]
    assert past.plan["services"][0]["build"]["operation_id"] == "op1"  # the release is untouched
